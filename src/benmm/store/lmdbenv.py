"""One read-only LMDB handle per file and process, safe across ``fork``.

py-lmdb refuses a second handle on an environment's files in one process ("already open in this
process"; it keys open environments by the files' device and inode), and a handle inherited through
``fork`` must not be used. Every benmm reader of an LMDB folder (:class:`benmm.store.reader.Store`,
:class:`benmm.archive.v2.V2Archive`, the datasets through the store) goes through :func:`shared_env`:
opened lazily, read-only, ``lock=False`` (no lock file: read-only media and many processes are fine),
``readahead=False`` (random access); a store deleted and written again at the same path gets a fresh
handle.

Fork: py-lmdb's record of open files is inherited by a forked child, and an inherited handle that is
not closed keeps its files "open" there forever (py-lmdb's finalizer skips handles of another
process). The inherited handles are therefore closed in the child **at fork time**
(``os.register_at_fork``), before any code in the child can open an LMDB: a DataLoader worker, an
encode worker opening a writer on the same files, or a V2Archive reader. Closing them only unmaps the
child's copy of the memory map and invalidates the child's copies of transactions (e.g. one still
referenced from a held exception traceback); the parent's handles are untouched. A pid check stays as a
second line for processes created by other means.
"""

from __future__ import annotations

import contextlib
import os
import threading

import lmdb

from benmm.errors import StoreError

_ENVS: dict[str, tuple[tuple[int, int], lmdb.Environment]] = {}  # path -> (data.mdb identity, env)
_ENVS_PID = os.getpid()


_LOCK = threading.RLock()


def shared_env(path: str | os.PathLike[str]) -> lmdb.Environment:
    """This process's read-only environment of ``path`` (py-lmdb allows one per file and process).

    Opened lazily and cached per process; a forked child never sees its parent's handles (closed at
    fork, see the module docstring); a store deleted and written again at the same path gets a fresh
    handle. Raises :class:`StoreError` when the folder is not a readable LMDB.
    """
    with _LOCK:  # threads of one process (a service, parallel shards) share the one handle
        return _shared_env(path)


def _shared_env(path: str | os.PathLike[str]) -> lmdb.Environment:
    _check_pid()
    key = os.path.realpath(path)
    try:
        st = os.stat(os.path.join(key, "data.mdb"))
        ident = (st.st_dev, st.st_ino)
    except OSError:
        ident = (0, 0)
    cached = _ENVS.get(key)
    if cached is not None and cached[0] == ident:
        return cached[1]
    if cached is not None:
        close_env(key)
    try:
        env = lmdb.open(key, readonly=True, lock=False, readahead=False, subdir=True, max_dbs=0)
    except lmdb.Error as exc:
        raise StoreError(f"{path}: cannot open the LMDB ({exc}); if another handle on these files is "
                         "open in this process (e.g. a writer), close it first") from None
    # a truncated data.mdb (an incomplete copy or download) maps pages past the end of the file:
    # touching them is a SIGBUS that kills the process, so refuse it here, for every reader
    try:
        need = (env.info()["last_pgno"] + 1) * env.stat()["psize"]
    except lmdb.Error as exc:
        env.close()
        raise StoreError(f"{path}: not a readable LMDB ({exc})") from None
    have = os.stat(os.path.join(key, "data.mdb")).st_size
    if have < need:
        env.close()
        raise StoreError(f"{path}/data.mdb is {have} bytes, its pages need {need}: the file is "
                         "truncated (incomplete copy or download?); copy or download it again")
    _ENVS[key] = (ident, env)
    return env


def close_env(path: str | os.PathLike[str]) -> None:
    """Close this process's handle of ``path`` if it has one (the next :func:`shared_env` reopens)."""
    _check_pid()
    cached = _ENVS.pop(os.path.realpath(path), None)
    if cached is not None:
        with contextlib.suppress(lmdb.Error):  # already closed
            cached[1].close()


def _drop_inherited() -> None:
    """Close every handle this process inherited from its parent (runs in the child right after fork).

    py-lmdb refuses a second handle on files it believes open, and the parent's handles (read-only,
    ``lock=False``: no lock table to disturb) must not be used here; closing them only unmaps the
    child's copy of the memory map.
    """
    global _ENVS_PID
    handles = [env for _, env in _ENVS.values()]
    _ENVS.clear()
    _ENVS_PID = os.getpid()
    for env in handles:
        with contextlib.suppress(lmdb.Error):  # already closed
            env.close()


def _check_pid() -> None:
    if os.getpid() != _ENVS_PID:  # a child not created by os.fork (no at-fork hook ran)
        _drop_inherited()


if hasattr(os, "register_at_fork"):  # POSIX
    os.register_at_fork(after_in_child=_drop_inherited)


def open_envs() -> dict[str, lmdb.Environment]:
    """This process's open handles by resolved path (for tests and diagnostics)."""
    _check_pid()
    return {key: env for key, (_, env) in _ENVS.items()}


__all__ = ["close_env", "open_envs", "shared_env"]
