"""The training store: LMDB of safetensors blobs + ``metadata.parquet`` + ``benmm-store.json``.

Layout of a benmm store directory::

    X.store/
      lmdb/data.mdb          key = patch name (S1 and S2 each their own key), value = safetensors blob
                             {band: 2-D array at native size, native dtype}  (reBEN's key/value format)
      metadata.parquet       one row per pair: reBEN's columns + labels43 (list or null) + season
      benmm-store.json       the manifest, written last (see below)
      encode-report.json     what ``encode`` did: skipped pairs with reasons, timings
      .benmm-encode/         only while an encode is running or was interrupted: readers refuse the store

A reBEN folder as published (``BigEarthNet-V2-LMDB/`` + ``metadata.parquet``, optionally
``metadata_for_patches_with_snow_cloud_or_shadow.parquet``) opens as a store too, without a manifest.

The manifest holds ``format`` ("benmm-store"), ``format_version``, ``pairs`` and ``keys`` (checked on
open against the metadata rows and the LMDB entries), ``skipped``, ``splits`` (pairs per split),
``label_sets`` ([19, 43] from v1, [19] from reBEN), ``bands`` and ``band_info`` (size, dtype,
resolution), ``source`` (kind, path, split), ``created``/``created_by`` and ``content_hash``;
with reBEN reference maps also ``reference_maps`` (count, key, tensor: :mod:`benmm.archive.refmaps`).

The content hash is defined in :mod:`benmm.store.layout`.

**Reads and copies.** The LMDB environment is opened lazily in each process (inherited handles are
closed in forked children, see :mod:`benmm.store.lmdbenv`), read-only,
``lock=False``, ``readahead=False``: no lock file, safe to share between DataLoader workers (fork or
spawn), many processes, read-only media. :meth:`Store.read` copies each value once out of the memory map
(a ``bytes`` object) and returns read-only numpy views into it, no per-band copy; with ``bands=`` only
the chosen bands are copied straight from the map into writable arrays; :meth:`Store.view` copies
nothing (arrays valid inside its ``with`` block). :meth:`Store.raw` is one copy.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterable, Iterator
from functools import cached_property
from pathlib import Path
from typing import Any

import lmdb
import numpy as np
import pandas as pd

from benmm.archive.base import Pair
from benmm.archive.refmaps import decode_map_blob, is_map_key
from benmm.archive.splits import split_column_value
from benmm.bands import S1_BANDS, S2_BANDS
from benmm.errors import ArchiveError, StoreError
from benmm.labels import to_19
from benmm.store import maps
from benmm.store.blob import BlobError, check_header, decode_blob, parse_header
from benmm.store.layout import (
    ENCODE_STATE,
    FORMAT,
    FORMAT_VERSION,
    LMDB_DIR,
    MANIFEST,
    METADATA,
    METADATA_COLUMNS,
    REBEN_EXTRA,
    REBEN_LMDB,
    REBEN_LMDB_NAMES,
    ContentHasher,
    value_digest,
)
from benmm.store.lmdbenv import close_env, shared_env


def column_split(split: str) -> str:
    """"val"/"validation" -> "validation" (the column's spelling); unknown names raise SplitError."""
    return split_column_value(split)


class Store:
    """A read-only store (benmm's own or a published reBEN folder). Picklable; process-safe.

    Use :meth:`Store.open`. ``len(store)`` pairs; ``store.metadata`` one row per pair;
    ``store[name]`` -> :class:`benmm.archive.base.Pair`.
    """

    def __init__(self, path: Path, lmdb_path: Path, kind: str, manifest: dict[str, Any] | None,
                 metadata_files: tuple[Path, ...]) -> None:
        self.path = path
        self.lmdb_path = lmdb_path
        self.kind = kind  # "store" | "reben"
        self.manifest = manifest
        self.metadata_files = metadata_files

    # ---- opening and checking -------------------------------------------------------------------
    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> Store:
        """Open and check a store; raise :class:`StoreError` saying what is wrong and what to do."""
        root = Path(path).expanduser()
        if not root.exists():
            raise StoreError(f"{root}: no such store (the path does not exist)")
        if not root.is_dir():
            raise StoreError(f"{root}: not a store (a store is a directory holding {MANIFEST})")
        if (root / ENCODE_STATE).exists():
            raise StoreError(f"{root}: half-written store (an encode is running or was interrupted); "
                             "run the same `benmm encode SRC DST` again to finish it")
        if (root / MANIFEST).is_file():
            store = cls._open_benmm(root)
        elif any((root / name).is_dir() for name in REBEN_LMDB_NAMES):
            store = cls._open_reben(root)
        elif (root / LMDB_DIR).exists():
            raise StoreError(f"{root}: {MANIFEST} is missing, so this is not a finished benmm store; "
                             "encode it again with `benmm encode`")
        else:
            raise StoreError(f"{root}: not a store; expected {MANIFEST} (a benmm store) or "
                             f"{REBEN_LMDB}/ + {METADATA} (a reBEN folder)")
        store._check_lmdb()
        return store

    @classmethod
    def _open_benmm(cls, root: Path) -> Store:
        try:
            manifest = json.loads((root / MANIFEST).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise StoreError(f"{root / MANIFEST}: unreadable manifest ({exc}); "
                             "encode the store again") from None
        if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
            raise StoreError(f"{root / MANIFEST}: not a benmm store manifest (format is not {FORMAT!r})")
        version = manifest.get("format_version")
        if version != FORMAT_VERSION:
            newer = isinstance(version, int) and version > FORMAT_VERSION
            hint = "upgrade benmm to read it" if newer else "encode it again with this benmm"
            raise StoreError(f"{root}: store format version {version!r}, this benmm reads version "
                             f"{FORMAT_VERSION}; {hint}")
        for key in ("pairs", "keys"):
            if not isinstance(manifest.get(key), int):
                raise StoreError(f"{root / MANIFEST}: manifest has no valid {key!r} count; encode it again")
        lmdb_path, meta = root / LMDB_DIR, root / METADATA
        if not (lmdb_path / "data.mdb").is_file():
            raise StoreError(f"{root}: {LMDB_DIR}/data.mdb is missing; encode the store again")
        if not meta.is_file():
            raise StoreError(f"{root}: {METADATA} is missing; encode the store again")
        rows = _parquet_rows(meta)
        if rows != manifest["pairs"]:
            raise StoreError(f"{root}: {METADATA} has {rows} rows but the manifest says {manifest['pairs']} "
                             "pairs (mixed or damaged store); encode it again")
        return cls(root, lmdb_path, "store", manifest, (meta,))

    @classmethod
    def _open_reben(cls, root: Path) -> Store:
        lmdb_path = next(root / n for n in REBEN_LMDB_NAMES if (root / n).is_dir())
        meta = root / METADATA
        if not (lmdb_path / "data.mdb").is_file():
            raise StoreError(f"{lmdb_path}/data.mdb is missing (incomplete reBEN download?)")
        if not meta.is_file():
            raise StoreError(f"{root}: {METADATA} is missing next to {lmdb_path.name}/ "
                             "(download it from reBEN)")
        files = (meta, root / REBEN_EXTRA) if (root / REBEN_EXTRA).is_file() else (meta,)
        return cls(root, lmdb_path, "reben", None, files)

    def _check_lmdb(self) -> None:
        try:
            env = self.env()
            stat = env.stat()  # shared_env has refused a truncated file
        except lmdb.Error as exc:
            raise StoreError(f"{self.lmdb_path}: not a readable LMDB ({exc})") from None
        entries = stat["entries"]
        if self.manifest is not None and entries != self.manifest["keys"]:
            raise StoreError(f"{self.path}: the LMDB holds {entries} keys but the manifest says "
                             f"{self.manifest['keys']} (mixed or damaged store); encode it again")
        if self.manifest is None and entries < 2 * len(self):
            dup = self.metadata["patch_id"].duplicated()
            if dup.any():  # not missing data: the same pair listed twice
                first = self.metadata.loc[dup, "patch_id"].iloc[0]
                raise StoreError(f"{self.path}: {int(dup.sum())} patch_id(s) appear twice in the metadata "
                                 f"(first: {first}); each pair must be listed once")
            raise StoreError(f"{self.path}: the LMDB holds {entries} keys, fewer than the 2 x {len(self)} "
                             "that the metadata lists (incomplete download?)")

    # ---- process safety -------------------------------------------------------------------------
    def env(self) -> lmdb.Environment:
        """This process's read-only LMDB handle of the store (opened lazily, fork-safe;
        see :mod:`benmm.store.lmdbenv`). Zero-copy: ``with store.env().begin(buffers=True) as txn``."""
        return shared_env(self.lmdb_path)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        for lazy in ("metadata", "_index"):
            state.pop(lazy, None)  # re-read on demand in the receiving process
        return state

    def close(self) -> None:
        """Close this process's LMDB handle of the store (reopened on the next read)."""
        close_env(self.lmdb_path)

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Store({str(self.path)!r}, kind={self.kind!r}, pairs={len(self)})"

    # ---- metadata -------------------------------------------------------------------------------
    @cached_property
    def metadata(self) -> pd.DataFrame:
        """One row per pair, columns :data:`METADATA_COLUMNS`; ``patch_id`` is the pair id (S2 key)."""
        frames = []
        for f in self.metadata_files:  # each file checked on its own: a concat would fill gaps with NaN
            try:
                frame = pd.read_parquet(f)
            except Exception as exc:  # pyarrow raises several types for a damaged file
                raise StoreError(f"{f}: not a readable parquet file ({exc}); "
                                 f"{'encode the store again' if self.manifest else 'download it again'}"
                                 ) from None
            missing = [c for c in METADATA_COLUMNS[:8] if c not in frame.columns]
            if missing:
                raise StoreError(f"{f}: metadata lacks column(s) {', '.join(missing)}")
            frames.append(frame)
        df = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0].reset_index(drop=True)
        if "labels43" not in df.columns:
            df["labels43"] = None
        if "season" not in df.columns:
            df["season"] = _seasons(df["s2v1_name"])
        return df[list(METADATA_COLUMNS)]

    @cached_property
    def _index(self) -> dict[str, tuple[int, str]]:
        """pair id -> (row number, S1 key)"""
        df = self.metadata
        pairs = zip(df["patch_id"], df["s1_name"], strict=True)
        return {name: (i, s1) for i, (name, s1) in enumerate(pairs)}

    def __len__(self) -> int:
        if self.manifest is not None:
            return int(self.manifest["pairs"])
        return sum(_parquet_rows(f) for f in self.metadata_files)

    def __iter__(self) -> Iterator[str]:
        return iter(self.metadata["patch_id"].tolist())

    def __contains__(self, name: object) -> bool:
        return name in self._index

    def names(self, split: str | None = None) -> list[str]:
        """Pair ids (S2 keys), all or those of one split ("train", "val"/"validation", "test")."""
        df = self.metadata
        if split is None:
            return df["patch_id"].tolist()
        return df.loc[df["split"] == column_split(split), "patch_id"].tolist()

    def _entry(self, name: str) -> tuple[int, str]:
        try:
            return self._index[name]
        except KeyError:
            raise StoreError(f"{self.path}: no pair named {name!r} in this store") from None

    def row(self, name: str) -> dict[str, Any]:
        """The metadata row of pair ``name`` as plain Python values."""
        return _plain(self.metadata.iloc[self._entry(name)[0]].to_dict())

    def s1_key(self, name: str) -> str:
        """The S1 key (S1 patch name) of pair ``name``."""
        return self._entry(name)[1]

    # ---- values ---------------------------------------------------------------------------------
    def raw(self, key: str) -> bytes:
        """The value bytes stored under ``key`` (one copy out of the memory map)."""
        with self.env().begin(buffers=True) as txn:
            value = txn.get(key.encode())
            if value is None:
                raise StoreError(f"{self.path}: no key {key!r} in the LMDB")
            return bytes(value)

    def read(self, key: str, bands: Iterable[str] | None = None) -> dict[str, np.ndarray]:
        """Decode one value: S2 key -> its 12 bands, S1 key -> VV, VH (native size and dtype).

        ``bands=None``: read-only views into one copy of the value. ``bands=[...]``: only those bands,
        each copied straight from the memory map into a writable array.
        """
        try:
            if bands is None:
                return decode_blob(self.raw(key))
            with self.env().begin(buffers=True) as txn:
                value = txn.get(key.encode())
                if value is None:
                    raise StoreError(f"{self.path}: no key {key!r} in the LMDB")
                return decode_blob(value, bands=list(bands), copy=True)
        except BlobError as exc:
            raise StoreError(f"{self.path}: value of {key!r} is damaged: {exc}") from None

    @contextlib.contextmanager
    def view(self, key: str) -> Iterator[dict[str, np.ndarray]]:
        """Zero-copy: read-only arrays pointing straight into LMDB's memory map, valid only inside the
        ``with`` block (convert or copy what you keep, e.g. ``torch.tensor(arr, dtype=float32)``)."""
        with self.env().begin(buffers=True) as txn:
            value = txn.get(key.encode())
            if value is None:
                raise StoreError(f"{self.path}: no key {key!r} in the LMDB")
            try:
                arrays = decode_blob(value)
            except BlobError as exc:
                raise StoreError(f"{self.path}: value of {key!r} is damaged: {exc}") from None
            yield arrays

    def read_pair(self, name: str, bands: Iterable[str] | None = None) -> dict[str, np.ndarray]:
        """The bands of pair ``name`` (default all 14), S2 then S1, canonical order."""
        chosen = list(S2_BANDS + S1_BANDS) if bands is None else list(bands)
        s2 = [b for b in S2_BANDS if b in chosen]
        s1 = [b for b in S1_BANDS if b in chosen]
        key = self.s1_key(name)  # also checks that the pair exists
        out: dict[str, np.ndarray] = {}
        if s2:
            got = self.read(name) if bands is None else self.read(name, s2)
            out.update((b, got[b]) for b in s2)
        if s1:
            got = self.read(key) if bands is None else self.read(key, s1)
            out.update((b, got[b]) for b in s1)
        return out

    def __getitem__(self, name: str) -> Pair:
        row = self.row(name)
        split = row["split"]
        return Pair(name=name, s1_name=row["s1_name"], bands=self.read_pair(name),
                    labels19=to_19(row["labels"] or []), labels43=row["labels43"],
                    split="val" if split == "validation" else split, country=row["country"],
                    season=row["season"], s2v1_name=row["s2v1_name"],
                    contains_seasonal_snow=row["contains_seasonal_snow"],
                    contains_cloud_or_shadow=row["contains_cloud_or_shadow"],
                    meta={"source": self.kind, "store": str(self.path)})

    @cached_property
    def has_reference_maps(self) -> bool:
        """Whether the store holds reBEN reference maps (:func:`benmm.store.maps.has_maps`)."""
        return maps.has_maps(self)

    def reference_map(self, name: str) -> np.ndarray:
        """Pair ``name``'s reference map: uint16 [120, 120] raw CLC Level-3 codes, 0 = no data."""
        return maps.read_map(self, name)

    def keys(self) -> Iterator[str]:
        """Every LMDB key in bytewise order."""
        with self.env().begin() as txn:
            for key in txn.cursor().iternext(keys=True, values=False):
                yield bytes(key).decode()

    @property
    def content_hash(self) -> str | None:
        return None if self.manifest is None else self.manifest.get("content_hash")

    def verify(self) -> str:
        """Read every value, check its bands, recompute the content hash; raise StoreError on a problem.

        Returns the recomputed hash (for a reBEN folder, which has no manifest, just the hash).
        """
        hasher = ContentHasher()
        with self.env().begin(buffers=True) as txn:
            for key, value in txn.cursor():
                name = bytes(key).decode()
                try:
                    if is_map_key(name):
                        decode_map_blob(value, name)
                    else:
                        check_header(parse_header(value)[0], "s1" if name.startswith("S1") else "s2")
                except (BlobError, ArchiveError) as exc:
                    raise StoreError(f"{self.path}: value of {name!r} is damaged: {exc}") from None
                hasher.add(name, value_digest(value))
        if self.kind == "store":
            import pyarrow.parquet as pq

            rows = pq.read_table(self.metadata_files[0]).to_pylist()
        else:
            rows = [_plain(r) for r in self.metadata.to_dict(orient="records")]
        digest = hasher.hexdigest(rows)
        if self.manifest is not None and digest != self.content_hash:
            raise StoreError(f"{self.path}: content hash {digest} differs from the manifest's "
                             f"{self.content_hash}: the store was modified or damaged; encode it again")
        return digest


def _parquet_rows(path: Path) -> int:
    import pyarrow.parquet as pq

    try:
        return int(pq.ParquetFile(path).metadata.num_rows)
    except Exception as exc:  # pyarrow raises several types for a damaged file
        raise StoreError(f"{path}: not a readable parquet file ({exc})") from None


def _plain(row: dict[str, Any]) -> dict[str, Any]:
    """numpy/pandas scalars and arrays -> plain Python (lists, str, bool, None)."""
    out: dict[str, Any] = {}
    for key, value in row.items():
        if isinstance(value, np.ndarray):
            value = value.tolist()
        elif isinstance(value, np.generic):
            value = value.item()
        elif value is not None and not isinstance(value, list | str) and pd.isna(value):
            value = None
        out[key] = value
    return out


def _seasons(s2v1_names: pd.Series) -> pd.Series:
    """Season of each v1 S2 name from the official pair list, None where unknown or unavailable."""
    try:
        from benmm.archive.splits import seasons

        values = seasons(s2v1_names.astype(object).where(s2v1_names.notna(), "").tolist())
    except Exception:  # the pair list is optional for reading: seasons stay unknown
        values = [None] * len(s2v1_names)
    return pd.Series(values, index=s2v1_names.index, dtype=object)
