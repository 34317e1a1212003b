"""The synthetic archive as reBEN's publishers release it: GeoTIFF folders, reference maps, metadata.

Layout (the one :mod:`benmm.archive.v2` and :mod:`benmm.archive.refmaps` read; sources cited there:
the reBEN pipeline ``kai-tub/bigearthnet-pipeline`` ``nu-scripts/ben-data-finalizer.nu``, the rico-hdl
README's BigEarthNet example tree and TorchGeo's ``BigEarthNetV2``)::

    BigEarthNet-S2/<tile>/<patch_id>/<patch_id>_B01.tif ... _B12.tif     tile = patch_id without _x_y
    BigEarthNet-S1/<product>/<s1_name>/<s1_name>_VV.tif, _VH.tif         product = s1_name without _<tile>_x_y
    Reference_Maps/<tile>/<patch_id>/<patch_id>_reference_map.tif
    metadata.parquet                                                     the recommended (clean) patches
    metadata_for_patches_with_snow_cloud_or_shadow.parquet               the snow / cloud / shadow ones

Every patch of both metadata files has all three (the pipeline's ``check-output`` asserts it). The band
files have the published reBEN byte layout (S2: GDAL_NODATA 0 and SHORT strip byte counts; S1: the v1
files), the reference maps are deflate + predictor 2 with GDAL_NODATA 0 (:mod:`benmm.synth.geotiff`).

The reference map of a pair is its synthetic land-cover map (the per-pixel 43-class ground truth the
pixels were drawn from) as raw CLC Level-3 codes; its labels are the classes present in that map,
converted to the 19-class nomenclature, so map and labels never disagree.

:func:`release_files` lists the files of a release by the tarball the publishers ship them in
(``BigEarthNet-S2.tar.zst`` holds ``BigEarthNet-S2/...``), for packing.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Final

import numpy as np

from benmm.archive.refmaps import REFERENCE_MAPS_DIR, map_path
from benmm.archive.v2 import TIFF_DIR_NAMES, s1_tiff_dir, s2_tiff_dir
from benmm.bands import BAND_RESOLUTION, S1_BANDS, S2_BANDS
from benmm.labels import CLC_CODES, LABELS_43
from benmm.synth.geotiff import geotiff_bytes
from benmm.synth.metadata import METADATA, METADATA_FLAGGED, geo, v2_name

if TYPE_CHECKING:
    from benmm.synth.archive import SynthPair

#: folder -> the tarball the publishers ship it in (Zenodo record 10891137; TorchGeo BigEarthNetV2)
RELEASE_TARBALLS: Final = {TIFF_DIR_NAMES["s1"]: "BigEarthNet-S1.tar.zst",
                           TIFF_DIR_NAMES["s2"]: "BigEarthNet-S2.tar.zst",
                           REFERENCE_MAPS_DIR: "Reference_Maps.tar.zst"}
RELEASE_FILES: Final = (METADATA, METADATA_FLAGGED)  # shipped as they are, next to the tarballs
_CODES: Final = np.array([CLC_CODES[name] for name in LABELS_43], dtype=np.uint16)


def reference_map(pair: SynthPair) -> np.ndarray:
    """The pair's land-cover map as raw CLC Level-3 codes (uint16 [120, 120])."""
    return _CODES[pair.class_map]


def present_labels43(pair: SynthPair) -> list[str]:
    """The 43-class labels present in the pair's map, official order."""
    return [LABELS_43[i] for i in np.unique(pair.class_map)]


def make_dirs(root: Path) -> None:
    for folder in RELEASE_TARBALLS:
        (root / folder).mkdir()


def write_pair(root: Path, pair: SynthPair) -> int:
    """Write one pair's 12 S2 + 2 S1 band files and its reference map; returns the bytes written."""
    spec = pair.spec
    g = geo(spec.s1_name, spec.s2_name)
    pid = v2_name(spec.s1_name, spec.s2_name)
    written = 0
    for folder, key, bands, s2 in ((s2_tiff_dir(root, pid), pid, S2_BANDS, True),
                                   (s1_tiff_dir(root, spec.s1_name), spec.s1_name, S1_BANDS, False)):
        folder.mkdir(parents=True, exist_ok=True)
        for band in bands:
            data = geotiff_bytes(pair.bands[band], g["ulx"], g["uly"], BAND_RESOLUTION[band], g["zone"],
                                 nodata=0 if s2 else None, short_counts=s2)
            (folder / f"{key}_{band}.tif").write_bytes(data)
            written += len(data)
    path = map_path(root, pid)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = geotiff_bytes(reference_map(pair), g["ulx"], g["uly"], 10, g["zone"], nodata=0, deflate=True)
    path.write_bytes(data)
    return written + len(data)


def release_files(root: str | os.PathLike[str]) -> dict[str, list[str]]:
    """The files of a reBEN GeoTIFF release at ``root``, by what they are shipped in.

    Keys: each tarball name of :data:`RELEASE_TARBALLS` (value: its members, paths relative to ``root``
    in POSIX form, sorted, files only, e.g. ``BigEarthNet-S2/<tile>/<patch>/<patch>_B01.tif``), and
    ``""`` for the files shipped loose (the metadata parquet files present). Folders missing from
    ``root`` give empty lists.
    """
    base = Path(root)
    out: dict[str, list[str]] = {}
    for folder, tarball in RELEASE_TARBALLS.items():
        top = base / folder
        files = [p.relative_to(base).as_posix() for p in top.rglob("*") if p.is_file()]
        out[tarball] = sorted(files)  # rglob of a missing folder yields nothing
    out[""] = [name for name in RELEASE_FILES if (base / name).is_file()]
    return out
