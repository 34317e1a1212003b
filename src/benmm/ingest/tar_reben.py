"""Encode reBEN (BigEarthNet v2.0) straight from its published tarballs, nothing extracted.

``BigEarthNet-S2.tar.zst``, ``BigEarthNet-S1.tar.zst`` and, optionally, ``Reference_Maps.tar.zst`` (any
order; the tree of each is in :mod:`benmm.ingest.tar_kinds`) plus ``metadata.parquet`` (and the snow/cloud
file ``metadata_for_patches_with_snow_cloud_or_shadow.parquet``, taken from beside it as the folder
encode does, or given as a second ``--metadata``). Each tarball is streamed once through the shared
reading and committing of :class:`benmm.ingest.tar_source.StreamSource`; only the patches the metadata
names are read (the others are passed over, as the folder encode never looks at folders the metadata does
not name). Once every tarball is read, each metadata row becomes a pair if its S2 and S1 patches (and
its reference map, when ``Reference_Maps`` is given) were read and valid; its row is the folder encode's
(:class:`benmm.ingest.sources.ArchiveSource` over :class:`benmm.archive.v2.V2Archive`: labels in the
metadata's own order, the footprint of the S2 B02 GeoTIFF), so both encodes give one content hash.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final

from benmm.archive.refmaps import map_key
from benmm.archive.splits import normalize_split
from benmm.archive.v2 import EXCLUDED_METADATA, METADATA, TIFF_DIR_NAMES, read_metadata_files
from benmm.errors import BenmmError, EncodeError
from benmm.ingest.sources import check_labels
from benmm.ingest.tar_kinds import REFERENCE_MAPS_DIR, PatchKind
from benmm.ingest.tar_source import _ROW_BATCH, StreamSource, Summary, identify
from benmm.store.layout import canonical_row
from benmm.store.reader import column_split
from benmm.store.writer import StoreWriter

_ORDER: Final = ("s2", "s1", "map")  # reading order (the S2 tarball first, as for v1)
_TOP: Final = {"s2": TIFF_DIR_NAMES["s2"], "s1": TIFF_DIR_NAMES["s1"], "map": REFERENCE_MAPS_DIR}


class RebenTarSource(StreamSource):
    """reBEN's tarballs and its metadata parquet file(s)."""

    kind = "reben-tar"
    footprints = MappingProxyType({"from": "each S2 B02 GeoTIFF's georeference, to WGS84 with pyproj",
                                   "why_none": "its GeoTIFFs carry no georeference (no GeoTIFF tags)"})

    def __init__(self, paths: Sequence[Path], splits: tuple[str, ...] | None,
                 metadata: Sequence[Path]) -> None:
        found: dict[str, tuple[Path, PatchKind, str]] = {}
        for path in paths:
            kind, top = identify(path)
            if kind.role in found:
                raise EncodeError(f"{path} and {found[kind.role][0]} both hold {top}/; give each reBEN "
                                  f"tarball once ({', '.join(f'{t}/' for t in _TOP.values())})")
            found[kind.role] = (path, kind, top)
        for role in ("s2", "s1"):
            if role not in found:
                given = ", ".join(map(str, paths))
                raise EncodeError(f"the {_TOP[role]} tarball is missing (given: {given}); "
                                  f"reBEN is encoded from {_TOP['s2']}.tar.zst and {_TOP['s1']}.tar.zst "
                                  f"(and {REFERENCE_MAPS_DIR}.tar.zst)")
        if not metadata:
            raise EncodeError(f"{paths[0]}: reBEN tarballs need their metadata: add --metadata "
                              f"{METADATA} (published next to them; it lists the pairs, labels and splits)")
        files = self._metadata_files(metadata)
        super().__init__(found["s2"][0], splits)
        roles = [r for r in _ORDER if r in found]
        self.tarballs = {r: found[r][0] for r in roles}
        self.kinds = {r: found[r][1] for r in roles}
        self.tops = {r: found[r][2] for r in roles}
        self.metadata_files = files
        self.meta = read_metadata_files(files, ", ".join(map(str, files)))
        self._rows: list[tuple[dict[str, Any], str]] = []  # (metadata row, its file) of the wanted pairs
        self._want: dict[str, set[str]] = {r: set() for r in roles}
        for rec in self.meta.to_dict("records"):
            if not self._in_splits(rec):
                continue
            self._rows.append((rec, str(self._file_of(rec))))
            self._want["s2"].add(str(rec["patch_id"]))
            self._want["s1"].add(str(rec["s1_name"]))
            if "map" in self._want:
                self._want["map"].add(str(rec["patch_id"]))

    @staticmethod
    def _metadata_files(metadata: Sequence[Path]) -> list[Path]:
        if len(metadata) > 2:
            raise EncodeError(f"--metadata given {len(metadata)} times; give {METADATA} (and at most "
                              f"{EXCLUDED_METADATA})")
        for path in metadata:
            if not path.is_file():
                raise EncodeError(f"--metadata {path}: no such file")
        files = list(metadata)
        beside = files[0].parent / EXCLUDED_METADATA
        if len(files) == 1 and beside.is_file() and beside.resolve() != files[0].resolve():
            files.append(beside)  # the folder encode reads it too (benmm.archive.v2.read_metadata)
        return files

    def _file_of(self, rec: dict[str, Any]) -> Path:
        name = EXCLUDED_METADATA if rec["excluded"] else METADATA
        return next((p for p in self.metadata_files if p.name == name), self.metadata_files[0])

    def _in_splits(self, rec: dict[str, Any]) -> bool:
        if not self.splits:
            return True
        try:
            return normalize_split(str(rec["split"])) in self.splits
        except BenmmError:
            return True  # read, then reported as invalid (as the folder encode does)

    def param_path(self) -> list[str]:
        return [*super().param_path(), *(str(p.resolve()) for p in self.metadata_files)]

    def _wanted(self, role: str, patch: str) -> bool:
        return patch in self._want[role]

    def _row(self, rec: dict[str, Any], where: str) -> dict[str, Any]:
        """The folder encode's metadata row (ArchiveSource.record over V2Archive.__getitem__), footprint
        aside; BenmmError naming the metadata file when the row is invalid."""
        from benmm.archive.splits import v1_info
        from benmm.labels import LABELS_19, unknown_label

        pid = str(rec["patch_id"])
        labels = [str(x) for x in (rec["labels"] if rec["labels"] is not None else [])]
        unknown = [x for x in labels if x not in LABELS_19]
        if unknown:
            raise EncodeError(f"{where}: {pid}: {unknown_label(unknown[0], 19)}")
        try:
            split = normalize_split(str(rec["split"]))
        except BenmmError:
            raise EncodeError(f"{where}: {pid}: unknown split {rec['split']!r}") from None
        check_labels(labels, None, f"{where}: pair {pid}")
        info = v1_info(str(rec["s2v1_name"]))
        return {"patch_id": pid, "labels": labels, "split": column_split(split),
                "country": str(rec["country"]), "s1_name": str(rec["s1_name"]),
                "s2v1_name": str(rec["s2v1_name"]),
                "contains_seasonal_snow": bool(rec["contains_seasonal_snow"]),
                "contains_cloud_or_shadow": bool(rec["contains_cloud_or_shadow"]),
                "labels43": None, "season": info.season if info is not None else None}

    def _missing(self, role: str, patch: str, where: str) -> str:
        folder = self.kinds[role].folder(self.tops[role], patch)
        return (f"{self.tarballs[role]}: holds no {folder}/ (named by {where}); the tarball is incomplete or "
                "of another release")

    def _pair(self, infos: dict[str, Summary], writer: StoreWriter, skip_invalid: bool
              ) -> list[tuple[str, str]]:
        """A pair per wanted metadata row whose patches (and map) are valid; rows written, invalid pairs
        listed and their values removed (``skip_invalid``), else the first stops the encode."""
        pairs: list[tuple[str, str]] = []
        rows: list[tuple[str, bytes]] = []
        bad: list[tuple[str, str]] = []
        drop: list[str] = []
        for rec, where in sorted(self._rows, key=lambda item: str(item[0]["patch_id"])):
            pid, s1 = str(rec["patch_id"]), str(rec["s1_name"])
            keys = {"s2": pid, "s1": s1, "map": map_key(pid)}
            reason = None
            for role in self.tarballs:
                got = infos.get(keys[role])
                if got is None:
                    reason = self._missing(role, keys[role] if role == "s1" else pid, where)
                elif got[3] is not None:
                    reason = got[3]
                if reason is not None:
                    break
            if reason is None:
                try:
                    row = {**self._row(rec, where), **(infos[pid][4] or {})}
                except BenmmError as exc:
                    reason = str(exc)
            if reason is not None:
                bad.append((pid, reason))
                drop += [keys[r] for r in self.tarballs if keys[r] in infos and infos[keys[r]][3] is None]
                continue
            rows.append((pid, canonical_row(row)))
            pairs.append((pid, s1))
        if bad and not skip_invalid:
            name, reason = bad[0]
            raise EncodeError(f"invalid pair {name}: {reason}. Fix or remove it, or rerun with "
                              "--skip-invalid to skip invalid pairs (each is listed)")
        if not rows:
            raise EncodeError(f"{self.label} hold no valid pair of {self.metadata_files[0]}; "
                              "nothing to encode")
        for i in range(0, len(rows), _ROW_BATCH):
            last = i + _ROW_BATCH >= len(rows)
            writer.commit_rows(rows[i:i + _ROW_BATCH], bad if last else (), drop if last else ())
        return pairs
