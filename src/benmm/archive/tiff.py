"""Read one BigEarthNet band file (a single-band GeoTIFF) into a 2-D numpy array.

Why a hand-written reader: every v1 band file has the same simple layout (classic little-endian
TIFF, one uncompressed band, contiguous strips, image data after the IFD). For that layout, one
``read`` of the whole file plus ``struct`` parsing of the first IFD and one ``np.frombuffer`` is
several times faster than ``tifffile.imread`` (see ``benchmarks/bench_archive.py``), which matters when
the encoder reads 14 files for each of ~590k pairs. Anything else (compression, tiles, big-endian,
BigTIFF, predictors, several samples per pixel) goes to ``tifffile``. Parsed layouts are cached by
their IFD bytes (``_LAYOUTS``), so the ~590k files of one band, which share a layout, are parsed once.
``tests/test_tiff.py`` checks that both paths agree on every band of every real sample.

The encoder goes one step further with :func:`read_band_into`: the pixel bytes of a file are read
straight into the caller's buffer (a slice of the store value being built), the TIFF header into a
small scratch buffer, in one ``preadv``; the header is then checked against the cached layout of
that band, byte for byte as above. Anything unexpected takes :func:`read_band`'s path and is copied.
"""

from __future__ import annotations

import contextlib
import os
import struct
from typing import Any, Final, NamedTuple

import numpy as np

from benmm.bands import BAND_DTYPE, BAND_SIZE
from benmm.errors import ArchiveError, BandError

# TIFF tag ids (TIFF 6.0 spec)
_WIDTH: Final = 256
_HEIGHT: Final = 257
_BITS: Final = 258
_COMPRESSION: Final = 259
_STRIP_OFFSETS: Final = 273
_SAMPLES: Final = 277
_STRIP_COUNTS: Final = 279
_PLANAR: Final = 284
_PREDICTOR: Final = 317
_TILE_WIDTH: Final = 322
_SAMPLE_FORMAT: Final = 339
#: TIFF field type -> (struct code, size)
_TYPES: Final = {1: ("B", 1), 3: ("H", 2), 4: ("I", 4), 16: ("Q", 8)}
#: SampleFormat (1 = unsigned int, 2 = signed int, 3 = IEEE float) -> numpy kind
_KIND: Final = {1: "u", 2: "i", 3: "f"}


_OPEN_FLAGS: Final = os.O_RDONLY | getattr(os, "O_BINARY", 0)


class _Unsupported(Exception):
    """The file is a valid TIFF but not in the simple layout; let tifffile read it."""


def _drop_cached(fd: int) -> None:
    """Tell the kernel this file's cached pages will not be read again (see :func:`read_band_into`).
    Advice only: never raises."""
    if hasattr(os, "posix_fadvise"):
        with contextlib.suppress(OSError):
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)


def _read_all(path: str | os.PathLike[str], drop_cache: bool = False) -> bytearray:
    """The whole file in one read (band files are <= 58 KB); a bytearray so the array is writable."""
    fd = os.open(path, _OPEN_FLAGS)
    try:
        size = os.fstat(fd).st_size
        buf = bytearray(size)
        view = memoryview(buf)
        got = 0
        while got < size:  # one call in practice; loop for short reads on network file systems
            n = os.readv(fd, [view[got:]])
            if n == 0:
                break
            got += n
        return buf if got == size else buf[:got]
    finally:
        if drop_cache:
            _drop_cached(fd)
        os.close(fd)


class _Layout(NamedTuple):
    """What a full parse of one IFD concluded, reusable for any file with the same IFD bytes."""

    regions: tuple[tuple[int, bytes], ...]  # out-of-line values the parse used: (offset, exact bytes)
    need: int  # the file must have at least this many bytes (image data and every typed tag value)
    start: int
    dtype: np.dtype[Any]
    shape: tuple[int, int]


#: IFD bytes (``buf[:8] + buf[ifd:ifd + 6 + 12 * count]``: byte order, IFD offset, every 12-byte entry
#: and the next-IFD pointer) -> layout. Every input of ``_parse`` is either in the key (entries hold
#: types, counts and in-line values; out-of-line ones hold offsets), compared byte for byte on a hit
#: (``regions``: strip offsets/byte counts and any other interpreted array) or the file size (``need``),
#: so a hit returns exactly what a full parse would. Tags the reader does not interpret (the geo tags:
#: tie point, pixel scale, GeoKeys; they differ per patch) are not part of the key, so all patches of
#: one band share an entry. Bounded: cleared when full (a real archive has a handful of layouts).
_LAYOUTS: dict[bytes, _Layout] = {}
_LAYOUTS_MAX: Final = 256
#: tags whose values decide the result; only their out-of-line values are compared on a hit
_USED: Final = frozenset({_WIDTH, _HEIGHT, _BITS, _COMPRESSION, _STRIP_OFFSETS, _SAMPLES, _STRIP_COUNTS,
                          _PLANAR, _PREDICTOR, _TILE_WIDTH, _SAMPLE_FORMAT})


def _ifd_key(buf: bytes | bytearray) -> bytes | None:
    """The layout cache key of ``buf``, or None when the IFD is not whole (the full parse decides)."""
    size = len(buf)
    if size < 8 or buf[:4] != b"II*\x00":
        return None
    ifd = int.from_bytes(buf[4:8], "little")
    if ifd + 2 > size:
        return None
    end = ifd + 6 + 12 * int.from_bytes(buf[ifd:ifd + 2], "little")
    if end > size:
        return None
    return bytes(buf[:8]) + bytes(buf[ifd:end])


def _cached(buf: bytes | bytearray, size: int) -> _Layout | None:
    """The cached layout of ``buf`` (a file of ``size`` bytes whose first ``len(buf)`` are in ``buf``),
    or None when it was not seen before or any byte it depends on differs."""
    key = _ifd_key(buf)
    hit = _LAYOUTS.get(key) if key is not None else None
    if hit is not None and size >= hit.need and all(
            off + len(want) <= len(buf) and buf[off:off + len(want)] == want for off, want in hit.regions):
        return hit
    return None


def _layout(buf: bytes | bytearray, path: str | os.PathLike[str]) -> _Layout:
    """The layout of the whole file ``buf``: from the cache, else a full parse (then cached)."""
    layout = _cached(buf, len(buf))
    if layout is None:
        layout = _parse(buf, path)
        key = _ifd_key(buf)
        if key is not None:
            if len(_LAYOUTS) >= _LAYOUTS_MAX:
                _LAYOUTS.clear()
            _LAYOUTS[key] = layout
    return layout




def _parse(buf: bytes | bytearray, path: str | os.PathLike[str]) -> _Layout:
    """Parse the simple layout; raise _Unsupported for anything else, ArchiveError for damage."""
    size = len(buf)
    if size < 8:
        raise ArchiveError(f"{path}: file has {size} bytes, too short to be a GeoTIFF (truncated?)")
    if buf[:4] != b"II*\x00":
        raise _Unsupported  # big-endian, BigTIFF or not a TIFF: tifffile decides
    (ifd,) = struct.unpack_from("<I", buf, 4)
    if ifd + 2 > size:
        raise ArchiveError(f"{path}: the TIFF directory lies beyond the end of the file (truncated)")
    (count,) = struct.unpack_from("<H", buf, ifd)
    if ifd + 2 + 12 * count > size:
        raise ArchiveError(f"{path}: the TIFF directory is cut off (file truncated)")
    end = ifd + 2 + 12 * count
    (next_ifd,) = struct.unpack_from("<I", buf, end) if end + 4 <= size else (1,)
    if next_ifd != 0:
        raise _Unsupported  # several pages: tifffile reads them all and the shape check rejects it
    tags: dict[int, tuple[int, ...]] = {}
    regions: list[tuple[int, bytes]] = []
    need = 0
    for i in range(count):
        tag, typ, n, value = struct.unpack_from("<HHII", buf, ifd + 2 + 12 * i)
        if typ not in _TYPES:
            continue  # ASCII, RATIONAL, DOUBLE (geo tags): not needed here
        code, width = _TYPES[typ]
        if n * width <= 4:
            tags[tag] = struct.unpack_from(f"<{n}{code}", buf, ifd + 2 + 12 * i + 8)
        else:
            if value + n * width > size:
                raise ArchiveError(f"{path}: TIFF tag {tag} points beyond the end of the file (truncated)")
            tags[tag] = struct.unpack_from(f"<{n}{code}", buf, value)
            need = max(need, value + n * width)
            if tag in _USED:
                regions.append((value, bytes(buf[value:value + n * width])))
    try:
        width, height = tags[_WIDTH][0], tags[_HEIGHT][0]
        offsets, counts = tags[_STRIP_OFFSETS], tags[_STRIP_COUNTS]
    except KeyError:
        raise _Unsupported from None
    if (tags.get(_COMPRESSION, (1,))[0] != 1 or tags.get(_SAMPLES, (1,))[0] != 1
            or tags.get(_PLANAR, (1,))[0] != 1 or tags.get(_PREDICTOR, (1,))[0] != 1
            or _TILE_WIDTH in tags or len(offsets) != len(counts)):
        raise _Unsupported
    bits = tags.get(_BITS, (1,))
    kind = _KIND.get(tags.get(_SAMPLE_FORMAT, (1,))[0])
    if kind is None or len(set(bits)) != 1 or bits[0] not in (8, 16, 32, 64):
        raise _Unsupported
    dtype = np.dtype(f"<{kind}{bits[0] // 8}")
    nbytes = width * height * dtype.itemsize
    start = offsets[0]
    if any(offsets[i + 1] != offsets[i] + counts[i] for i in range(len(offsets) - 1)):
        raise _Unsupported  # strips not back to back
    if sum(counts) < nbytes:
        raise _Unsupported
    if start + nbytes > size:
        raise ArchiveError(
            f"{path}: image data ends at byte {start + nbytes} but the file has {size} bytes (truncated)"
        )
    return _Layout(tuple(regions), max(need, start + nbytes), start, dtype, (height, width))


def _fallback(path: str | os.PathLike[str]) -> np.ndarray:
    import tifffile

    try:
        return np.asarray(tifffile.imread(path))
    except Exception as exc:  # tifffile raises many types for damaged files; all mean "unreadable"
        raise ArchiveError(f"{path}: not a readable GeoTIFF ({type(exc).__name__}: {exc})") from None


def _read_image(path: str | os.PathLike[str], drop_cache: bool) -> tuple[np.ndarray, _Layout | None]:
    """The image of a single-band TIFF and its layout (None when ``tifffile`` read it)."""
    try:
        buf = _read_all(path, drop_cache)
    except FileNotFoundError:
        raise ArchiveError(f"{os.fspath(path)}: band file is missing") from None
    except OSError as exc:
        raise ArchiveError(f"{os.fspath(path)}: cannot read band file ({exc.strerror or exc})") from None
    try:
        layout = _layout(buf, path)
    except _Unsupported:
        return _fallback(path), None
    h, w = layout.shape
    return np.frombuffer(buf, dtype=layout.dtype, count=h * w, offset=layout.start).reshape(h, w), layout


def read_tiff(path: str | os.PathLike[str], drop_cache: bool = False) -> np.ndarray:
    """Read a single-band TIFF without checking it against a band's size and dtype."""
    return _read_image(path, drop_cache)[0]


def check_band(arr: np.ndarray, band: str, path: str | os.PathLike[str]) -> np.ndarray:
    """Return ``arr`` in native byte order if it has ``band``'s size and dtype, else raise ArchiveError."""
    side = BAND_SIZE[band]
    if arr.shape != (side, side):
        shape = "x".join(str(s) for s in arr.shape)
        raise ArchiveError(
            f"{path}: band {band} is {shape}, expected {side}x{side} "
            "(file damaged or not a BigEarthNet patch)"
        )
    want = BAND_DTYPE[band]
    if arr.dtype != want:
        if arr.dtype.kind == want.kind and arr.dtype.itemsize == want.itemsize:
            return arr.astype(want)  # same type, other byte order
        raise ArchiveError(f"{path}: band {band} has dtype {arr.dtype}, expected {want}")
    return arr


def read_band(path: str | os.PathLike[str], band: str, drop_cache: bool = False) -> np.ndarray:
    """Read band file ``path`` of band ``band`` (``"B01"`` .. ``"B12"``, ``"VV"``, ``"VH"``).

    Returns a writable 2-D array at native size and dtype (uint16 for S2, float32 for S1). Raises
    :class:`ArchiveError` naming the file when it is missing, truncated, unreadable, or has the wrong
    shape or dtype for ``band``. ``drop_cache``: see :func:`read_band_into`.
    """
    if band not in BAND_SIZE:
        raise BandError(f"unknown band {band!r}; bands are {', '.join(BAND_SIZE)}")
    return check_band(read_tiff(path, drop_cache), band, path)


#: band -> offset of the image data in the last file of that band read by :func:`read_band_into`
_START: dict[str, int] = {}
#: header size -> reused scratch buffer for the bytes before the image data
_HEADS: dict[int, bytearray] = {}


def read_band_into(path: str, band: str, out: memoryview, drop_cache: bool = False) -> np.ndarray:
    """Read band file ``path`` of ``band`` into ``out`` (exactly the band's bytes, little-endian).

    Returns the band as an array viewing ``out``. Same checks and errors as :func:`read_band`; the
    pixels go straight from the file into ``out``. ``drop_cache`` tells the kernel the file will not
    be read again (``POSIX_FADV_DONTNEED``): an encode reads each file once, and this keeps a 120 GB
    archive from pushing everything else out of the page cache (those pages are reused for the store
    being written).
    """
    if band not in BAND_SIZE:
        raise BandError(f"unknown band {band!r}; bands are {', '.join(BAND_SIZE)}")
    side, dtype = BAND_SIZE[band], BAND_DTYPE[band].newbyteorder("<")
    nbytes = side * side * dtype.itemsize
    if len(out) != nbytes:
        raise ValueError(f"band {band}: buffer has {len(out)} bytes, the band has {nbytes}")
    want = np.frombuffer(out, dtype=dtype).reshape(side, side)
    start = _START.get(band)
    if start is not None and _into(path, start, out, (side, side), dtype, drop_cache):
        return want
    # first file of this band, or anything unusual: the full path, and its layout for the next files
    arr, layout = _read_image(path, drop_cache)
    want[...] = check_band(arr, band, path)
    if layout is not None and layout.shape == (side, side) and layout.dtype == dtype:
        _START[band] = layout.start
    return want


def _into(path: str, start: int, out: memoryview, shape: tuple[int, int], dtype: np.dtype[Any],
          drop_cache: bool) -> bool:
    """The fast path of :func:`read_band_into`; False when the file is not laid out like the last one."""
    head = _HEADS.get(start)
    if head is None:
        head = _HEADS[start] = bytearray(start)
    try:
        fd = os.open(path, _OPEN_FLAGS)
    except OSError:
        return False  # the full path names the problem
    try:
        got = os.preadv(fd, [head, out], 0)
    except OSError:
        return False
    finally:
        if drop_cache:
            _drop_cached(fd)
        os.close(fd)
    if got != start + len(out):
        return False  # truncated (or a short read): the full path decides
    layout = _cached(head, got)
    return layout is not None and layout.start == start and layout.shape == shape and layout.dtype == dtype


def read_band_bytes(data: bytes, band: str, where: str, out: memoryview) -> np.ndarray:
    """Band ``band`` from the bytes of its GeoTIFF (a tarball member), written into ``out`` (the band's
    exact byte size, little-endian) and returned as an array viewing it. Same checks and errors as
    :func:`read_band`, naming ``where``; the layout cache makes the fast path one parse per band."""
    if band not in BAND_SIZE:
        raise BandError(f"unknown band {band!r}; bands are {', '.join(BAND_SIZE)}")
    side, dtype = BAND_SIZE[band], BAND_DTYPE[band].newbyteorder("<")
    want = np.frombuffer(out, dtype=dtype).reshape(side, side)
    try:
        layout = _layout(data, where)
    except _Unsupported:
        import io

        import tifffile

        try:
            arr = np.asarray(tifffile.imread(io.BytesIO(data)))
        except Exception as exc:  # tifffile raises many types for damaged files; all mean "unreadable"
            raise ArchiveError(f"{where}: not a readable GeoTIFF ({type(exc).__name__}: {exc})") from None
    else:
        h, w = layout.shape
        arr = np.frombuffer(data, dtype=layout.dtype, count=h * w, offset=layout.start).reshape(h, w)
    want[...] = check_band(arr, band, where)
    return want
