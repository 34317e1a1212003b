"""The training store: reader (:mod:`.reader`), writer (:mod:`.writer`), on-disk layout and content hash
(:mod:`.layout`), value format (:mod:`.blob`, reBEN's safetensors values), LMDB handles (:mod:`.lmdbenv`)."""

from __future__ import annotations

from benmm.store.layout import MANIFEST, METADATA, REPORT
from benmm.store.reader import Store, column_split

__all__ = ["MANIFEST", "METADATA", "REPORT", "Store", "column_split"]
