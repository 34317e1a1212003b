"""What :mod:`benmm.ingest.pipeline` reads from: thin adapters over the readers of :mod:`benmm.archive`.

A source lists its pairs as tasks ``(name, locator)`` in the main process and turns one task into a
validated :class:`~benmm.store.writer.Record` in a worker (``record``), or None when the pair is not in
the requested splits. Problems raise :class:`~benmm.errors.BenmmError` subclasses naming the file.

* :class:`V1Source`: v1 folders through :func:`benmm.archive.v1.read_pair`, band files read straight
  into reused value buffers (the fast path: no array is allocated per pair);
* :class:`StoreSource`: a reBEN LMDB folder or a benmm store, values validated and copied as they are;
* :class:`ArchiveSource`: any other reader :func:`benmm.archive.open_archive` returns (the reBEN GeoTIFF
  release), through its ``archive[name] -> Pair``, values serialised by
  :func:`~benmm.store.blob.encode_blob`.
Every archive kind ``open_archive`` knows therefore also encodes.

Reference maps (reBEN): a source that has them (a ``Reference_Maps/`` folder, or ``<patch_id>_reference_map``
keys in an LMDB or store) adds each pair's map to its record, checked (:mod:`benmm.archive.refmaps`); a
pair without one is then invalid. Sources without maps give records without them.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final

from benmm.archive.footprint import REBEN_NO_FOOTPRINT, from_v1_json
from benmm.bands import BAND_DTYPE, BAND_SIZE, S1_BANDS, S2_BANDS
from benmm.errors import ArchiveError, EncodeError, LabelError, StoreError
from benmm.labels import LABELS_19, LABELS_43, to_19
from benmm.store.blob import BlobError, blob_layout, check_header, encode_blob, parse_header
from benmm.store.geoparquet import footprint_fields, read_footprints, row_footprint
from benmm.store.layout import ENCODE_STATE, MANIFEST, REBEN_LMDB_NAMES, canonical_row, value_digest
from benmm.store.reader import Store, _plain, column_split
from benmm.store.writer import Record

_L19 = frozenset(LABELS_19)
_L43 = frozenset(LABELS_43)


def check_labels(labels19: list[str], labels43: list[str] | None, where: str) -> None:
    """Labels must be known names; 43-class labels must be non-empty and convert to ``labels19``."""
    unknown = [x for x in labels19 if x not in _L19]
    if unknown:
        raise LabelError(f"{where}: unknown 19-class label(s) {', '.join(map(repr, unknown))}")
    if labels43 is not None:
        unknown = [x for x in labels43 if x not in _L43]
        if unknown:
            raise LabelError(f"{where}: unknown 43-class label(s) {', '.join(map(repr, unknown))}")
        if not labels43:
            raise LabelError(f"{where}: the pair has no label")
        if sorted(to_19(labels43)) != sorted(labels19):
            raise LabelError(f"{where}: 19-class labels {labels19} do not match the 43-class labels "
                             f"{labels43}")


def _record(name: str, s1_key: str, s2: bytes | memoryview, s1: bytes | memoryview,
            row: dict[str, Any], ref_map: bytes | None = None) -> Record:
    return Record(name, s2, value_digest(s2), s1_key, s1, value_digest(s1), canonical_row(row),
                  ref_map, None if ref_map is None else value_digest(ref_map))


class Source:
    kind = "source"
    #: where the footprints come from, or why there are none (the manifest's ``footprints``)
    footprints: Mapping[str, str] = MappingProxyType({"why_none": "the source states no place"})

    def __init__(self, root: Path, splits: tuple[str, ...] | None) -> None:
        self.root = root
        self.splits = splits  # normalised: "train" | "val" | "test"

    def tasks(self, splits: tuple[str, ...] | None) -> list[tuple[str, Any]]:
        raise NotImplementedError

    def record(self, name: str, where: Any) -> Record | None:
        raise NotImplementedError

    def param_path(self) -> str | list[str]:
        """What the store's manifest and a resumed encode record as the source's path."""
        return str(self.root.resolve())

    def size_hint(self, pairs: int, per_pair: int) -> int:
        """LMDB map size: generous (it is address space; the file is cut to its data when sealed), so
        that the map never has to grow while several worker processes have it mapped."""
        return int(pairs * per_pair * 2) + (256 << 20)

    def prepare(self) -> None:
        """Load what every worker needs once, in the main process, so forked workers share it."""

    def begin_chunk(self) -> None:
        """A new chunk of records begins: the values of earlier records may be reused from now on
        (the encoder commits each chunk before it begins the next)."""


_S2_LAYOUT: Final = blob_layout({b: (BAND_DTYPE[b], (BAND_SIZE[b],) * 2) for b in S2_BANDS})
_S1_LAYOUT: Final = blob_layout({b: (BAND_DTYPE[b], (BAND_SIZE[b],) * 2) for b in S1_BANDS})


class _BlobBuffers:
    """Reused value buffers, one S2 and one S1 blob per pair of a chunk, headers written once.

    Band files are read straight into their slots (no per-pair allocation, no copy to join the
    bands); fresh memory is what costs on VMs that hand freed pages back to the host.
    """

    def __init__(self) -> None:
        self._pool: list[tuple[bytearray, bytearray, dict[str, memoryview]]] = []
        self._next = 0

    def reset(self) -> None:
        self._next = 0

    def take(self) -> tuple[bytearray, bytearray, dict[str, memoryview]]:
        if self._next == len(self._pool):
            s2, s1 = bytearray(_S2_LAYOUT.size), bytearray(_S1_LAYOUT.size)
            into: dict[str, memoryview] = {}
            for buf, layout in ((s2, _S2_LAYOUT), (s1, _S1_LAYOUT)):
                buf[:len(layout.header)] = layout.header
                into.update({b: memoryview(buf)[a:z] for b, (a, z) in layout.slots.items()})
            self._pool.append((s2, s1, into))
        self._next += 1
        return self._pool[self._next - 1]

    def give_back(self) -> None:
        """The buffers taken last are not used after all."""
        self._next -= 1


def v1_row(name: str, pair: Any) -> dict[str, Any]:
    """The metadata row of a v1 pair (a :class:`benmm.archive.base.Pair` read with the official lists)."""
    return {"patch_id": name, "labels": list(pair.labels19),
            "split": column_split(pair.split) if pair.split else None, "country": pair.country,
            "s1_name": pair.s1_name, "s2v1_name": pair.s2v1_name or name,
            "contains_seasonal_snow": pair.contains_seasonal_snow,
            "contains_cloud_or_shadow": pair.contains_cloud_or_shadow,
            "labels43": list(pair.labels43) if pair.labels43 is not None else None, "season": pair.season}


class V1Source(Source):
    """BigEarthNet v1.0 folders (or the example folders, or a synthetic archive in that layout)."""

    kind = "v1"
    footprints = MappingProxyType({"from": "each S2 JSON's coordinates (UTM) and projection, to WGS84 "
                                           "with pyproj", "why_none": "the JSONs state no coordinates"})

    def __init__(self, root: Path, splits: tuple[str, ...] | None) -> None:
        from benmm.archive.v1 import V1Archive

        super().__init__(root, splits)
        self._buffers = _BlobBuffers()
        # pair from the official list (x_y match for names it lacks) instead of reading every S1 JSON
        # up front (~90 us a pair, serial, before any worker starts): read_pair(validate=True) checks
        # each S1 JSON's corresponding_s2_patch anyway, so a wrong partner fails loudly, never silently
        self.archive = V1Archive(root, pairing="list")

    def tasks(self, splits: tuple[str, ...] | None) -> list[tuple[str, Any]]:
        from benmm.archive.splits import v1_info

        out: list[tuple[str, Any]] = []
        s2_root, s1_root = f"{self.archive.s2_root}{os.sep}", f"{self.archive.s1_root}{os.sep}"
        for name in sorted(self.archive):
            if splits:
                info = v1_info(name)
                if info is not None and info.split not in splits:
                    continue  # known not to be wanted: do not even read it
            s1 = self.archive.s1_name(name)
            if s1 is not None:  # plain strings: pathlib costs ~15 us a pair, serial, before any worker
                out.append((name, (s2_root + name, s1_root + s1)))
                continue
            try:
                s2_dir, s1_dir = self.archive.pair_dirs(name)
                out.append((name, (str(s2_dir), str(s1_dir))))
            except ArchiveError as exc:
                out.append((name, str(exc)))  # reported as an invalid pair by the worker
        return out

    def prepare(self) -> None:
        from benmm.archive.splits import v1_info

        v1_info(self.archive.names()[0] if len(self.archive) else "")  # builds the per-process lookup

    def record(self, name: str, where: Any) -> Record | None:
        from benmm.archive.v1 import read_pair

        if isinstance(where, str):
            raise ArchiveError(where)
        s2_dir, s1_dir = where
        s2, s1, into = self._buffers.take()
        pair = read_pair(s2_dir, s1_dir, validate=True, into=into, drop_cache=True)
        if self.splits and pair.split not in self.splits:
            self._buffers.give_back()
            return None
        check_labels(pair.labels19, pair.labels43, f"{s2_dir}")
        row = {**v1_row(name, pair), **footprint_fields(from_v1_json(
            pair.meta.get("coordinates"), pair.meta.get("projection"), f"{s2_dir}"))}
        return _record(name, pair.s1_name, memoryview(s2), memoryview(s1), row)

    def begin_chunk(self) -> None:
        self._buffers.reset()


class StoreSource(Source):
    """A reBEN folder or a benmm store: values are validated and copied byte for byte."""

    def __init__(self, root: Path, splits: tuple[str, ...] | None) -> None:
        super().__init__(root, splits)
        self.store = Store.open(root)
        self.kind = self.store.kind
        self.maps = self.store.has_reference_maps
        self._footprints: Any = None
        if self.store.manifest is not None:
            self.footprints = self.store.manifest.get("footprints") or Source.footprints
        else:
            self.footprints = {"why_none": REBEN_NO_FOOTPRINT}

    def tasks(self, splits: tuple[str, ...] | None) -> list[tuple[str, Any]]:
        df = self.store.metadata  # loaded here, before the workers fork, so they share it
        keep = None if not splits else {column_split(s) for s in splits}
        out = [(str(name), (str(s1), i)) for i, (name, s1, split) in
               enumerate(zip(df["patch_id"], df["s1_name"], df["split"], strict=True))
               if keep is None or split in keep]
        return sorted(out)

    def prepare(self) -> None:
        self.store.metadata  # noqa: B018 - loaded once here, shared by forked workers
        self._footprints = read_footprints(self.store.metadata_files)

    def record(self, name: str, where: Any) -> Record | None:
        s1_key, i = where
        values = []
        for key, modality in ((name, "s2"), (s1_key, "s1")):
            try:
                value = self.store.raw(key)
                check_header(parse_header(value)[0], modality)
            except BlobError as exc:
                raise ArchiveError(f"{self.store.lmdb_path}: value of {key!r} is invalid: {exc}") from None
            values.append(value)
        row = _plain(self.store.metadata.iloc[i].to_dict())
        row["labels"] = list(row["labels"] or [])
        if self._footprints is None:
            self._footprints = read_footprints(self.store.metadata_files)
        fp = _plain(self._footprints.iloc[i].to_dict())
        row.update(footprint_fields(row_footprint(fp)))
        check_labels(row["labels"], row["labels43"], f"{self.store.path}: pair {name}")
        ref_map = None
        if self.maps:  # copied as it is, once checked
            from benmm.archive.refmaps import decode_map_blob, map_key

            try:
                ref_map = self.store.raw(map_key(name))
            except StoreError:
                raise ArchiveError(f"{self.store.lmdb_path}::{map_key(name)}: reference map is missing from "
                                   "the LMDB (the other pairs have one)") from None
            decode_map_blob(ref_map, f"{self.store.lmdb_path}::{map_key(name)}")
        return _record(name, s1_key, values[0], values[1], row, ref_map)

    def size_hint(self, pairs: int, per_pair: int) -> int:
        size = (self.store.lmdb_path / "data.mdb").stat().st_size
        return int(size * 2) + (256 << 20)


class ArchiveSource(Source):
    """Any :mod:`benmm.archive` reader (``len``, iteration, ``archive[name] -> Pair``): the bands of each
    pair are checked and serialised, its metadata row built from the Pair's fields."""

    def __init__(self, root: Path, splits: tuple[str, ...] | None, archive: Any) -> None:
        super().__init__(root, splits)
        self.archive = archive
        self.kind = f"{archive.kind}-{getattr(archive, 'backend', 'files')}"
        self.maps = bool(getattr(archive, "has_reference_maps", False))
        self._footprint = getattr(archive, "footprint", None)
        self.footprints = {"from": "each S2 B02 GeoTIFF's georeference, to WGS84 with pyproj",
                           "why_none": "its GeoTIFFs carry no georeference (no GeoTIFF tags)"
                           if self._footprint is not None else "the archive reader gives no footprints"}

    def tasks(self, splits: tuple[str, ...] | None) -> list[tuple[str, Any]]:
        return sorted((str(name), None) for name in self.archive)

    def record(self, name: str, where: Any) -> Record | None:
        pair = self.archive[name]
        if self.splits and pair.split not in self.splits:
            return None
        values = []
        for bands, modality in ((S2_BANDS, "s2"), (S1_BANDS, "s1")):
            value = encode_blob({b: pair.bands[b] for b in bands})
            try:
                check_header(parse_header(value)[0], modality)
            except BlobError as exc:
                raise ArchiveError(f"{self.root}: pair {name}: {exc}") from None
            values.append(value)
        # the labels as the source's metadata lists them (reBEN: its own order), so that the store equals
        # the one encoded from the same patches' LMDB; Pair.labels19 is the official order
        row_of = getattr(self.archive, "row", None)
        labels = [str(x) for x in row_of(name)["labels"]] if row_of is not None else list(pair.labels19)
        check_labels(labels, pair.labels43, f"{self.root}: pair {name}")
        row = {"patch_id": name, "labels": labels,
               "split": column_split(pair.split) if pair.split else None, "country": pair.country,
               "s1_name": pair.s1_name, "s2v1_name": pair.s2v1_name,
               "contains_seasonal_snow": pair.contains_seasonal_snow,
               "contains_cloud_or_shadow": pair.contains_cloud_or_shadow,
               "labels43": list(pair.labels43) if pair.labels43 is not None else None, "season": pair.season}
        if self._footprint is not None:
            row.update(footprint_fields(self._footprint(name)))
        ref_map = None
        if self.maps:
            from benmm.archive.refmaps import encode_map_blob

            ref_map = encode_map_blob(self.archive.reference_map(name))
        return _record(name, pair.s1_name, values[0], values[1], row, ref_map)


def normalize_splits(split: str | Any | None) -> tuple[str, ...] | None:
    """``--split`` values (repeated or comma-separated) as sorted normalised names; None = every pair."""
    from benmm.archive.splits import normalize_split

    if split is None or split == () or split == []:
        return None
    items = [split] if isinstance(split, str) else list(split)
    parts = [p for item in items for p in str(item).split(",") if p.strip()]
    return tuple(sorted({normalize_split(p) for p in parts})) or None


def open_source(path: Path, split: str | Any | None) -> tuple[Source, tuple[str, ...] | None]:
    """The source at ``path`` and the normalised split names (None = every pair)."""
    splits = normalize_splits(split)
    if not path.exists():
        raise EncodeError(f"{path}: no such archive (the path does not exist)")
    if any((path / n).exists() for n in (MANIFEST, ENCODE_STATE, *REBEN_LMDB_NAMES)):
        return StoreSource(path, splits), splits
    from benmm.archive import archive_kind, open_archive

    try:
        kind = archive_kind(path)
    except ArchiveError:
        kind = "v1"  # V1Source says what is wrong with the folder tree
    if kind == "reben":  # the GeoTIFF release (no LMDB)
        return ArchiveSource(path, splits, open_archive(path)), splits
    return V1Source(path, splits), splits
