"""Georeferencing and metadata of synthetic pairs, shaped like the real v1 JSON files and v2 names.

Patch corners follow the archive's own rule, checked against the real example pairs: a patch's
upper-left corner is its Sentinel-2 tile's upper-left corner plus ``1200 m * (x, -y)``, and tile corners
are the MGRS 100 km square snapped to the 60 m grid (``ulx = floor(e / 60) * 60``,
``uly = ceil(n / 60) * 60``).
"""

from __future__ import annotations

import math
import zlib
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Final

import numpy as np

from benmm.labels import to_19
from benmm.names import parse

PATCH_M: Final = 1200
_COLUMN_SETS: Final = ("ABCDEFGH", "JKLMNPQR", "STUVWXYZ")
_ROWS: Final = "ABCDEFGHJKLMNPQRSTUV"
_BANDS: Final = "CDEFGHJKLMNPQRSTUVWX"  # 8 degree latitude bands from 80 S
_WKT: Final = (
    'PROJCS["WGS 84 / UTM zone {zone}N",GEOGCS["WGS 84",DATUM["WGS_1984",SPHEROID["WGS 84",6378137,'
    '298.257223563,AUTHORITY["EPSG","7030"]],AUTHORITY["EPSG","6326"]],PRIMEM["Greenwich",0,AUTHORITY['
    '"EPSG","8901"]],UNIT["degree",0.0174532925199433,AUTHORITY["EPSG","9122"]],AXIS["Latitude",NORTH],'
    'AXIS["Longitude",EAST],AUTHORITY["EPSG","4326"]],PROJECTION["Transverse_Mercator"],PARAMETER['
    '"latitude_of_origin",0],PARAMETER["central_meridian",{cm}],PARAMETER["scale_factor",0.9996],'
    'PARAMETER["false_easting",500000],PARAMETER["false_northing",0],UNIT["metre",1,AUTHORITY["EPSG",'
    '"9001"]],AXIS["Easting",EAST],AXIS["Northing",NORTH],AUTHORITY["EPSG","326{zone:02d}"]]'
)
METADATA: Final = "metadata.parquet"
METADATA_FLAGGED: Final = "metadata_for_patches_with_snow_cloud_or_shadow.parquet"
_N0206_FROM: Final = datetime(2017, 10, 23)  # Sentinel-2 processing baseline 02.06
#: (time, absolute orbit) references; the S1A one is a real product of the example pairs
_S1_REF: Final = {"S1A": (datetime(2017, 6, 13, 16, 50, 43), 17018),
                  "S1B": (datetime(2017, 6, 12, 16, 58, 9), 6147)}
_S1_ORBITS_PER_DAY: Final = 175 / 12


def _hash(text: str) -> int:
    return zlib.crc32(text.encode("ascii"))


def tile_origin(tile: str) -> tuple[int, int, int]:
    """(UTM zone, upper-left easting, upper-left northing) of a Sentinel-2 tile such as ``33UUP``."""
    zone, band, col, row = int(tile[:2]), tile[2], tile[3], tile[4]
    easting = (_COLUMN_SETS[(zone - 1) % 3].index(col) + 1) * 100_000
    row_mod = ((_ROWS.index(row) - (5 if zone % 2 == 0 else 0)) % 20) * 100_000
    lat = -80 + 8 * _BANDS.index(band)
    phi = math.radians(lat)
    band_north = 0.9996 * (111_132.95 * lat - 16_038.5 * math.sin(2 * phi))
    lower = row_mod + 2_000_000 * math.ceil((band_north - 150_000 - row_mod) / 2_000_000)
    top = lower + 100_000
    return zone, (easting // 60) * 60, -(-top // 60) * 60


def _time6(time: str) -> str:
    """The v1 names' time part zero-padded to HHMMSS (v1 names drop leading zeros), seconds kept valid."""
    t = time.zfill(6)
    return t[:4] + min(t[4:], "59")


def s2_datetime(s2_name: str) -> datetime:
    p = parse(s2_name)
    return datetime.strptime(p.date.strftime("%Y%m%d") + _time6(p.time), "%Y%m%d%H%M%S")


def s2_orbit(s2_name: str) -> int:
    """A relative orbit (1..143), the same for all patches of one acquisition."""
    return _hash(s2_name.rsplit("_", 2)[0]) % 143 + 1


def geo(s1_name: str, s2_name: str) -> dict[str, Any]:
    tile = parse(s1_name).tile
    assert tile is not None  # S1 names always carry the tile
    zone, ulx0, uly0 = tile_origin(tile)
    p = parse(s2_name)
    ulx, uly = ulx0 + PATCH_M * p.x, uly0 - PATCH_M * p.y
    return {"tile": tile, "zone": zone, "ulx": ulx, "uly": uly, "lrx": ulx + PATCH_M, "lry": uly - PATCH_M}


def projection_wkt(zone: int) -> str:
    return _WKT.format(zone=zone, cm=6 * zone - 183)


def s2_json(s2_name: str, labels43: list[str], g: dict[str, Any]) -> dict[str, Any]:
    p = parse(s2_name)
    when = s2_datetime(s2_name)
    stamp = f"{p.date:%Y%m%d}T{p.time}"
    baseline = "N0206" if when >= _N0206_FROM else "N0205"
    processed = when + timedelta(minutes=3 + _hash(s2_name.rsplit("_", 2)[0]) % 140)
    return {
        "labels": labels43,
        "coordinates": {"ulx": g["ulx"], "uly": g["uly"], "lrx": g["lrx"], "lry": g["lry"]},
        "projection": projection_wkt(g["zone"]),
        "tile_source": f"{p.mission}_MSIL1C_{stamp}_{baseline}_R{s2_orbit(s2_name):03d}_T{g['tile']}_"
                       f"{processed:%Y%m%dT%H%M%S}.SAFE",
        "acquisition_date": f"{when:%Y-%m-%d %H:%M:%S}",
    }


def s1_json(s1_name: str, s2_name: str, labels43: list[str], g: dict[str, Any]) -> dict[str, Any]:
    p = parse(s1_name)
    start = datetime.strptime(f"{p.date:%Y%m%d}{p.time}", "%Y%m%d%H%M%S")
    ref_time, ref_orbit = _S1_REF.get(p.mission, _S1_REF["S1A"])
    orbit = ref_orbit + math.floor((start - ref_time).total_seconds() / 86400 * _S1_ORBITS_PER_DAY)
    scene = s1_name.rsplit("_", 3)[0]
    datatake = (orbit * 7 + _hash(scene) % 7) & 0xFFFFFF
    return {
        "labels": labels43,
        "coordinates": {"ulx": g["ulx"], "uly": g["uly"], "lrx": g["lrx"], "lly": g["lry"]},  # sic: lly
        "projection": projection_wkt(g["zone"]),
        "corresponding_s2_patch": s2_name,
        "scene_source": f"{scene}_{start + timedelta(seconds=25):%Y%m%dT%H%M%S}_{orbit:06d}_{datatake:06X}_"
                        f"{_hash(scene) & 0xFFFF:04X}",
        "acquisition_time": f"{start:%Y-%m-%dT%H:%M:%S}",
    }


def v2_name(s1_name: str, s2_name: str) -> str:
    """The reBEN (v2) S2 name of a v1 pair, e.g. ``S2A_MSIL2A_20170613T101031_N9999_R022_T33UUP_37_88``."""
    s1, s2 = parse(s1_name), parse(s2_name)
    return (f"{s2.mission}_MSIL2A_{s2.date:%Y%m%d}T{_time6(s2.time)}_N9999_R{s2_orbit(s2_name):03d}"
            f"_T{s1.tile}_{s2.x:02d}_{s2.y:02d}")


def write_metadata(root: Path, pairs: list[tuple[dict[str, Any], list[str]]]) -> int:
    """reBEN's ``metadata.parquet`` (clean patches) and the snow/cloud/shadow file, as published.

    Same columns, dtypes and pandas index as the published sample: an int64 index (the row in the
    table of all patches, sorted by ``patch_id``), 19-class labels sorted alphabetically, split
    ``train`` / ``validation`` / ``test``.
    """
    import pandas as pd

    rows = []
    for spec, labels43 in pairs:
        rows.append({
            "patch_id": v2_name(spec["s1_name"], spec["s2_name"]),
            "labels": sorted(to_19(labels43)),
            "split": {"val": "validation"}.get(spec["split"], spec["split"]),
            "country": spec["country"],
            "s1_name": spec["s1_name"],
            "s2v1_name": spec["s2_name"],
            "contains_seasonal_snow": bool(spec["snow"]),
            "contains_cloud_or_shadow": bool(spec["cloud"]),
        })
    df = pd.DataFrame(rows).sort_values("patch_id", kind="stable")
    df.index = pd.Index(np.arange(len(df), dtype=np.int64))
    for col in ("patch_id", "split", "country", "s1_name", "s2v1_name"):
        df[col] = df[col].astype(object)
    flagged = df.contains_seasonal_snow | df.contains_cloud_or_shadow
    written = 0
    for name, part in ((METADATA, df[~flagged]), (METADATA_FLAGGED, df[flagged])):
        path = root / name
        part.to_parquet(path, engine="pyarrow", index=True)
        written += path.stat().st_size
    return written
