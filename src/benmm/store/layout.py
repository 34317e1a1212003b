"""What a store is on disk: file and folder names, the metadata columns, and the content hash.

Shared by the reader (:mod:`benmm.store.reader`) and the writer (:mod:`benmm.store.writer`), so neither
imports the other.

**Content hash** (``"sha256:<hex>"``): SHA-256 of ``b"benmm-store-content/1\\n"``, then for every key
in bytewise order ``u32le(len(key)) + key + sha256(value)``, then ``b"metadata\\n" + sha256(rows)``
where ``rows`` are the metadata rows sorted by ``patch_id``, each the JSON of all
:data:`METADATA_COLUMNS` (nulls as ``null``; ``sort_keys``, ``separators=(",", ":")``,
``ensure_ascii=False``) plus ``\\n``; a row with a footprint (``footprint_crs`` not null) also holds
:data:`FOOTPRINT_COLUMNS` (the source CRS and the UTM bounds as floats), a row without one is
unchanged, so stores without footprints keep the hash they always had. The WGS84 ``geometry`` column
is not hashed: it is derived from those two (with pyproj, whose last digits may vary by PROJ
version). reBEN reference maps are keys like any other (``<patch_id>_reference_map``), so they enter
the hash through the key list only: a store without maps has no such keys. It depends only on what
the store holds, never on the order pairs were written, the number of workers or interruptions;
:meth:`Store.verify` recomputes it from the data (``benmm verify STORE``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from typing import Any, Final

FORMAT: Final = "benmm-store"
FORMAT_VERSION: Final = 1
MANIFEST: Final = "benmm-store.json"
LMDB_DIR: Final = "lmdb"
METADATA: Final = "metadata.parquet"
REPORT: Final = "encode-report.json"
ENCODE_STATE: Final = ".benmm-encode"
REBEN_LMDB: Final = "BigEarthNet-V2-LMDB"
#: names of the LMDB folder in a reBEN root: as published, and as rico-hdl's encoder writes it
REBEN_LMDB_NAMES: Final = (REBEN_LMDB, "Encoded-BigEarthNet")
REBEN_EXTRA: Final = "metadata_for_patches_with_snow_cloud_or_shadow.parquet"
METADATA_COLUMNS: Final = ("patch_id", "labels", "split", "country", "s1_name", "s2v1_name",
                           "contains_seasonal_snow", "contains_cloud_or_shadow", "labels43", "season")
#: the footprint as the source states it (CRS, [west, south, east, north]); hashed where present
FOOTPRINT_COLUMNS: Final = ("footprint_crs", "footprint_bounds")
_HASH_PREFIX: Final = b"benmm-store-content/1\n"


def value_digest(value: bytes | memoryview) -> bytes:
    return hashlib.sha256(value).digest()


def canonical_row(row: dict[str, Any]) -> bytes:
    placed = row.get("footprint_crs") is not None
    fields = METADATA_COLUMNS + FOOTPRINT_COLUMNS if placed else METADATA_COLUMNS
    return json.dumps({c: row.get(c) for c in fields}, sort_keys=True,
                      separators=(",", ":"), ensure_ascii=False).encode()


class ContentHasher:
    """The store content hash (definition above); feed keys in bytewise order."""

    def __init__(self) -> None:
        self._h = hashlib.sha256(_HASH_PREFIX)
        self._last = b""

    def add(self, key: str, digest: bytes) -> None:
        raw = key.encode()
        if raw <= self._last and self._last:
            raise ValueError(f"content hash keys must come in increasing order ({key!r})")
        self._last = raw
        self._h.update(len(raw).to_bytes(4, "little") + raw + digest)

    def hexdigest(self, rows: Iterable[dict[str, Any]]) -> str:
        meta = hashlib.sha256()
        for row in sorted(rows, key=lambda r: r["patch_id"]):
            meta.update(canonical_row(row) + b"\n")
        h = self._h.copy()
        h.update(b"metadata\n" + meta.digest())
        return "sha256:" + h.hexdigest()
