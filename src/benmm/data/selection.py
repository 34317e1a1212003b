"""Which pairs and labels a dataset serves: the rows of a store's metadata table kept by split,
recommended set, country and season (:func:`select`), a seeded training fraction (:func:`subsample`),
and their multi-hot labels (:func:`multi_hot`). Vectorised over the table; no per-row Python."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Final

import numpy as np
import pandas as pd

from benmm.archive.splits import normalize_split
from benmm.archive.splits import seasons as official_seasons
from benmm.data.place import DatasetError
from benmm.errors import LabelError, SplitError
from benmm.labels import ORDERS, label_names
from benmm.labels import multi_hot as label_multi_hot

COUNTRIES: Final = ("Austria", "Belgium", "Finland", "Ireland", "Kosovo", "Lithuania", "Luxembourg",
                    "Portugal", "Serbia", "Switzerland")
SEASONS: Final = ("Spring", "Summer", "Fall", "Winter")
_SEASON_ALIASES: Final = {"autumn": "Fall"}


def _check_names(given: Iterable[str] | str, valid: Sequence[str], what: str,
                 aliases: dict[str, str] | None = None) -> list[str]:
    lookup = {v.lower(): v for v in valid} | (aliases or {})
    items = [given] if isinstance(given, str) else list(given)
    out = []
    for item in items:
        try:
            out.append(lookup[str(item).lower()])
        except KeyError:
            raise DatasetError(f"unknown {what} {item!r}; valid {what}s: {', '.join(valid)}") from None
    return out


def select(meta: pd.DataFrame, split: str | None, recommended: bool,
           countries: Iterable[str] | str | None, seasons: Iterable[str] | str | None,
           where: str) -> pd.DataFrame:
    """Rows of the metadata table that a dataset keeps, in store order."""
    keep = np.ones(len(meta), dtype=bool)
    if split is not None:
        if "split" not in meta:
            raise SplitError(f"{where}: the store has no split column; use split=None")
        column = meta["split"]
        spelled = {v: normalize_split(str(v), strict=False) for v in column.dropna().unique()}
        keep &= column.map(spelled).to_numpy() == split
    if recommended:
        for flag in ("contains_seasonal_snow", "contains_cloud_or_shadow"):
            if flag in meta:
                keep &= ~meta[flag].fillna(False).to_numpy(dtype=bool)
        keep &= meta["labels"].map(len).to_numpy() > 0  # the 57 patches without a 19-class label
    if countries is not None:
        wanted = _check_names(countries, COUNTRIES, "country")
        if "country" not in meta:
            raise DatasetError(f"{where}: the store has no country column")
        keep &= meta["country"].isin(wanted).to_numpy()
    if seasons is not None:
        wanted = _check_names(seasons, SEASONS, "season", _SEASON_ALIASES)
        if "season" in meta and meta["season"].notna().any():
            season = meta["season"]
        elif "s2v1_name" in meta:
            season = pd.Series(official_seasons(meta["s2v1_name"].tolist()), index=meta.index, dtype=object)
        else:
            raise DatasetError(f"{where}: the store has neither a season nor an s2v1_name column")
        keep &= season.isin(wanted).to_numpy()
    return meta.loc[keep].reset_index(drop=True)


def subsample(meta: pd.DataFrame, fraction: float, seed: int, where: str) -> pd.DataFrame:
    """A seeded random ``fraction`` of the rows (``round(fraction * n)``, at least one), in store order:
    the same store, filters, fraction and seed always give the same pairs."""
    f = float(fraction)
    if not 0.0 < f <= 1.0:
        raise DatasetError(f"{where}: fraction {fraction!r} must be in (0, 1] (e.g. 0.01 for 1% of a split)")
    if f == 1.0 or len(meta) == 0:
        return meta
    k = max(1, round(f * len(meta)))
    keep = np.sort(np.random.default_rng(int(seed)).choice(len(meta), size=k, replace=False))
    return meta.iloc[keep].reset_index(drop=True)


def multi_hot(meta: pd.DataFrame, n: int, order: str, where: str) -> np.ndarray:
    """uint8 [rows, n] multi-hot labels of a metadata table (:func:`benmm.labels.multi_hot`): the
    19-class labels (43-class names converted), or the v1 43-class ones from ``labels43``."""
    if n not in (19, 43):
        raise LabelError(f"label set {n!r} does not exist; valid label sets: 19, 43")
    if order not in ORDERS:
        raise LabelError(f"label order {order!r} does not exist; valid orders: {', '.join(ORDERS)}")
    if n == 43:
        if "labels43" not in meta or (len(meta) and meta["labels43"].isna().all()):
            raise LabelError(f"{where}: this store has no 43-class labels (a reBEN store only has the "
                             "19-class ones); use labels=19, or encode the v1 archive to get labels43")
        missing = meta["labels43"].isna().to_numpy()
        if missing.any():
            first = meta["patch_id"].iloc[int(np.argmax(missing))]
            raise LabelError(f"{where}: {int(missing.sum())} pairs have no 43-class labels "
                             f"(first: {first}); use labels=19")
    column = meta["labels"] if n == 19 else meta["labels43"]
    return label_multi_hot(column, label_names(n, order), to19=n == 19, where=where,
                           row_names=meta["patch_id"].tolist() if "patch_id" in meta else None)
