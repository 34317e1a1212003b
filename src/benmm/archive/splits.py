"""Official lists of BigEarthNet v1: splits, exclusions, country/season of all 590,326 pairs.

The lists ship as ``.csv.bz2`` package data (see ``resources/ATTRIBUTION.md``). They load lazily and
are cached per process. Decompressing the 4 MB pair list takes ~2 s (bz2 is slow), so the parsed
pair table is also cached on disk as an Arrow file keyed by the hash of the shipped lists
(:func:`benmm.cache.cache_dir`; ``BENMM_CACHE_DIR=off`` disables it): later processes load it in
~0.1 s. The bz2 files stay the source of truth; a cache that is missing, stale or unreadable is
rebuilt from them.

Split names: v1 files say ``val``, reBEN says ``validation``; benmm accepts both and speaks ``val``.
"""

from __future__ import annotations

import bz2
import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cache, lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Final, overload

import numpy as np

from benmm.atomic import atomic_path
from benmm.cache import cache_dir
from benmm.errors import SplitError
from benmm.resources import resource_path

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa

SPLITS: Final = ("train", "val", "test")
SPLIT_ALIASES: Final = {"train": "train", "val": "val", "validation": "val", "test": "test"}
REBEN_SPLIT_NAMES: Final = {"train": "train", "val": "validation", "test": "test"}
SPLIT_FILES: Final = {"train": "train.csv.bz2", "val": "val.csv.bz2", "test": "test.csv.bz2"}
EXCLUSION_FILES: Final = {
    "snow": "patches_with_seasonal_snow.csv.bz2",
    "cloud": "patches_with_cloud_and_shadow.csv.bz2",
    "no19": "patches_with_no_19_class_targets.csv.bz2",
}
EXCLUSION_NAMES: Final = {
    "snow": "seasonal snow",
    "cloud": "cloud or cloud shadow",
    "no19": "no 19-class label",
}
PAIRS_FILE: Final = "s1_s2_name_country_season.csv.bz2"
PAIR_COLUMNS: Final = ("s1_name", "s2_name", "country", "season")
_CACHE_FORMAT: Final = 1


@overload
def normalize_split(name: str, strict: bool = True) -> str: ...


@overload
def normalize_split(name: None, strict: bool = True) -> None: ...


def normalize_split(name: str | None, strict: bool = True) -> str | None:
    """The one split-name normaliser: ``"train"``, ``"val"`` or ``"test"`` for any accepted spelling
    (``validation``, any case, surrounding spaces); ``None`` (all pairs) stays ``None``.

    An unknown name raises :class:`SplitError`, or with ``strict=False`` (for values read from a table,
    which may hold other labels) comes back stripped and lower-cased.
    """
    if name is None:
        return None
    key = str(name).strip().lower()
    if key in SPLIT_ALIASES:
        return SPLIT_ALIASES[key]
    if not strict:
        return key
    raise SplitError(f"unknown split {name!r}; valid splits: train, val (or validation), test, "
                     "or all / None for every pair")


def split_column_value(name: str) -> str:
    """A split as reBEN's metadata column spells it (``validation``, not ``val``)."""
    return REBEN_SPLIT_NAMES[normalize_split(name)]


def _read_bz2(filename: str) -> bytes:
    path = resource_path(filename)
    try:
        return bz2.decompress(path.read_bytes())
    except (OSError, ValueError) as exc:
        raise SplitError(f"{path}: cannot read the shipped list ({exc}); reinstall benmm") from None


@cache
def _names(filename: str) -> frozenset[str]:
    """A one-name-per-line list (no header)."""
    return frozenset(_read_bz2(filename).decode("ascii").split())


def official_split(name: str) -> frozenset[str]:
    """The v1 S2 names of an official 19-class split (train 269,695 / val 123,723 / test 125,866)."""
    return _names(SPLIT_FILES[normalize_split(name)])


def official_splits() -> dict[str, frozenset[str]]:
    """All three official splits, keyed ``train``, ``val``, ``test``."""
    return {split: official_split(split) for split in SPLITS}


def exclusions(kind: str | None = None) -> frozenset[str]:
    """S2 names of one exclusion list (``snow``, ``cloud``, ``no19``), or of all three for None."""
    if kind is None:
        return frozenset().union(*(_names(f) for f in EXCLUSION_FILES.values()))
    if kind not in EXCLUSION_FILES:
        raise SplitError(f"unknown exclusion list {kind!r}; valid: {', '.join(EXCLUSION_FILES)}")
    return _names(EXCLUSION_FILES[kind])


def exclusion_lists() -> dict[str, frozenset[str]]:
    """The three official exclusion lists keyed ``snow`` (61,707), ``cloud`` (9,280), ``no19`` (57)."""
    return {kind: exclusions(kind) for kind in EXCLUSION_FILES}


# ---------------------------------------------------------------------------------------------
# the pair table (590,326 rows), parsed once and cached on disk


def _lists_key() -> str:
    h = hashlib.sha256(f"benmm-pairs-{_CACHE_FORMAT}".encode())
    for filename in (PAIRS_FILE, *SPLIT_FILES.values(), *EXCLUSION_FILES.values()):
        h.update(resource_path(filename).read_bytes())
    return h.hexdigest()[:20]


def _build_pairs() -> pa.Table:
    """Parse the shipped lists into one table sorted by s2_name (the slow path, ~2-3 s)."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.csv as pcsv

    table = pcsv.read_csv(pa.BufferReader(_read_bz2(PAIRS_FILE)),
                          convert_options=pcsv.ConvertOptions(column_types=dict.fromkeys(PAIR_COLUMNS,
                                                                                         pa.string())))
    if tuple(table.column_names) != PAIR_COLUMNS:
        raise SplitError(f"{resource_path(PAIRS_FILE)}: unexpected columns {table.column_names}")
    table = table.sort_by("s2_name")
    s2 = table.column("s2_name")
    split = pa.nulls(len(table), pa.string())
    for name in SPLITS:
        split = pc.if_else(pc.is_in(s2, value_set=pa.array(sorted(official_split(name)))), name, split)
    table = table.append_column("split", split)
    for kind in EXCLUSION_FILES:
        table = table.append_column(kind, pc.is_in(s2, value_set=pa.array(sorted(exclusions(kind)))))
    for col in ("country", "season", "split"):
        idx = table.column_names.index(col)
        table = table.set_column(idx, col, pc.dictionary_encode(table.column(col)))
    return table


def _load_cached(path: Path) -> pa.Table | None:
    import pyarrow.feather as feather

    try:
        return feather.read_table(path)
    except Exception:  # a stale or damaged cache is rebuilt, never trusted
        return None


def _store_cache(path: Path, table: pa.Table) -> None:
    import pyarrow.feather as feather

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path, fsync=False) as tmp:
            feather.write_feather(table, tmp, compression="zstd")
    except OSError:
        pass  # an unwritable cache only costs time


def load_pairs(use_cache: bool = True) -> pa.Table:
    """The pair table as Arrow, sorted by s2_name: the four official columns plus ``split``
    (train/val/test or null) and the exclusion flags ``snow``, ``cloud``, ``no19``."""
    folder = cache_dir() if use_cache else None
    if folder is None:
        return _build_pairs()
    path = folder / f"v1-pairs-{_lists_key()}.arrow"
    table = _load_cached(path) if path.is_file() else None
    if table is None or table.num_rows == 0:
        table = _build_pairs()
        _store_cache(path, table)
    return table


@cache
def _pairs() -> pa.Table:
    return load_pairs()


def pairs_table() -> pd.DataFrame:
    """All 590,326 v1 pairs: ``s1_name, s2_name, country, season`` (plus ``split``, ``snow``, ``cloud``,
    ``no19``), sorted by s2_name. A fresh DataFrame each call (cheap: the Arrow table is cached)."""
    df = _pairs().to_pandas()
    for col in ("s1_name", "s2_name"):
        df[col] = df[col].astype(object)
    return df


def all_pairs() -> frozenset[str]:
    """The S2 names of all 590,326 v1 pairs."""
    return frozenset(_pairs().column("s2_name").to_pylist())


def recommended() -> frozenset[str]:
    """All pairs minus the three exclusion lists (computed, 519,284 = the union of the official splits)."""
    return all_pairs() - exclusions()


# ---------------------------------------------------------------------------------------------
# fast per-name lookup (the encoder asks once per pair)


@dataclass(frozen=True)
class V1Info:
    """What the official lists say about one v1 S2 patch."""

    s2_name: str
    s1_name: str
    country: str
    season: str
    split: str | None
    snow: bool
    cloud: bool
    no19: bool


class _Lookup:
    """Sorted fixed-width byte arrays + searchsorted: ~20 MB per process, microseconds per name.

    A dict of 590k str keys would take ~4x the memory in every encoder worker.
    """

    def __init__(self, table: pa.Table) -> None:
        self.s2 = np.array(table.column("s2_name").to_pylist(), dtype="S")
        self.s1 = np.array(table.column("s1_name").to_pylist(), dtype="S")
        self.codes: dict[str, np.ndarray] = {}
        self.values: dict[str, list[str | None]] = {}
        for col in ("country", "season", "split"):
            arr = table.column(col).combine_chunks()
            self.codes[col] = arr.indices.to_numpy(zero_copy_only=False)
            self.values[col] = arr.dictionary.to_pylist()
        self.flags = {k: table.column(k).to_numpy() for k in EXCLUSION_FILES}

    def indices(self, s2_names: Sequence[str]) -> np.ndarray:
        """Row of each S2 name in the table, -1 where the lists lack it: one ``searchsorted`` for all
        names (the one vectorised name lookup over the pair table)."""
        valid = np.array([isinstance(n, str) and n.isascii() for n in s2_names], dtype=bool)
        out = np.full(len(s2_names), -1, dtype=np.int64)
        if not valid.any():
            return out
        keys = np.array([n for n, ok in zip(s2_names, valid, strict=True) if ok], dtype="S")
        idx = np.minimum(np.searchsorted(self.s2, keys), len(self.s2) - 1)
        out[valid] = np.where(self.s2[idx] == keys, idx, -1)
        return out

    def index(self, s2_name: str) -> int | None:
        key = s2_name.encode("ascii", "replace")
        i = int(np.searchsorted(self.s2, key))
        return i if i < len(self.s2) and self.s2[i] == key else None

    def value(self, col: str, i: int) -> str | None:
        code = self.codes[col][i]
        return None if code != code else self.values[col][int(code)]  # NaN code = null split

    def info(self, s2_name: str) -> V1Info | None:
        i = self.index(s2_name)
        if i is None:
            return None
        return V1Info(
            s2_name=s2_name, s1_name=self.s1[i].decode(), country=str(self.value("country", i)),
            season=str(self.value("season", i)), split=self.value("split", i),
            snow=bool(self.flags["snow"][i]), cloud=bool(self.flags["cloud"][i]),
            no19=bool(self.flags["no19"][i]),
        )


@cache
def _lookup() -> _Lookup:
    return _Lookup(_pairs())


def v1_info(s2_name: str) -> V1Info | None:
    """Partner, country, season, split and exclusion flags of a v1 S2 name; None if not in the lists."""
    return _lookup().info(s2_name)


def s1_partners(s2_names: Iterable[str]) -> dict[str, str]:
    """S2 -> S1 from the official pair list for the given names (names not in the list are left out)."""
    table = _lookup()
    names = list(s2_names)
    idx = table.indices(names)
    return {names[i]: table.s1[idx[i]].decode() for i in np.flatnonzero(idx >= 0)}


# ---------------------------------------------------------------------------------------------
# reBEN (v2) splits


def reben_splits(metadata: pd.DataFrame, column: str = "split", name_column: str = "patch_id"
                 ) -> dict[str, frozenset[str]]:
    """Split -> names from a reBEN-style metadata table (``validation`` becomes ``val``)."""
    for col in (column, name_column):
        if col not in metadata.columns:
            have = ", ".join(map(str, metadata.columns))
            raise SplitError(f"metadata has no {col!r} column; columns: {have}")
    out: dict[str, set[str]] = {s: set() for s in SPLITS}
    for value in metadata[column].dropna().unique():
        out[normalize_split(str(value))].update(metadata.loc[metadata[column] == value, name_column])
    return {k: frozenset(v) for k, v in out.items()}


def seasons(s2_names: Iterable[str]) -> list[str | None]:
    """Season of each v1 S2 name from the official pair list (None where the list lacks the name).

    Vectorised (:meth:`_Lookup.indices`); repeated calls with the same names (every ``Store.open`` of
    one reBEN folder) are answered from a small per-process cache.
    """
    return list(_seasons(tuple(s2_names)))


@lru_cache(maxsize=4)
def _seasons(s2_names: tuple[str, ...]) -> tuple[str | None, ...]:
    table = _lookup()
    idx = table.indices(s2_names)
    codes, values = table.codes["season"], table.values["season"]
    if codes.dtype.kind == "f":  # a null season in the lists (never in the shipped ones): one by one
        return tuple(table.value("season", int(i)) if i >= 0 else None for i in idx)
    out = np.full(len(idx), None, dtype=object)
    hit = idx >= 0
    out[hit] = np.asarray(values, dtype=object)[codes[idx[hit]]]
    return tuple(out.tolist())
