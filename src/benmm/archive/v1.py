"""The BigEarthNet v1.0 folder trees: BigEarthNet-v1.0/ (S2) + BigEarthNet-S1-v1.0/ (S1).

One folder per patch holding one GeoTIFF per band (``<name>_B01.tif`` .. ``<name>_VV.tif``) and
``<name>_labels_metadata.json``. The pair id is the S2 name. Pairing, most authoritative first:
the S1 JSON's ``corresponding_s2_patch``; the official pair list; a unique x_y match. Reading every
S1 JSON at open time is cheap for small archives but takes minutes for all 590k, so archives with
more than ``JSON_PAIRING_LIMIT`` S1 folders are paired from the official list first, and the JSON's
``corresponding_s2_patch`` is still checked for every pair when it is read or validated.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Final, NoReturn

import numpy as np

from benmm import labels as L
from benmm.archive.base import Pair, Problem, UnknownPatchError
from benmm.archive.tiff import read_band, read_band_into
from benmm.archive.v1_files import (
    JSON_SUFFIX,
    S1_DIR_NAMES,
    S2_DIR_NAMES,
    _check_meta,
    _coords,
    _list_patches,
    _load_json,
    find_v1_roots,
)
from benmm.bands import S1_BANDS, S2_BANDS
from benmm.errors import ArchiveError, PatchNameError
from benmm.names import parse

__all__ = ["JSON_PAIRING_LIMIT", "S1_DIR_NAMES", "S2_DIR_NAMES", "V1Archive", "find_v1_roots",
           "read_band", "read_pair", "validate_pair"]

JSON_PAIRING_LIMIT: Final = 20_000


def _read_bands(folder: str, name: str, bands: tuple[str, ...], out: dict[str, np.ndarray],
                problems: list[Problem], pair: str, into: Mapping[str, memoryview] | None,
                drop_cache: bool) -> None:
    prefix = f"{folder}{os.sep}{name}_"  # plain strings: pathlib costs ~20 us per pair here
    for band in bands:
        path = f"{prefix}{band}.tif"
        try:
            if into is None:
                out[band] = read_band(path, band, drop_cache)
            else:
                out[band] = read_band_into(path, band, into[band], drop_cache)
        except ArchiveError as exc:
            problems.append(Problem(path, str(exc).removeprefix(f"{path}: "), pair))


def _load_pair(s2_dir: str, s1_dir: str | None, strict: bool, lists: bool,
               into: Mapping[str, memoryview] | None = None, drop_cache: bool = False
               ) -> tuple[Pair | None, list[Problem]]:
    """Read a pair, collecting every problem instead of stopping at the first (folders as strings)."""
    s2_dir = s2_dir.rstrip(os.sep) or s2_dir
    name = os.path.basename(s2_dir)
    problems: list[Problem] = []
    if not os.path.isdir(s2_dir):
        return None, [Problem(s2_dir, "Sentinel-2 patch folder is missing", name)]
    try:
        if parse(name).kind != "s2v1":
            problems.append(Problem(s2_dir, "folder name is not a v1 Sentinel-2 patch name", name))
    except PatchNameError as exc:
        problems.append(Problem(s2_dir, str(exc), name))
    if s1_dir is not None:
        s1_dir = s1_dir.rstrip(os.sep) or s1_dir
    if s1_dir is None or not os.path.isdir(s1_dir):
        problems.append(Problem(s1_dir if s1_dir is not None else s2_dir,
                                "Sentinel-1 partner folder is missing", name))
        s1_dir = None
    bands: dict[str, np.ndarray] = {}
    _read_bands(s2_dir, name, S2_BANDS, bands, problems, name, into, drop_cache)
    s2_json_path = os.path.join(s2_dir, f"{name}{JSON_SUFFIX}")
    s2_meta, prob = _load_json(s2_json_path)
    labels43 = None
    if prob:
        problems.append(Problem(prob.path, prob.reason, name))
    elif s2_meta is not None:
        found: list[Problem] = []
        labels43 = _check_meta(s2_meta, s2_json_path, found)
        problems += [Problem(p.path, p.reason, name) for p in found]
    s1_meta: dict[str, Any] | None = None
    s1_name = os.path.basename(s1_dir) if s1_dir is not None else ""
    if s1_dir is not None:
        _read_bands(s1_dir, s1_name, S1_BANDS, bands, problems, name, into, drop_cache)
        s1_json_path = os.path.join(s1_dir, f"{s1_name}{JSON_SUFFIX}")
        s1_meta, prob = _load_json(s1_json_path)
        if prob:
            problems.append(Problem(prob.path, prob.reason, name))
        elif s1_meta is not None:
            found = []
            s1_labels = _check_meta(s1_meta, s1_json_path, found)
            problems += [Problem(p.path, p.reason, name) for p in found]
            points_to = s1_meta.get("corresponding_s2_patch")
            if strict and points_to != name:
                problems.append(Problem(s1_json_path, f"corresponding_s2_patch is {points_to!r}, "
                                        f"but this S1 patch was paired with {name!r}", name))
            if strict and s1_labels is not None and labels43 is not None and s1_labels != labels43:
                problems.append(Problem(s1_json_path, "labels differ from the Sentinel-2 partner's "
                                        f"({os.path.basename(s2_json_path)})", name))
    if problems or labels43 is None or s2_meta is None:
        return None, problems
    return _make_pair(name, s1_name, bands, labels43, s2_meta, s1_meta or {}, lists), problems


def _make_pair(name: str, s1_name: str, bands: dict[str, np.ndarray], labels43: list[str],
               s2_meta: dict[str, Any], s1_meta: dict[str, Any], lists: bool) -> Pair:
    meta: dict[str, Any] = {
        "coordinates": _coords(s2_meta), "projection": s2_meta.get("projection"),
        "tile_source": s2_meta.get("tile_source"), "acquisition_date": s2_meta.get("acquisition_date"),
        "s1_coordinates": _coords(s1_meta), "s1_projection": s1_meta.get("projection"),
        "scene_source": s1_meta.get("scene_source"), "acquisition_time": s1_meta.get("acquisition_time"),
    }
    pair = Pair(name=name, s1_name=s1_name, bands=bands, labels19=L.to_19(labels43), labels43=labels43,
                s2v1_name=name, meta=meta)
    if lists:
        from benmm.archive.splits import v1_info

        info = v1_info(name)
        if info is not None:
            pair.split, pair.country, pair.season = info.split, info.country, info.season
            pair.contains_seasonal_snow, pair.contains_cloud_or_shadow = info.snow, info.cloud
            meta["no_19_class_label"] = info.no19
    return pair


def _raise(problems: list[Problem]) -> NoReturn:
    head = "; ".join(str(p) for p in problems[:5])
    more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
    raise ArchiveError(head + more)


def read_pair(s2_dir: str | os.PathLike[str], s1_dir: str | os.PathLike[str], validate: bool = True,
              lists: bool = True, into: Mapping[str, memoryview] | None = None,
              drop_cache: bool = False) -> Pair:
    """Read one v1 pair: all 14 bands at native size, labels (43 and 19), metadata.

    ``validate`` also checks that the S1 JSON points back at this S2 patch and carries the same
    labels (bands, shapes, dtypes, JSONs and label names are always checked). ``lists`` fills
    split/country/season/exclusion flags from the official lists. Raises :class:`ArchiveError` naming
    the file(s) at fault. ``into`` (band -> buffer of the band's exact byte size): the bands are read
    into those buffers and returned as views of them; ``drop_cache``: the band files will not be read
    again (both: see :func:`benmm.archive.tiff.read_band_into`).
    """
    pair, problems = _load_pair(os.fspath(s2_dir), os.fspath(s1_dir), strict=validate, lists=lists,
                                into=into, drop_cache=drop_cache)
    if problems or pair is None:
        _raise(problems or [Problem(str(s2_dir), "unreadable pair")])
    return pair


def validate_pair(s2_dir: str | os.PathLike[str], s1_dir: str | os.PathLike[str] | None) -> list[Problem]:
    """Every problem of one pair (empty list when it is valid), an S1 band without any value included."""
    pair, problems = _load_pair(os.fspath(s2_dir), os.fspath(s1_dir) if s1_dir else None, strict=True,
                                lists=False)
    if pair is not None and s1_dir is not None:
        for band in S1_BANDS:
            arr = pair.bands.get(band)
            if arr is not None and np.isnan(arr).all():
                path = os.path.join(os.fspath(s1_dir), f"{os.path.basename(os.fspath(s1_dir))}_{band}.tif")
                problems.append(Problem(path, f"band {band} holds no value (every pixel is NaN)", pair.name))
    return problems


def _s1_target(s1_dir: Path) -> str | None:
    data, _ = _load_json(s1_dir / f"{s1_dir.name}{JSON_SUFFIX}")
    target = data.get("corresponding_s2_patch") if data else None
    return target if isinstance(target, str) else None


class V1Archive:
    """A v1 archive: ``len``, iteration over pair ids (S2 names), ``arc[name] -> Pair``."""

    kind = "v1"

    def __init__(self, root: str | os.PathLike[str], pairing: str = "auto") -> None:
        if pairing not in ("auto", "json", "list"):
            raise ArchiveError(f"unknown pairing {pairing!r}; use auto, json or list")
        self.root = Path(root)
        self.s2_root, self.s1_root = find_v1_roots(root)
        self._problems: list[Problem] = []
        self._names = _list_patches(self.s2_root, "s2v1", self._problems)
        s1_names = _list_patches(self.s1_root, "s1", self._problems)
        self._s1_of, self.pairing_counts = self._pair(s1_names, pairing)
        s2_set = set(self._s1_of)
        for s2 in self._names:
            if s2 not in s2_set:
                self._problems.append(Problem(str(self.s2_root / s2), "no Sentinel-1 partner found", s2))
        claimed = set(self._s1_of.values())
        s2_names = set(self._names)
        for s1 in s1_names:
            if s1 not in claimed:
                target = _s1_target(self.s1_root / s1)
                if target and target in s2_names:  # the partner exists and has another S1 folder
                    what = (f"a second Sentinel-1 folder for {target} (corresponding_s2_patch); that pair "
                            f"uses {self._s1_of.get(target, 'another one')}: remove the duplicate")
                elif target:
                    what = f"its partner {target} (corresponding_s2_patch) is missing"
                else:
                    what = "no Sentinel-2 partner found"
                self._problems.append(Problem(str(self.s1_root / s1), what))

    def _pair(self, s1_names: list[str], pairing: str) -> tuple[dict[str, str], dict[str, int]]:
        s2_set = set(self._names)
        out: dict[str, str] = {}
        counts = {"json": 0, "list": 0, "xy": 0}
        use_json = pairing == "json" or (pairing == "auto" and len(s1_names) <= JSON_PAIRING_LIMIT)
        if use_json:
            for s1 in s1_names:
                target = _s1_target(self.s1_root / s1)
                if target in s2_set and target not in out:
                    out[target] = s1
                    counts["json"] += 1
        rest = [s2 for s2 in self._names if s2 not in out]
        s1_set = set(s1_names)
        if rest and len(out) < len(s1_names):
            from benmm.archive.splits import s1_partners

            taken = set(out.values())
            for s2, s1 in s1_partners(rest).items():
                if s1 in s1_set and s1 not in taken:
                    out[s2] = s1
                    taken.add(s1)
                    counts["list"] += 1
        rest = [s2 for s2 in self._names if s2 not in out]
        if rest:  # last resort: a unique x_y match among the S1 folders nobody claimed
            taken = set(out.values())
            by_xy: dict[tuple[int, int], list[str]] = {}
            for s1 in s1_names:
                if s1 not in taken:
                    by_xy.setdefault(parse(s1).xy, []).append(s1)
            for s2 in rest:
                cands = by_xy.get(parse(s2).xy, [])
                if len(cands) == 1:
                    out[s2] = cands[0]
                    counts["xy"] += 1
        return out, counts

    def __len__(self) -> int:
        return len(self._names)

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name in self._names_set

    @property
    def _names_set(self) -> frozenset[str]:
        cached = self.__dict__.get("_names_frozen")
        if cached is None:
            cached = self.__dict__["_names_frozen"] = frozenset(self._names)
        return cached

    def names(self) -> list[str]:
        return list(self._names)

    def s1_name(self, name: str) -> str | None:
        return self._s1_of.get(self.pair_name(name))

    def pair_name(self, name: str) -> str:
        """The pair id (S2 name) of ``name``, which may also be the pair's S1 name."""
        if name in self._names_set:
            return name
        by_s1 = self.__dict__.get("_s2_of")
        if by_s1 is None:
            by_s1 = self.__dict__["_s2_of"] = {s1: s2 for s2, s1 in self._s1_of.items()}
        if name in by_s1:
            return str(by_s1[name])
        import difflib

        close = difflib.get_close_matches(name, self._names, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise UnknownPatchError(f"{name!r} is not a pair of the archive at {self.root}{hint}")

    def pair_dirs(self, name: str) -> tuple[Path, Path]:
        """(S2 folder, S1 folder) of pair ``name`` (its S2 or S1 name)."""
        name = self.pair_name(name)
        s1 = self._s1_of.get(name)
        if s1 is None:
            raise ArchiveError(f"{self.s2_root / name}: no Sentinel-1 partner found in {self.s1_root}")
        return self.s2_root / name, self.s1_root / s1

    def read(self, name: str, validate: bool = True, lists: bool = True) -> Pair:
        s2_dir, s1_dir = self.pair_dirs(name)
        return read_pair(s2_dir, s1_dir, validate=validate, lists=lists)

    def __getitem__(self, name: str) -> Pair:
        return self.read(name)

    def validate(self, name: str) -> list[Problem]:
        """Every problem of pair ``name`` (bands, shapes, dtypes, JSONs, labels, partner)."""
        name = self.pair_name(name)
        s1 = self._s1_of.get(name)
        return validate_pair(self.s2_root / name, self.s1_root / s1 if s1 else None)

    def archive_problems(self) -> list[Problem]:
        """Problems of the archive as a whole: stray folders, S2 without S1, S1 without S2."""
        return list(self._problems)

    def labels43(self, name: str) -> list[str]:
        """The 43-class labels of a pair from its S2 JSON (cheap: no band is read)."""
        name = self.pair_name(name)
        path = self.s2_root / name / f"{name}{JSON_SUFFIX}"
        data, prob = _load_json(path)
        if prob or data is None:
            raise ArchiveError(str(prob))
        found: list[Problem] = []
        out = _check_meta(data, path, found)
        if out is None:
            _raise(found)
        return out

    def __repr__(self) -> str:
        return f"V1Archive({str(self.root)!r}, pairs={len(self)})"


def pair_of_patch_folder(path: str | os.PathLike[str]) -> Pair:
    """The pair of one v1 patch folder (S2 or S1): its archive root is two levels up
    (``<root>/<S2 or S1 folder>/<patch>``), so the partner of the other modality is found as the archive
    pairs it. :class:`ArchiveError` when the folder does not sit in such a tree."""
    folder = Path(path)
    root = folder.parent.parent
    try:
        arc = V1Archive(root)
        name = arc.pair_name(folder.name)
    except (ArchiveError, KeyError):
        raise ArchiveError(f"{folder}: a patch folder must sit in a v1 archive (<root>/BigEarthNet-v1.0/"
                           "<patch> with the S1 partner in <root>/BigEarthNet-S1-v1.0/) so both "
                           "modalities can be read") from None
    return arc[name]
