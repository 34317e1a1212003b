"""Where a patch lies: its footprint in the source's own CRS, and that footprint in WGS84 lon/lat.

A *source footprint* is ``(crs, (west, south, east, north))``: the patch's rectangle in its UTM zone,
exactly as the source states it, so that it can be hashed and stored without rounding:

* v1 (and the synthetic archive, which writes the same JSONs): the S2 JSON's ``coordinates``
  (``ulx``, ``uly``, ``lrx``, ``lry``; S1 JSONs spell ``lly``) in its ``projection`` (WKT, identified
  as ``EPSG:326NN`` by pyproj);
* the reBEN GeoTIFF release: the S2 B02 GeoTIFF's own georeference (model tie point + pixel scale +
  ``ProjectedCSTypeGeoKey``), read with tifffile;
* a reBEN LMDB: none. Its values are bare arrays and ``metadata.parquet`` has no coordinates; the place
  follows from the tile and the name's ``x_y`` only through the Sentinel-2 tiling grid's tile corners.
  Those are published as data, not as a formula: the tiles are 109.8 km squares aligned with the MGRS
  100 km grid and overlapping their neighbours, their corners listed in ESA's tiling-grid KML
  (https://hls.gsfc.nasa.gov/products-description/tiling-system/: "The tiles dimension is 109.8km ...
  The kml edited by ESA with all tiles ID"). benmm ships no copy of that list, and the rule the
  synthetic archive uses (:func:`benmm.synth.metadata.tile_origin`) is checked on the example pairs'
  four tiles only, so benmm stores no footprint for a reBEN LMDB rather than a derived one.

:func:`lonlat_rings` maps source footprints to WGS84 with pyproj (one vectorised transform per CRS).
The ring is the rectangle's four corners, counter-clockwise from the south-west one; a 1.2 km UTM edge
is straight in lon/lat to well under a millimetre, so no densification is needed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import lru_cache
from typing import Any, Final

import numpy as np

from benmm.errors import ArchiveError

#: ``(crs, (west, south, east, north))`` in the CRS's units (metres for UTM)
SourceFootprint = tuple[str, tuple[float, float, float, float]]

#: why a store encoded from a reBEN LMDB has no footprints (its manifest says so)
REBEN_NO_FOOTPRINT: Final = (
    "a reBEN LMDB and its metadata.parquet hold no georeference; a patch's place follows from its tile "
    "and x_y only through the Sentinel-2 tiling grid's tile corners (ESA's tiling-grid KML, not shipped "
    "with benmm), so no footprint is stored rather than a derived one; encode the v1 archive or the reBEN "
    "GeoTIFF release for footprints")
_GEOKEY_PROJECTED_CRS: Final = 3072  # ProjectedCSTypeGeoKey (GeoTIFF 1.0 spec, section 6.3.3.1)
_GEOKEY_RASTER_TYPE: Final = 1025  # GTRasterTypeGeoKey: 1 = PixelIsArea, 2 = PixelIsPoint
_TAG_PIXEL_SCALE: Final = 33550
_TAG_TIEPOINT: Final = 33922
_TAG_GEOKEYS: Final = 34735


@lru_cache(maxsize=64)
def crs_name(projection: str) -> str:
    """``EPSG:NNNNN`` for a WKT/PROJ/authority string (pyproj's identification), else the string as given."""
    from pyproj import CRS
    from pyproj.exceptions import CRSError

    try:
        crs = CRS.from_user_input(projection)
    except CRSError as exc:
        raise ArchiveError(f"projection {projection[:60]!r} is not a CRS pyproj knows ({exc})") from None
    epsg = crs.to_epsg()
    return f"EPSG:{epsg}" if epsg is not None else crs.to_wkt()


def _bounds(west: Any, south: Any, east: Any, north: Any, where: str) -> tuple[float, float, float, float]:
    try:
        box = (float(west), float(south), float(east), float(north))
    except (TypeError, ValueError):
        raise ArchiveError(f"{where}: footprint corners {west!r}, {south!r}, {east!r}, {north!r} are not "
                           "numbers") from None
    if not all(math.isfinite(v) for v in box) or box[0] >= box[2] or box[1] >= box[3]:
        raise ArchiveError(f"{where}: footprint corners (west {box[0]}, south {box[1]}, east {box[2]}, "
                           f"north {box[3]}) do not form a rectangle (upper-left must be west and north of "
                           "lower-right)")
    return box


def from_v1_json(coordinates: dict[str, Any] | None, projection: str | None, where: str
                 ) -> SourceFootprint | None:
    """The footprint a v1 JSON states (``lry`` or S1's ``lly``); None when it states none."""
    if not coordinates or not projection:
        return None
    lry = coordinates.get("lry", coordinates.get("lly"))
    box = _bounds(coordinates.get("ulx"), lry, coordinates.get("lrx"), coordinates.get("uly"), where)
    try:
        return crs_name(projection), box
    except ArchiveError as exc:
        raise ArchiveError(f"{where}: {exc}; the projection must be the patch's UTM zone (WKT)") from None


def from_geotiff(source: str | bytes | memoryview, where: str | None = None) -> SourceFootprint | None:
    """The footprint of a north-up GeoTIFF from its GeoTIFF tags (tifffile; no GDAL needed); None for a
    plain TIFF that carries no georeference at all (no place is guessed for it).

    ``source`` is a path, or the file's bytes (a tarball member) with ``where`` naming it in errors."""
    import io

    import tifffile

    handle: Any = source if isinstance(source, str) else io.BytesIO(bytes(source))
    path = source if isinstance(source, str) else where or "<GeoTIFF bytes>"
    try:
        with tifffile.TiffFile(handle) as tif:
            page = tif.pages.first
            tags = {t.code: t.value for t in page.tags.values()}
            height, width = page.shape[:2]
    except (OSError, ValueError, tifffile.TiffFileError) as exc:
        raise ArchiveError(f"{path}: cannot read its GeoTIFF tags ({exc})") from None
    scale, tie, keys = (tags.get(c) for c in (_TAG_PIXEL_SCALE, _TAG_TIEPOINT, _TAG_GEOKEYS))
    if scale is None and tie is None and keys is None:
        return None
    if scale is None or tie is None or keys is None or len(tie) < 6:
        raise ArchiveError(f"{path}: incomplete georeference (it needs a pixel scale, a tie point and a "
                           "GeoKey directory); rewrite the file with its full GeoTIFF tags")
    geokeys = {int(keys[i]): int(keys[i + 3]) for i in range(4, len(keys) - 3, 4) if int(keys[i + 1]) == 0}
    epsg = geokeys.get(_GEOKEY_PROJECTED_CRS)
    if epsg is None or epsg in (0, 32767):
        raise ArchiveError(f"{path}: the GeoTIFF names no EPSG projected CRS (ProjectedCSTypeGeoKey)")
    i, j, _, x, y, _ = (float(v) for v in tie[:6])
    sx, sy = float(scale[0]), float(scale[1])
    half = 0.5 if geokeys.get(_GEOKEY_RASTER_TYPE) == 2 else 0.0  # PixelIsPoint: tie at pixel centres
    west, north = x - (i + half) * sx, y + (j + half) * sy
    return f"EPSG:{epsg}", _bounds(west, north - height * sy, west + width * sx, north, path)


@lru_cache(maxsize=64)
def _to_lonlat(crs: str) -> Any:
    from pyproj import Transformer

    # always_xy: (easting, northing) in, (lon, lat) out, whatever axis order the CRS definitions state
    return Transformer.from_crs(crs, "OGC:CRS84", always_xy=True)


def lonlat_rings(footprints: Sequence[SourceFootprint | None]) -> list[np.ndarray | None]:
    """Each footprint as a closed WGS84 ring: float64 [5, 2] of (lon, lat), counter-clockwise."""
    out: list[np.ndarray | None] = [None] * len(footprints)
    by_crs: dict[str, list[int]] = {}
    for k, fp in enumerate(footprints):
        if fp is not None:
            by_crs.setdefault(fp[0], []).append(k)
    for crs, rows in by_crs.items():
        box = np.array([footprints[k][1] for k in rows], dtype=np.float64)  # type: ignore[index]
        w, s, e, n = box.T
        xs = np.stack([w, e, e, w, w], axis=1)  # SW, SE, NE, NW, SW: counter-clockwise
        ys = np.stack([s, s, n, n, s], axis=1)
        lon, lat = _to_lonlat(crs).transform(xs.ravel(), ys.ravel())
        ring = np.stack([np.asarray(lon), np.asarray(lat)], axis=1).reshape(len(rows), 5, 2)
        if not np.isfinite(ring).all():
            raise ArchiveError(f"footprints in {crs} do not map to WGS84 (corners outside the CRS's area)")
        for k, r in zip(rows, ring, strict=True):
            out[k] = r
    return out
