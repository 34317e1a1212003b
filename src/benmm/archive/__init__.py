"""Readers for every BigEarthNet source: v1 folders, reBEN (LMDB or GeoTIFF folders), benmm stores.

``open_archive(path)`` looks at what ``path`` holds and returns the matching reader. Heavy modules
(pandas, lmdb, tifffile) load only when a reader needs them.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from benmm.archive.base import Archive, Pair, Problem, UnknownPatchError
from benmm.errors import ArchiveError

__all__ = ["Archive", "Pair", "Problem", "UnknownPatchError", "archive_kind", "open_archive"]

STORE_MANIFEST = "benmm-store.json"
STORE_ENCODE_STATE = ".benmm-encode"

EXPECTED = (
    "a BigEarthNet v1 root holding BigEarthNet-v1.0/ + BigEarthNet-S1-v1.0/ "
    "(or BigEarthNet-S2-Example/ + BigEarthNet-S1-Example/); "
    "a reBEN folder holding metadata.parquet + BigEarthNet-V2-LMDB/ (or BigEarthNet-S2/ + BigEarthNet-S1/); "
    "or a benmm store (a folder with benmm-store.json, made by `benmm encode`)"
)


def archive_kind(path: str | os.PathLike[str]) -> str:
    """``"store"``, ``"reben"`` or ``"v1"`` for what ``path`` holds; :class:`ArchiveError` otherwise."""
    root = Path(path)
    if not root.exists():
        raise ArchiveError(f"{root}: no such file or folder; expected {EXPECTED}")
    if not root.is_dir():
        raise ArchiveError(f"{root}: is a file, not an archive folder; expected {EXPECTED}")
    if (root / STORE_MANIFEST).is_file() or (root / STORE_ENCODE_STATE).exists() or (
        (root / "lmdb" / "data.mdb").is_file() and (root / "metadata.parquet").is_file()
    ):
        return "store"  # finished, half-written or manifest-less: Store.open says which
    from benmm.archive.v2 import is_reben

    if is_reben(root):
        return "reben"
    from benmm.archive.v1 import find_v1_roots

    try:
        find_v1_roots(root)
    except ArchiveError:
        raise ArchiveError(f"{root}: not a BigEarthNet archive; expected {EXPECTED}") from None
    return "v1"


def open_archive(path: str | os.PathLike[str], **options: Any) -> Any:
    """Open a v1 archive (:class:`~benmm.archive.v1.V1Archive`), a reBEN folder
    (:class:`~benmm.archive.v2.V2Archive`) or a benmm store (``benmm.store.reader.Store``).

    Every reader has ``len()``, iterates pair ids and returns a :class:`Pair` for ``reader[name]``.
    ``options`` go to the reader's constructor (v1/reBEN only).
    """
    kind = archive_kind(path)
    if kind == "store":
        try:
            from benmm.store import Store
        except ImportError:
            raise ArchiveError(f"{path}: is a benmm store, and reading stores needs benmm.store.reader, "
                               "which this installation lacks") from None
        return Store.open(path)
    if kind == "reben":
        from benmm.archive.v2 import V2Archive

        return V2Archive(path, **options)
    from benmm.archive.v1 import V1Archive

    return V1Archive(path, **options)
