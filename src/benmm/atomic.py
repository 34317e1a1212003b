"""Atomic file writes: a reader (or a rerun after a kill or a full disk) sees the old file or the whole
new one, never a truncated one.

Every writer of a file that something later trusts (store metadata and manifest, reports, caches,
embeddings, checkpoints' exports, statistics) goes through here: write a temporary file beside the
target (``.<name>.tmp-<pid>``), flush and fsync it, rename it over the target, fsync the folder. On any
error the temporary file is removed and the target is untouched. The standard library has the pieces
(``os.replace`` is atomic on POSIX) but no helper that does all of them.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

TMP_MARK = ".tmp-"


def temp_path(path: str | os.PathLike[str]) -> Path:
    """The temporary name :func:`atomic_path` uses for ``path`` (hidden, beside it, per process)."""
    p = Path(path)
    return p.with_name(f".{p.name}{TMP_MARK}{os.getpid()}")


def fsync_dir(path: str | os.PathLike[str]) -> None:
    """Make a rename inside ``path`` durable (best effort where the file system refuses)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str], fsync: bool = True) -> Iterator[Path]:
    """Yield a temporary path to write to (for libraries that take a path); it replaces ``path`` when the
    block ends without an exception, and is removed otherwise."""
    target = Path(path)
    tmp = temp_path(target)
    try:
        yield tmp
        if fsync:
            with open(tmp, "rb+") as fh:
                os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if fsync:
        fsync_dir(target.parent)


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike[str], mode: str = "w", **kwargs: Any) -> Iterator[IO[Any]]:
    """``open`` for writing whose result appears at ``path`` only once the block succeeds."""
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_open writes a whole file: mode 'w' or 'wb', not {mode!r}")
    if mode == "w":
        kwargs.setdefault("encoding", "utf-8")
    with atomic_path(path) as tmp, open(tmp, mode, **kwargs) as fh:
        yield fh
        fh.flush()


def atomic_write(path: str | os.PathLike[str], data: bytes | str) -> None:
    """Write ``data`` (text is UTF-8) to ``path`` atomically."""
    raw = data.encode("utf-8") if isinstance(data, str) else data
    with atomic_open(path, "wb") as fh:
        fh.write(raw)
