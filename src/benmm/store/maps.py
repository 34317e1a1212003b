"""A store's reBEN reference maps (``<patch_id>_reference_map`` keys, see :mod:`benmm.archive.refmaps`):
whether it has them, and reading one. Behind :attr:`Store.has_reference_maps` and
:meth:`Store.reference_map`."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from benmm.archive.refmaps import decode_map_blob, map_key
from benmm.errors import ArchiveError, StoreError

if TYPE_CHECKING:
    from benmm.store.reader import Store


def has_maps(store: Store) -> bool:
    """The manifest's ``reference_maps`` count; without a manifest (a reBEN LMDB), the first pair's key."""
    if store.manifest is not None:
        return bool(store.manifest.get("reference_maps", {}).get("count"))
    names = store.metadata["patch_id"]
    with store.env().begin(buffers=True) as txn:
        return len(names) > 0 and txn.get(map_key(str(names.iloc[0])).encode()) is not None


def read_map(store: Store, name: str) -> np.ndarray:
    """Pair ``name``'s checked reference map (StoreError naming the store and key otherwise)."""
    store.s1_key(name)  # the pair exists
    try:
        return decode_map_blob(store.raw(map_key(name)), f"{store.path}: {map_key(name)}")
    except ArchiveError as exc:
        raise StoreError(str(exc)) from None
