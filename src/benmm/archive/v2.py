"""BigEarthNet v2.0 (reBEN) as its publishers distribute it.

A reBEN folder holds ``metadata.parquet`` (``patch_id, labels, split, country, s1_name, s2v1_name,
contains_seasonal_snow, contains_cloud_or_shadow``; 19-class label names; split ``validation``),
optionally ``metadata_for_patches_with_snow_cloud_or_shadow.parquet`` (the excluded patches, same
columns), and the image data in one of two layouts:

* the LMDB made by rico-hdl (``BigEarthNet-V2-LMDB/data.mdb`` or any sub-folder with a ``data.mdb``):
  key = patch name (S2 v2 name, S1 name), value = safetensors ``{band: 2-D array at native size}``;
* the GeoTIFF folders as downloaded (``BigEarthNet-S2.tar.zst`` / ``BigEarthNet-S1.tar.zst``):
  ``BigEarthNet-S2/<tile>/<patch_id>/<patch_id>_B01.tif`` where ``<tile>`` is the patch id without
  its ``_x_y`` suffix (``S2A_MSIL2A_20170613T101031_N9999_R022_T33UUP``), and
  ``BigEarthNet-S1/<product>/<s1_name>/<s1_name>_VV.tif`` where ``<product>`` is the S1 name without
  ``_<tile>_x_y`` (``S1A_IW_GRDH_1SDV_20170613T165043``). Sources: the rico-hdl README (BigEarthNet
  example input tree) and TorchGeo's ``BigEarthNetV2`` dataset (``_load_image`` path scheme).

Either layout may hold the reference maps (``Reference_Maps/<tile>/<patch_id>/
<patch_id>_reference_map.tif``, or the LMDB key ``<patch_id>_reference_map``): see
:mod:`benmm.archive.refmaps`; :meth:`V2Archive.reference_map` reads one.

The LMDB opens lazily, once per process, read-only and without locking, through
:func:`benmm.store.lmdbenv.shared_env` (the same handle a :class:`benmm.store.Store` of the folder
uses; closed in forked children), so an archive object can be handed to DataLoader workers or a process pool.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import numpy as np

from benmm import labels as L
from benmm.archive.base import Pair, Problem, UnknownPatchError
from benmm.archive.splits import normalize_split
from benmm.archive.tiff import check_band, read_band
from benmm.bands import S1_BANDS, S2_BANDS
from benmm.errors import ArchiveError, BenmmError

if TYPE_CHECKING:
    import pandas as pd

METADATA: Final = "metadata.parquet"
EXCLUDED_METADATA: Final = "metadata_for_patches_with_snow_cloud_or_shadow.parquet"
METADATA_COLUMNS: Final = ("patch_id", "labels", "split", "country", "s1_name", "s2v1_name",
                           "contains_seasonal_snow", "contains_cloud_or_shadow")
LMDB_DIR_NAMES: Final = ("BigEarthNet-V2-LMDB", "Encoded-BigEarthNet")
TIFF_DIR_NAMES: Final = {"s2": "BigEarthNet-S2", "s1": "BigEarthNet-S1"}


def _env(path: Path) -> Any:
    """This process's read-only LMDB handle of ``path``: :func:`benmm.store.lmdbenv.shared_env`, the one
    handle per file and process that a :class:`benmm.store.reader.Store` of the same folder also uses
    (py-lmdb refuses a second one; handles are closed in forked children, see :mod:`benmm.store.lmdbenv`)."""
    from benmm.errors import StoreError
    from benmm.store.lmdbenv import shared_env

    try:
        return shared_env(path)
    except StoreError as exc:
        raise ArchiveError(str(exc)) from None


def _close_env(path: Path) -> None:
    from benmm.store.lmdbenv import close_env

    close_env(path)


def find_lmdb(root: Path) -> Path | None:
    """The folder holding ``data.mdb`` in a reBEN root (known names first, then any sub-folder)."""
    for name in LMDB_DIR_NAMES:
        if (root / name / "data.mdb").is_file():
            return root / name
    if (root / "data.mdb").is_file():
        return root
    for sub in sorted(p for p in root.iterdir() if p.is_dir()):
        if (sub / "data.mdb").is_file():
            return sub
    return None


def is_reben(path: str | os.PathLike[str]) -> bool:
    root = Path(path)
    return (root / METADATA).is_file() and (
        find_lmdb(root) is not None or (root / TIFF_DIR_NAMES["s2"]).is_dir()
    )


def s2_tiff_dir(root: Path, patch_id: str) -> Path:
    """``BigEarthNet-S2/<tile>/<patch_id>`` (tile = patch id without ``_x_y``)."""
    return root / TIFF_DIR_NAMES["s2"] / patch_id.rsplit("_", 2)[0] / patch_id


def s1_tiff_dir(root: Path, s1_name: str) -> Path:
    """``BigEarthNet-S1/<product>/<s1_name>`` (product = S1 name without ``_<tile>_x_y``)."""
    return root / TIFF_DIR_NAMES["s1"] / s1_name.rsplit("_", 3)[0] / s1_name


def read_metadata(root: Path, include_excluded: bool = True) -> pd.DataFrame:
    """reBEN metadata (both parquet files unless ``include_excluded=False``), one row per pair."""
    if not (root / METADATA).is_file():
        raise ArchiveError(f"{root / METADATA}: metadata file is missing (not a reBEN folder?)")
    names = (METADATA, EXCLUDED_METADATA) if include_excluded else (METADATA,)
    return read_metadata_files([root / n for n in names if (root / n).is_file()], str(root))


def read_metadata_files(paths: list[Path], where: str) -> pd.DataFrame:
    """The reBEN metadata files ``paths`` (``metadata.parquet``, and the snow/cloud one) as one table,
    checked: every column present, no patch twice (``where`` names the set in that error). A file named
    :data:`EXCLUDED_METADATA` flags its rows ``excluded``."""
    import pandas as pd

    frames = []
    for path in paths:
        try:
            df = pd.read_parquet(path)
        except Exception as exc:  # pyarrow raises several types for damaged files
            raise ArchiveError(f"{path}: not a readable parquet file ({exc})") from None
        missing = [c for c in METADATA_COLUMNS if c not in df.columns]
        if missing:
            raise ArchiveError(f"{path}: missing column(s) {', '.join(missing)}; "
                               f"a reBEN metadata file has {', '.join(METADATA_COLUMNS)}")
        df = df.loc[:, list(METADATA_COLUMNS)].reset_index(drop=True)
        df["excluded"] = path.name == EXCLUDED_METADATA
        frames.append(df)
    meta = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
    dup = meta["patch_id"].duplicated()
    if dup.any():
        first = meta.loc[dup, "patch_id"].iloc[0]
        raise ArchiveError(f"{where}: patch_id {first!r} appears twice in the metadata")
    return meta


class V2Archive:
    """A reBEN (BigEarthNet v2.0) folder: ``len``, iteration over patch ids, ``arc[patch_id] -> Pair``.

    ``arc[name]`` also accepts the pair's v1 S2 name or its S1 name. ``include_excluded`` keeps the
    snow/cloud patches of the second parquet (flagged in ``contains_*``); ``backend`` picks ``lmdb``
    or ``tiff`` (``auto``: the LMDB when present).
    """

    kind = "reben"

    def __init__(self, root: str | os.PathLike[str], include_excluded: bool = True, backend: str = "auto",
                 lists: bool = True) -> None:
        self.root = Path(root)
        if not (self.root / METADATA).is_file():
            raise ArchiveError(f"{self.root}: not a reBEN folder; expected {METADATA} next to "
                               f"{LMDB_DIR_NAMES[0]}/ (or {TIFF_DIR_NAMES['s2']}/ + {TIFF_DIR_NAMES['s1']}/)")
        self.lmdb_dir = find_lmdb(self.root)
        if backend == "auto":
            backend = "lmdb" if self.lmdb_dir is not None else "tiff"
        if backend == "lmdb" and self.lmdb_dir is None:
            raise ArchiveError(f"{self.root}: no LMDB (a folder with data.mdb) found")
        if backend == "tiff" and not (self.root / TIFF_DIR_NAMES["s2"]).is_dir():
            raise ArchiveError(f"{self.root}: neither an LMDB (a folder with data.mdb) nor "
                               f"{TIFF_DIR_NAMES['s2']}/ + {TIFF_DIR_NAMES['s1']}/ found")
        if backend not in ("lmdb", "tiff"):
            raise ArchiveError(f"unknown backend {backend!r}; use auto, lmdb or tiff")
        self.backend = backend
        self.lists = lists
        self.metadata = read_metadata(self.root, include_excluded)
        self._row = {name: i for i, name in enumerate(self.metadata["patch_id"])}
        self._alias: dict[str, str] | None = None
        self._lmdb_checked: tuple[Problem | None] | None = None  # (problem,) once checked
        self._maps: bool | None = None

    # -- lookup ----------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._row)

    def __iter__(self) -> Iterator[str]:
        return iter(self.metadata["patch_id"])

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self._resolve(name) is not None

    def names(self) -> list[str]:
        return list(self.metadata["patch_id"])

    def _resolve(self, name: str) -> str | None:
        if name in self._row:
            return name
        if self._alias is None:
            m = self.metadata
            self._alias = dict(zip(m["s2v1_name"], m["patch_id"], strict=True)) | dict(
                zip(m["s1_name"], m["patch_id"], strict=True))
        return self._alias.get(name)

    def patch_id(self, name: str) -> str:
        """The v2 patch id of ``name`` (a patch id, v1 S2 name or S1 name)."""
        found = self._resolve(name)
        if found is None:
            import difflib

            close = difflib.get_close_matches(name, self._row, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise UnknownPatchError(f"{name!r} is not a pair of the reBEN archive at {self.root}{hint}")
        return found

    def row(self, name: str) -> dict[str, Any]:
        """The metadata row of a pair as a dict."""
        return dict(self.metadata.iloc[self._row[self.patch_id(name)]])

    def footprint(self, name: str) -> tuple[str, tuple[float, float, float, float]] | None:
        """The S2 B02 GeoTIFF's footprint (GeoTIFF release); None for the LMDB, which has no georeference
        (:data:`benmm.archive.footprint.REBEN_NO_FOOTPRINT`)."""
        if self.backend != "tiff":
            return None
        from benmm.archive.footprint import from_geotiff

        pid = self.patch_id(name)
        return from_geotiff(str(s2_tiff_dir(self.root, pid) / f"{pid}_B02.tif"))

    # -- image data --------------------------------------------------------------------------
    def _txn_get(self, key: str) -> bytes | None:
        with _env(self.lmdb_dir).begin(buffers=False) as txn:  # type: ignore[arg-type]
            value = txn.get(key.encode())
        return None if value is None else bytes(value)

    def close(self) -> None:
        """Close this process's handle of the LMDB (reopened on the next read)."""
        if self.lmdb_dir is not None:
            _close_env(self.lmdb_dir)

    def read_key(self, key: str, bands: tuple[str, ...]) -> dict[str, np.ndarray]:
        """The bands of one patch (S2 or S1 key), checked for presence, size and dtype."""
        if self.backend == "tiff":
            s2 = bands[0] in S2_BANDS
            folder = s2_tiff_dir(self.root, key) if s2 else s1_tiff_dir(self.root, key)
            return {band: read_band(folder / f"{key}_{band}.tif", band) for band in bands}
        from benmm.store.blob import BlobError, decode_blob, parse_header

        where = f"{self.lmdb_dir}::{key}"
        raw = self._txn_get(key)
        if raw is None:
            raise ArchiveError(f"{where}: key is missing from the LMDB")
        try:  # the store's reader of the value format (one parser for both)
            header, _ = parse_header(raw)
            missing = [b for b in bands if b not in header]
            if missing:
                have = ", ".join(sorted(header))
                raise ArchiveError(f"{where}: band(s) {', '.join(missing)} missing (has {have})")
            data = decode_blob(raw, bands, copy=True)
        except BlobError as exc:
            raise ArchiveError(f"{where}: value is not a safetensors blob ({exc})") from None
        return {band: check_band(data[band], band, where) for band in bands}

    @property
    def has_reference_maps(self) -> bool:
        """Whether the archive holds reference maps (decided once)."""
        if self._maps is None:
            from benmm.archive.refmaps import has_maps

            self._maps = has_maps(self)
        return self._maps

    def reference_map(self, name: str) -> np.ndarray:
        """The pair's reference map: uint16 [120, 120] raw CLC Level-3 codes, 0 = no data (checked)."""
        from benmm.archive.refmaps import read_archive_map

        return read_archive_map(self, self.patch_id(name))

    def bands(self, name: str, bands: tuple[str, ...] | None = None) -> dict[str, np.ndarray]:
        """Bands of pair ``name`` by band name (all 14 by default)."""
        from benmm.bands import resolve_bands

        chosen = resolve_bands(list(bands)) if bands is not None else S2_BANDS + S1_BANDS
        pid = self.patch_id(name)
        row = self.metadata.iloc[self._row[pid]]
        s2 = tuple(b for b in chosen if b in S2_BANDS)
        s1 = tuple(b for b in chosen if b in S1_BANDS)
        out: dict[str, np.ndarray] = {}
        if s2:
            out |= self.read_key(pid, s2)
        if s1:
            out |= self.read_key(str(row["s1_name"]), s1)
        return out

    # -- pairs -----------------------------------------------------------------------------------
    def labels19(self, name: str) -> list[str]:
        """The pair's 19-class labels in official order; :class:`ArchiveError` for unknown names."""
        raw = self.metadata.iloc[self._row[self.patch_id(name)]]["labels"]
        names = [str(x) for x in (raw if raw is not None else [])]
        index = {n: i for i, n in enumerate(L.LABELS_19)}
        unknown = [n for n in names if n not in index]
        if unknown:
            raise ArchiveError(f"{self.root / METADATA}: {name}: {L.unknown_label(unknown[0], 19)}")
        return sorted(set(names), key=index.__getitem__)

    def __getitem__(self, name: str) -> Pair:
        pid = self.patch_id(name)
        row = self.metadata.iloc[self._row[pid]]
        labels19 = self.labels19(pid)
        try:
            split: str | None = normalize_split(str(row["split"]))
        except BenmmError:
            raise ArchiveError(f"{self.root / METADATA}: {pid}: unknown split {row['split']!r}") from None
        pair = Pair(
            name=pid, s1_name=str(row["s1_name"]), bands=self.bands(pid), labels19=labels19, labels43=None,
            split=split, country=str(row["country"]), s2v1_name=str(row["s2v1_name"]),
            contains_seasonal_snow=bool(row["contains_seasonal_snow"]),
            contains_cloud_or_shadow=bool(row["contains_cloud_or_shadow"]),
            meta={"source": "reBEN", "backend": self.backend, "excluded": bool(row["excluded"])},
        )
        if self.lists:
            from benmm.archive.splits import v1_info

            info = v1_info(pair.s2v1_name or "")
            if info is not None:
                pair.season = info.season
        return pair

    def validate(self, name: str) -> list[Problem]:
        """Every problem of one pair: metadata (labels, split, pairing) and image data."""
        pid = self.patch_id(name)
        row = self.metadata.iloc[self._row[pid]]
        meta_path = str(self.root / (EXCLUDED_METADATA if row["excluded"] else METADATA))
        problems: list[Problem] = []
        try:
            self.labels19(pid)
        except ArchiveError as exc:
            problems.append(Problem(meta_path, str(exc).split(": ", 1)[-1], pid))
        if str(row["split"]) not in ("train", "validation", "val", "test"):
            problems.append(Problem(meta_path, f"{pid}: unknown split {row['split']!r}", pid))
        from benmm.names import parse

        try:
            if parse(pid).xy != parse(str(row["s1_name"])).xy:
                problems.append(Problem(meta_path, f"{pid}: s1_name {row['s1_name']} has another x_y", pid))
        except BenmmError as exc:
            problems.append(Problem(meta_path, str(exc), pid))
        if self._lmdb_problem() is not None:
            return problems  # the LMDB as a whole is unreadable: reported once, by archive_problems
        checks: list[Any] = [lambda: self.read_key(pid, S2_BANDS),
                             lambda: self.read_key(str(row["s1_name"]), S1_BANDS)]
        if self.has_reference_maps:
            checks.append(lambda: self.reference_map(pid))
        for check in checks:
            try:
                check()
            except ArchiveError as exc:
                text = str(exc)
                path, _, reason = text.partition(": ")
                problems.append(Problem(path, reason or text, pid))
        return problems

    def _lmdb_problem(self) -> Problem | None:
        """Why the LMDB cannot be read at all (e.g. a truncated data.mdb), or None; checked once (not
        per validated pair: a broken LMDB would otherwise be opened again for every pair)."""
        if self._lmdb_checked is None:
            problem = None
            if self.backend == "lmdb" and self.lmdb_dir is not None:
                try:
                    _env(self.lmdb_dir)
                except ArchiveError as exc:
                    problem = Problem(str(self.lmdb_dir / "data.mdb"),
                                      str(exc).removeprefix(f"{self.lmdb_dir}: "))
            self._lmdb_checked = (problem,)
        return self._lmdb_checked[0]

    def archive_problems(self) -> list[Problem]:
        problem = self._lmdb_problem()
        return [problem] if problem is not None else []

    def __repr__(self) -> str:
        return f"V2Archive({str(self.root)!r}, pairs={len(self)}, backend={self.backend!r})"
