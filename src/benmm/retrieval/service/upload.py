"""Read a query patch given as a file: bands by name in ``.npz`` / ``.safetensors``, or a zipped v1 folder.

Accepted formats (one patch per file):

* ``.npz`` — ``numpy.savez(path, B02=..., B03=..., VV=...)``: one 2-D array per band, named by band;
* ``.safetensors`` — the same mapping (the format of a reBEN / benmm store value);
* ``.zip`` — a v1 patch folder (or the S2 folder and its S1 partner) zipped: files ``<name>_<BAND>.tif``.

Every band must be 2-D at its native size (B02 120x120, B05 60x60, B01 20x20, VV 120x120, ...) and
finite. Sizes are bounded (bytes of the file, members and uncompressed bytes of a zip) so that a
hostile upload cannot exhaust memory. Errors are :class:`UploadError` with ``status`` = the HTTP code
the service answers with (413 too large, 415 wrong type, 422 wrong content).
"""

from __future__ import annotations

import io
import re
import zipfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Final

import numpy as np

from benmm.bands import ALL_BANDS, BAND_SIZE
from benmm.errors import RetrievalError

SUFFIXES: Final = (".npz", ".safetensors", ".zip")
MAX_UPLOAD_BYTES: Final = 8 * 1024 * 1024
#: the 14 bands of a pair take < 0.5 MB at native size as float32; leave room for float64 and headers
MAX_UNCOMPRESSED_BYTES: Final = 32 * 1024 * 1024
MAX_MEMBERS: Final = 64
_TIF_BAND = re.compile(r"_(B0[1-9]|B1[0-2]|B8A|VV|VH)\.tiff?$", re.IGNORECASE)


class UploadError(RetrievalError):
    """A query file that cannot be used; ``status`` is the matching HTTP status code."""

    def __init__(self, message: str, status: int = 422) -> None:
        super().__init__(message)
        self.status = status


def _check_zip(zf: zipfile.ZipFile, what: str) -> list[zipfile.ZipInfo]:
    infos = [i for i in zf.infolist() if not i.is_dir()]
    if len(infos) > MAX_MEMBERS:
        raise UploadError(f"{what} holds {len(infos)} files; at most {MAX_MEMBERS} are accepted", 413)
    total = sum(i.file_size for i in infos)
    if total > MAX_UNCOMPRESSED_BYTES:
        raise UploadError(
            f"{what} unpacks to {total} bytes; at most {MAX_UNCOMPRESSED_BYTES} are accepted", 413
        )
    return infos


#: the largest array a query file may hold: one 10 m band (120 x 120) of 8-byte values
MAX_ARRAY_ELEMENTS: Final = 120 * 120


def check_declared(name: str, shape: tuple[int, ...], dtype: np.dtype, what: str) -> None:
    """Refuse an array from what its header declares, before any pixel is decoded: a band must be 2-D at
    its native size, any other array at most one 10 m band's size; 1 to 8 bytes per value."""
    band = name.upper()
    count = 1
    for side in shape:
        count *= int(side)
    if band in BAND_SIZE:
        size = BAND_SIZE[band]
        if tuple(shape) != (size, size):
            raise UploadError(f"{what}: band {band} is {'x'.join(map(str, shape)) or 'a scalar'}, "
                              f"expected {size}x{size} (its native size)")
    elif count > MAX_ARRAY_ELEMENTS:
        raise UploadError(f"{what}: array {name!r} has {count} values; at most {MAX_ARRAY_ELEMENTS} "
                          "are accepted", 413)
    if not 1 <= dtype.itemsize <= 8:
        raise UploadError(f"{what}: array {name!r} has dtype {dtype}; expected numbers")


def _read_tiff(raw: bytes, band: str, what: str) -> np.ndarray:
    """One band GeoTIFF, checked from its tags (one page, shape, dtype) before its pixels are decoded:
    a small compressed file can declare a huge image."""
    import tifffile

    with tifffile.TiffFile(io.BytesIO(raw)) as tif:
        if len(tif.pages) != 1:
            raise UploadError(f"{what}: a band file must hold one image, this one holds {len(tif.pages)}")
        page = tif.pages.first
        check_declared(band, tuple(page.shape), np.dtype(page.dtype), what)
        return np.asarray(page.asarray())


def _read_npz(data: bytes) -> dict[str, np.ndarray]:
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            for info in _check_zip(zf, "the .npz file"):  # each member's .npy header, before loading
                with zf.open(info) as fh:
                    fmt = np.lib.format
                    major, _ = fmt.read_magic(fh)
                    read = fmt.read_array_header_1_0 if major == 1 else fmt.read_array_header_2_0
                    shape, _, dtype = read(fh)
                check_declared(info.filename.removesuffix(".npy"), tuple(shape), np.dtype(dtype),
                               "the .npz file")
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            return {k: np.asarray(npz[k]) for k in npz.files}
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as exc:
        raise UploadError(f"not a readable .npz file ({exc})") from None


def _read_safetensors(data: bytes) -> dict[str, np.ndarray]:
    # the store's parser of the value format: shapes come from the header, checked before decoding
    from benmm.store.blob import BlobError, decode_blob, parse_header

    try:
        header, _ = parse_header(data)
        for name, (dtype, shape, _start, _end) in header.items():
            check_declared(name, shape, dtype, "the .safetensors file")
        return decode_blob(data, copy=True)
    except BlobError as exc:
        raise UploadError(f"not a readable .safetensors file ({exc})") from None


def _read_zip(data: bytes) -> dict[str, np.ndarray]:
    bands: dict[str, np.ndarray] = {}
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            for info in _check_zip(zf, "the .zip file"):
                m = _TIF_BAND.search(info.filename)
                if m is None:
                    continue
                band = m.group(1).upper()
                if band in bands:
                    raise UploadError(
                        f"the .zip holds band {band} twice; zip one patch (S2 and/or S1 folder)"
                    )
                bands[band] = _read_tiff(zf.read(info), band, f"the .zip member {info.filename}")
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as exc:
        raise UploadError(f"not a readable .zip of a v1 patch folder ({exc})") from None
    except Exception as exc:  # tifffile raises its own TiffFileError (a ValueError subclass in most versions)
        if type(exc).__name__ == "TiffFileError":
            raise UploadError(f"a band file in the .zip is not a readable GeoTIFF ({exc})") from None
        raise
    if not bands:
        raise UploadError("the .zip holds no band files named <patch>_<BAND>.tif (a v1 patch folder)")
    return bands


_READERS: Final = {".npz": _read_npz, ".safetensors": _read_safetensors, ".zip": _read_zip}


def read_patch_bytes(data: bytes, filename: str, max_bytes: int = MAX_UPLOAD_BYTES) -> dict[str, np.ndarray]:
    """Band arrays from an uploaded file's bytes (format chosen by the file name's suffix)."""
    suffix = Path(filename or "").suffix.lower()
    if suffix not in _READERS:
        raise UploadError(
            f"unsupported file type {suffix or '(none)'!r}: upload a {', '.join(SUFFIXES)} file", 415
        )
    if len(data) > max_bytes:
        raise UploadError(f"the file is {len(data)} bytes; at most {max_bytes} are accepted", 413)
    if not data:
        raise UploadError("the file is empty")
    return _READERS[suffix](data)


def read_patch_file(path: str | Path, max_bytes: int = MAX_UPLOAD_BYTES) -> dict[str, np.ndarray]:
    """Band arrays of a query patch on disk: a file (as for uploads) or an unzipped v1 folder."""
    p = Path(path)
    if p.is_dir():
        bands = {}
        for f in sorted(p.rglob("*.tif*")):
            m = _TIF_BAND.search(f.name)
            if m:
                try:
                    bands[m.group(1).upper()] = _read_tiff(f.read_bytes(), m.group(1).upper(), str(f))
                except (ValueError, OSError) as exc:  # tifffile's TiffFileError is a ValueError
                    raise UploadError(f"{f}: not a readable GeoTIFF ({exc})") from None
        if not bands:
            raise UploadError(f"{p}: no band files named <patch>_<BAND>.tif in this folder")
        return bands
    if not p.is_file():
        raise UploadError(f"{p}: no such file or folder")
    return read_patch_bytes(p.read_bytes(), p.name, max_bytes=max_bytes)


def check_bands(bands: Mapping[str, np.ndarray], required: Iterable[str]) -> dict[str, np.ndarray]:
    """The ``required`` bands, each checked to be 2-D at native size and finite (extra bands are ignored)."""
    required = tuple(required)
    unknown = sorted(set(bands) - set(ALL_BANDS))
    missing = [b for b in required if b not in bands]
    if missing:
        hint = f" (unknown names in the file: {', '.join(unknown)})" if unknown else ""
        raise UploadError(
            f"missing bands {', '.join(missing)}; this index's model needs {', '.join(required)}{hint}"
        )
    out = {}
    for band in required:
        arr = np.asarray(bands[band])
        size = BAND_SIZE[band]
        if arr.shape != (size, size):
            raise UploadError(
                f"band {band} is {'x'.join(map(str, arr.shape)) or 'a scalar'}, expected "
                f"{size}x{size} (its native size)"
            )
        if not np.issubdtype(arr.dtype, np.number) or np.issubdtype(arr.dtype, np.complexfloating):
            raise UploadError(f"band {band} has dtype {arr.dtype}; expected numbers")
        arr = arr.astype(np.float32)
        if not np.isfinite(arr).all():
            raise UploadError(f"band {band} holds NaN or infinite values")
        out[band] = arr
    return out
