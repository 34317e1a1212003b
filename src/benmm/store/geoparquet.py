"""The store's footprints as GeoParquet: a WKB ``geometry`` column (WGS84 polygons) + the ``geo`` metadata.

``metadata.parquet`` gains, where the source states where its patches lie (see
:mod:`benmm.archive.footprint`): ``footprint_crs`` and ``footprint_bounds`` (the patch rectangle in its
UTM zone, as the source gives it: these two join the content hash) and ``geometry``, the footprint in
WGS84 lon/lat derived from them with pyproj, so ``geopandas.read_parquet(store / "metadata.parquet")``
is a GeoDataFrame of the archive. The file metadata follows GeoParquet 1.1.0
(https://geoparquet.org/releases/v1.1.0/schema.json): ``version``, ``primary_column``, and per column
``encoding: "WKB"``, ``geometry_types``, ``crs`` (PROJJSON of OGC:CRS84, lon/lat), ``orientation``,
``edges`` and ``bbox``.

The WKB is written by hand (one ISO/OGC little-endian Polygon, 93 bytes: byte order, type 3, one ring of
5 points) instead of through shapely: a fixed 5-point layout is a ``struct.pack`` and a ``tobytes``, and
shapely (GEOS) would be a compiled dependency of every install for that. The test checks the bytes
against shapely's reading of them.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Sequence
from typing import Any, Final

import numpy as np

from benmm.archive.footprint import SourceFootprint, lonlat_rings
from benmm.store.layout import FOOTPRINT_COLUMNS

__all__ = ["FOOTPRINT_COLUMNS", "GEOMETRY", "add_geometry", "footprint_fields", "polygon_wkb", "wkb_bounds"]
GEOMETRY: Final = "geometry"
GEOPARQUET_VERSION: Final = "1.1.0"
_WKB_HEAD: Final = struct.pack("<BIII", 1, 3, 1, 5)  # little endian, Polygon, 1 ring, 5 points
_WKB_SIZE: Final = len(_WKB_HEAD) + 5 * 16


def footprint_fields(fp: SourceFootprint | None) -> dict[str, Any]:
    """The metadata-row fields of a source footprint (empty when there is none: the row, and therefore
    the content hash, stays what it was before footprints existed)."""
    if fp is None:
        return {}
    return {"footprint_crs": fp[0], "footprint_bounds": [float(v) for v in fp[1]]}


def row_footprint(row: dict[str, Any]) -> SourceFootprint | None:
    crs, box = row.get("footprint_crs"), row.get("footprint_bounds")
    if crs is None or box is None:
        return None
    w, s, e, n = (float(v) for v in box)
    return str(crs), (w, s, e, n)


def polygon_wkb(ring: np.ndarray) -> bytes:
    """WKB of a one-ring polygon from a closed [5, 2] (x, y) ring."""
    return _WKB_HEAD + np.ascontiguousarray(ring, dtype="<f8").tobytes()


def _crs84_projjson() -> dict[str, Any]:
    from pyproj import CRS

    return dict(CRS.from_user_input("OGC:CRS84").to_json_dict())


def geometry_column(rows: Sequence[dict[str, Any]]) -> tuple[list[bytes | None], dict[str, Any]]:
    """WKB per row (None where the row has no footprint) and the GeoParquet ``geo`` metadata."""
    rings = lonlat_rings([row_footprint(r) for r in rows])
    wkb = [None if r is None else polygon_wkb(r) for r in rings]
    have = [r for r in rings if r is not None]
    column: dict[str, Any] = {"encoding": "WKB", "geometry_types": ["Polygon"], "crs": _crs84_projjson(),
                              "orientation": "counterclockwise", "edges": "planar"}
    if have:
        pts = np.concatenate(have)
        column["bbox"] = [float(pts[:, 0].min()), float(pts[:, 1].min()),
                          float(pts[:, 0].max()), float(pts[:, 1].max())]
    geo = {"version": GEOPARQUET_VERSION, "primary_column": GEOMETRY, "columns": {GEOMETRY: column}}
    return wkb, geo


def add_geometry(table: Any, rows: Sequence[dict[str, Any]]) -> Any:
    """The pyarrow table of the metadata with the footprint columns and ``geo`` metadata added, or the
    table unchanged when no row has a footprint."""
    import pyarrow as pa

    if not any(row_footprint(r) is not None for r in rows):
        return table
    wkb, geo = geometry_column(rows)
    table = table.append_column(pa.field("footprint_crs", pa.string()),
                                pa.array([r.get("footprint_crs") for r in rows], pa.string()))
    table = table.append_column(pa.field("footprint_bounds", pa.list_(pa.float64())),
                                pa.array([r.get("footprint_bounds") for r in rows], pa.list_(pa.float64())))
    table = table.append_column(pa.field(GEOMETRY, pa.binary()), pa.array(wkb, pa.binary()))
    meta = dict(table.schema.metadata or {})
    meta[b"geo"] = json.dumps(geo).encode()
    return table.replace_schema_metadata(meta)


def _generic_bounds(value: bytes) -> tuple[float, float, float, float]:
    """Bounds of any WKB Polygon (either byte order), for files not written by :func:`polygon_wkb`."""
    order = "<" if value[0] == 1 else ">"
    kind, nrings = struct.unpack_from(f"{order}II", value, 1)
    if kind % 1000 != 3:
        raise ValueError(f"WKB geometry type {kind} is not a Polygon")
    pos, pts = 9, []
    for _ in range(nrings):
        (n,) = struct.unpack_from(f"{order}I", value, pos)
        pts.append(np.frombuffer(value, f"{order}f8", n * 2, pos + 4).reshape(n, 2))
        pos += 4 + 16 * n
    xy = np.concatenate(pts)
    return float(xy[:, 0].min()), float(xy[:, 1].min()), float(xy[:, 0].max()), float(xy[:, 1].max())


def wkb_bounds(values: Sequence[bytes | None]) -> np.ndarray:
    """float64 [n, 4] (lon_min, lat_min, lon_max, lat_max) of WKB polygons; NaN rows for None."""
    out = np.full((len(values), 4), np.nan)
    for k, v in enumerate(values):
        if v is None:
            continue
        v = bytes(v)
        if len(v) == _WKB_SIZE and v[:len(_WKB_HEAD)] == _WKB_HEAD:
            xy = np.frombuffer(v, "<f8", 10, len(_WKB_HEAD)).reshape(5, 2)
            out[k] = xy[:, 0].min(), xy[:, 1].min(), xy[:, 0].max(), xy[:, 1].max()
        else:
            out[k] = _generic_bounds(v)
    return out


def read_footprints(metadata_files: Sequence[Any]) -> Any:
    """``patch_id`` + :data:`FOOTPRINT_COLUMNS` + ``geometry`` of a store's metadata file(s), row-aligned
    with :attr:`benmm.store.Store.metadata`; the footprint columns are None where there are none."""
    import pandas as pd
    import pyarrow.parquet as pq

    wanted = ("patch_id", *FOOTPRINT_COLUMNS, GEOMETRY)
    frames = []
    for f in metadata_files:
        have = set(pq.read_schema(f).names)
        frame = pq.read_table(f, columns=[c for c in wanted if c in have]).to_pandas()
        for c in wanted:
            if c not in frame:
                frame[c] = None
        frames.append(frame[list(wanted)])
    return pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]


def store_bounds(metadata_files: Sequence[Any]) -> np.ndarray:
    """float64 [pairs, 4] lon/lat bounds per metadata row of a store (NaN rows: no footprint)."""
    geoms = read_footprints(metadata_files)[GEOMETRY]
    return wkb_bounds([bytes(v) if isinstance(v, bytes | bytearray | memoryview) else None for v in geoms])


def extent_by_country(metadata_files: Sequence[Any], countries: Sequence[Any]
                      ) -> dict[str, tuple[float, float, float, float] | None]:
    """Country -> (lon_min, lat_min, lon_max, lat_max) of its pairs' footprints; None for a country
    whose pairs have no footprint. ``countries``: the store's country column, row-aligned."""
    bounds = store_bounds(metadata_files)
    names = np.array(["(unknown)" if c is None or c != c else str(c) for c in countries], dtype=object)
    out: dict[str, tuple[float, float, float, float] | None] = {}
    for country in sorted(set(names)):
        b = bounds[names == country]
        b = b[~np.isnan(b).any(axis=1)]
        out[country] = None if not len(b) else (float(b[:, 0].min()), float(b[:, 1].min()),
                                                float(b[:, 2].max()), float(b[:, 3].max()))
    return out
