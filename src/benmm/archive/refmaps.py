"""reBEN reference maps: the per-pixel CORINE Land Cover 2018 map of each patch.

Facts (sources looked up, see below):

* file: ``Reference_Maps/<tile>/<patch_id>/<patch_id>_reference_map.tif``, ``<tile>`` = the S2 patch id
  without its ``_x_y`` suffix, exactly like ``BigEarthNet-S2/<tile>/<patch_id>/`` (the reBEN pipeline's
  ``build-archive reference-maps`` step and its layout check ``Reference_Maps/tile/<tile>_<patch>/
  <tile>_<patch>_reference_map.tif``, kai-tub/bigearthnet-pipeline ``nu-scripts/ben-data-finalizer.nu``;
  TorchGeo ``BigEarthNetV2._load_map``; the rico-hdl README's example tree);
* content: one band, 120x120 uint16 (the 10 m grid of the patch), the *raw* CLC 2018 Level-3 code of
  each pixel (``st_asraster(..., '16BUI', value => clc_code_18)``), GDAL nodata 0 for pixels no CLC
  polygon covers; written by GDAL with ``COMPRESS=deflate, PREDICTOR=2`` (bigearthnet-pipeline
  ``migrations/V1_2__sentinel2_tables.sql``, ``exportable_rasterized_clc_overlayed_patches``). A
  published file (rico-hdl ``integration_tests/tiffs/BigEarthNet/Reference_Maps/...``) has exactly
  that: deflate (259 = 8), predictor 2, 34 rows per strip, GDAL_NODATA "0", UTM GeoKeys;
* value domain: the pipeline's ``clc_code_18`` domain is the 44 CLC Level-3 codes plus ``999``
  ("UNLABELED": patch areas without CLC 2018 data). The 43-label BigEarthNet nomenclature lacks only
  ``335`` (Glaciers and perpetual snow), which the 19-class conversion also maps to no class. A valid
  map therefore holds 0, the nomenclature's 43 codes, 335 and 999; anything else is a damaged file;
* in an LMDB: rico-hdl stores each map under the key ``<patch_id>_reference_map`` (the file name
  without ``.tif``) as a safetensors blob with the single tensor ``Data`` (rico-hdl
  ``rico_hdl/rico_hdl.py`` ``bigearthnet_reference_map_to_safetensor``; its integration test expects
  the key ``S2A_MSIL2A_20170613T101031_N9999_R022_T33UUP_26_57_reference_map``, keys ``{"Data"}``,
  120x120 uint16).

The files are compressed, so they are read with ``tifffile`` (the full TIFF path), never with the
uncompressed-strip fast reader of :mod:`benmm.archive.tiff`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Final

import numpy as np

from benmm.errors import ArchiveError
from benmm.labels import CLC_CODES, LABEL_43_TO_19, LABELS_19, LABELS_43

REFERENCE_MAPS_DIR: Final = "Reference_Maps"
SUFFIX: Final = "_reference_map"
TENSOR: Final = "Data"  # rico-hdl's tensor name
SIDE: Final = 120
DTYPE: Final = np.dtype("uint16")
NODATA: Final = 0
#: CLC Level-3 codes outside the 43-label nomenclature that reBEN maps may hold (see the docstring)
EXTRA_CODES: Final = {335: "Glaciers and perpetual snow", 999: "UNLABELED (no CLC 2018 data)"}
VALID_CODES: Final = frozenset({NODATA, *CLC_CODES.values(), *EXTRA_CODES})
_LOOKUP_SIZE: Final = 1000


def map_key(patch_id: str) -> str:
    """The LMDB key of a patch's reference map (rico-hdl's): ``<patch_id>_reference_map``."""
    return patch_id + SUFFIX


def is_map_key(key: str) -> bool:
    return key.endswith(SUFFIX)


def map_path(root: str | os.PathLike[str], patch_id: str) -> Path:
    """``<root>/Reference_Maps/<tile>/<patch_id>/<patch_id>_reference_map.tif``."""
    return Path(root) / REFERENCE_MAPS_DIR / patch_id.rsplit("_", 2)[0] / patch_id / f"{patch_id}{SUFFIX}.tif"


def check_map(arr: np.ndarray, where: str | os.PathLike[str]) -> np.ndarray:
    """``arr`` as a native-order uint16 [120, 120] map if it is one with valid codes, else ArchiveError."""
    if arr.shape != (SIDE, SIDE):
        shape = "x".join(str(s) for s in arr.shape)
        raise ArchiveError(f"{where}: reference map is {shape}, expected {SIDE}x{SIDE} "
                           "(file damaged or not a reBEN reference map)")
    if arr.dtype != DTYPE:
        if not (arr.dtype.kind == "u" and arr.dtype.itemsize == 2):
            raise ArchiveError(f"{where}: reference map has dtype {arr.dtype}, expected uint16 "
                               "(raw CLC Level-3 codes)")
        arr = arr.astype(DTYPE)  # the other byte order
    bad = ~_valid_table()[np.minimum(arr, _LOOKUP_SIZE - 1)] | (arr >= _LOOKUP_SIZE)
    if bad.any():
        codes = sorted({int(c) for c in np.unique(arr[bad])})
        shown = ", ".join(map(str, codes[:5])) + (" ..." if len(codes) > 5 else "")
        raise ArchiveError(f"{where}: reference map holds {int(bad.sum())} pixels with code(s) {shown}, "
                           "which are not CLC Level-3 codes (valid: 0 = no data, the 43 nomenclature "
                           "codes, 335, 999); the file is damaged or not a reBEN reference map")
    return arr


def _valid_table() -> np.ndarray:
    table = np.zeros(_LOOKUP_SIZE, dtype=bool)
    table[list(VALID_CODES)] = True
    return table


def read_map(source: str | os.PathLike[str] | bytes, where: str | None = None) -> np.ndarray:
    """Read and check one reference-map GeoTIFF (deflate + predictor: read with tifffile).

    ``source`` is a path, or the file's bytes (e.g. a tarball member) with ``where`` naming it in errors.
    """
    import io

    import tifffile

    if isinstance(source, bytes | bytearray | memoryview):
        path: Any = where or "<reference map bytes>"
        handle: Any = io.BytesIO(bytes(source))
    else:
        path = handle = source
    try:
        with tifffile.TiffFile(handle) as tif:
            if len(tif.pages) != 1 or tif.pages[0].samplesperpixel != 1:  # type: ignore[union-attr]
                raise ArchiveError(f"{path}: reference map must hold one single-band image")
            arr = np.asarray(tif.pages[0].asarray())
    except FileNotFoundError:
        raise ArchiveError(f"{path}: reference map is missing (the pair's {REFERENCE_MAPS_DIR}/ "
                           "file was not downloaded or extracted?)") from None
    except ArchiveError:
        raise
    except Exception as exc:  # tifffile raises many types for damaged files; all mean "unreadable"
        raise ArchiveError(f"{path}: not a readable GeoTIFF ({type(exc).__name__}: {exc})") from None
    return check_map(arr, path)


def classes_present(ref_map: np.ndarray, n: int = 19) -> list[str]:
    """The ``n``-class labels (official order) of the CLC codes that occur in ``ref_map``."""
    by_code = {code: name for name, code in CLC_CODES.items()}
    codes = {int(c) for c in np.unique(ref_map)} & set(by_code)
    names43 = [by_code[c] for c in sorted(codes)]
    if n == 43:
        return sorted(names43, key=LABELS_43.index)
    names19 = {LABEL_43_TO_19[x] for x in names43} - {None}
    return [x for x in LABELS_19 if x in names19]


def class_index_map(ref_map: np.ndarray, n: int = 19, ignore: int = -1) -> np.ndarray:
    """int64 map of class indices (official order of the ``n``-class set), ``ignore`` where a pixel has
    no class: no data (0), 999, and the codes the 19-class set drops (e.g. roads, 335)."""
    table = np.full(_LOOKUP_SIZE, ignore, dtype=np.int64)
    for name, code in CLC_CODES.items():
        target = name if n == 43 else LABEL_43_TO_19[name]
        if target is not None:
            table[code] = (LABELS_43 if n == 43 else LABELS_19).index(target)
    return table[np.minimum(np.asarray(ref_map, dtype=np.int64), _LOOKUP_SIZE - 1)]


# ---- in an LMDB (rico-hdl's value) and in an archive reader ------------------------------------------
def encode_map_blob(ref_map: np.ndarray) -> bytes:
    """The LMDB value of a map: safetensors ``{"Data": uint16 [120, 120]}`` (rico-hdl's value, byte for
    byte: :func:`benmm.store.blob.encode_blob` equals ``safetensors.numpy.save``)."""
    from benmm.store.blob import encode_blob

    return encode_blob({TENSOR: np.ascontiguousarray(ref_map, dtype="<u2")})


def decode_map_blob(value: bytes | memoryview, where: str) -> np.ndarray:
    """The checked map in an LMDB value; ArchiveError naming ``where`` (``<lmdb>::<key>``) otherwise."""
    from benmm.store.blob import BlobError, decode_blob, parse_header

    try:
        header, _ = parse_header(value)
        if set(header) != {TENSOR}:
            raise ArchiveError(f"{where}: a reference map value holds the one tensor {TENSOR!r}, this one "
                               f"holds {', '.join(sorted(header)) or 'none'}")
        arr = decode_blob(value, [TENSOR], copy=True)[TENSOR]
    except BlobError as exc:
        raise ArchiveError(f"{where}: value is not a safetensors blob ({exc})") from None
    return check_map(arr, where)


def has_maps(archive: Any) -> bool:
    """Whether a :class:`benmm.archive.v2.V2Archive` has reference maps: a ``Reference_Maps/`` folder
    (GeoTIFF release) or, in an LMDB, the first pair's map key."""
    if archive.backend == "tiff":
        return bool((archive.root / REFERENCE_MAPS_DIR).is_dir())
    names = archive.names()
    return bool(names) and archive._txn_get(map_key(names[0])) is not None


def read_archive_map(archive: Any, patch_id: str) -> np.ndarray:
    """The checked reference map of one pair of a :class:`benmm.archive.v2.V2Archive`."""
    if archive.backend == "tiff":
        return read_map(map_path(archive.root, patch_id))
    key = map_key(patch_id)
    value = archive._txn_get(key)
    if value is None:
        raise ArchiveError(f"{archive.lmdb_dir}::{key}: reference map is missing from the LMDB (the other "
                           "pairs have one)")
    return decode_map_blob(value, f"{archive.lmdb_dir}::{key}")


def manifest_entry(count: int) -> dict[str, Any]:
    """What a store's manifest (``benmm-store.json``) says about the reference maps it holds."""
    return {"count": count, "key": "<patch_id>" + SUFFIX, "tensor": TENSOR, "dtype": str(DTYPE),
            "shape": [SIDE, SIDE],
            "values": "raw CLC Level-3 codes (CLC 2018), 0 = no data, 999 = no CLC data",
            "source": "reBEN Reference_Maps (rico-hdl's LMDB key and tensor name)"}
