"""Selecting pairs by place: a lon/lat bounding box over the store's footprints, and the check that a
place filter (``countries=``, ``bbox=``) matches some pair of the store at all.

Footprints come from the store's GeoParquet metadata (:mod:`benmm.store.geoparquet`); a pair is kept
when its footprint intersects the box (edges included). A store without footprints (one encoded from a
reBEN LMDB) cannot be filtered by ``bbox``: that is an error naming the reason, never an empty set.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from benmm.errors import BenmmError
from benmm.store.geoparquet import extent_by_country, store_bounds

if TYPE_CHECKING:
    from benmm.store import Store

BBox = tuple[float, float, float, float]


class DatasetError(BenmmError, ValueError):
    """An unknown filter value (country, season, bounding box) or a store that lacks what was asked for."""


def check_bbox(bbox: Sequence[float]) -> BBox:
    """``(lon_min, lat_min, lon_max, lat_max)`` in degrees, checked."""
    try:
        box = tuple(float(v) for v in bbox)
    except (TypeError, ValueError):
        raise DatasetError(f"bbox={bbox!r} is not four numbers; give (lon_min, lat_min, lon_max, lat_max) "
                           "in degrees") from None
    if len(box) != 4 or not all(math.isfinite(v) for v in box):
        raise DatasetError(f"bbox={bbox!r} is not four finite numbers; give (lon_min, lat_min, lon_max, "
                           "lat_max) in degrees")
    lon0, lat0, lon1, lat1 = box
    if not (-180 <= lon0 < lon1 <= 180 and -90 <= lat0 < lat1 <= 90):
        raise DatasetError(f"bbox={bbox!r} is not (lon_min, lat_min, lon_max, lat_max) with "
                           "-180 <= lon_min < lon_max <= 180 and -90 <= lat_min < lat_max <= 90")
    return lon0, lat0, lon1, lat1


def bbox_mask(bounds: np.ndarray, bbox: BBox) -> np.ndarray:
    """Rows whose bounds intersect ``bbox`` (NaN bounds never do)."""
    lon0, lat0, lon1, lat1 = bbox
    with np.errstate(invalid="ignore"):
        return ((bounds[:, 0] <= lon1) & (bounds[:, 2] >= lon0) & (bounds[:, 1] <= lat1)
                & (bounds[:, 3] >= lat0))


def place_mask(store: Store, meta: pd.DataFrame, countries: list[str] | None, bbox: Sequence[float] | None,
               where: str) -> np.ndarray | None:
    """Rows of ``meta`` (the store's whole metadata table) in ``countries`` (checked names) and ``bbox``;
    None when neither is given. Raises :class:`DatasetError` when the place matches no pair of the store."""
    if countries is None and bbox is None:
        return None
    keep = np.ones(len(meta), dtype=bool)
    if countries is not None:
        keep &= meta["country"].isin(countries).to_numpy()
    asked = [f"countries={countries}"] if countries is not None else []
    if bbox is not None:
        box = check_bbox(bbox)
        bounds = store_bounds(store.metadata_files)
        if np.isnan(bounds).all():
            why = ((store.manifest or {}).get("footprints") or {}).get("why_none") or (
                "its metadata has no geometry column")
            raise DatasetError(f"{where}: the store has no footprints, so bbox= cannot select ({why}); "
                               "use countries= instead")
        keep &= bbox_mask(bounds, box)
        asked.append(f"bbox={box}")
    if not keep.any():
        raise DatasetError(f"{where}: no pair of the store lies in {' and '.join(asked)}; the store's pairs "
                           f"are in {describe_extent(store, meta)}")
    return keep


def describe_extent(store: Store, meta: pd.DataFrame) -> str:
    """One line: each country with its lon/lat extent where the store has footprints."""
    rows = extent_by_country(store.metadata_files, meta["country"])
    return "; ".join(f"{c} ({', '.join(f'{v:.2f}' for v in b)})" if b else c for c, b in rows.items())
