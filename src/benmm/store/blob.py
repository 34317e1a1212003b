"""The value format of a store: one safetensors blob ``{band: 2-D array}`` per patch (reBEN's format).

Blobs are written with the safetensors library (byte-identical to reBEN's values). They are read by a
small hand-written header parser instead of ``safetensors.numpy.load`` because the library needs a
``bytes`` object and copies every tensor; parsing the 8-byte length + JSON header ourselves lets a
reader take band arrays as views of one buffer (zero extra copies) or copy only the bands it asks for
straight out of LMDB's memory map. ``tests/test_store.py`` checks the parser against safetensors.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterable, Mapping
from typing import Any, Final, NamedTuple

import numpy as np

from benmm.bands import BAND_DTYPE, BAND_SIZE, S1_BANDS, S2_BANDS

#: safetensors dtype codes -> numpy dtypes (little-endian, as the format requires)
ST_DTYPES: Final = {
    "BOOL": np.dtype("?"), "U8": np.dtype("u1"), "I8": np.dtype("i1"), "U16": np.dtype("<u2"),
    "I16": np.dtype("<i2"), "U32": np.dtype("<u4"), "I32": np.dtype("<i4"), "U64": np.dtype("<u8"),
    "I64": np.dtype("<i8"), "F16": np.dtype("<f2"), "F32": np.dtype("<f4"), "F64": np.dtype("<f8"),
}
#: the bands a value of each modality must hold
MODALITY_BANDS: Final = {"s2": frozenset(S2_BANDS), "s1": frozenset(S1_BANDS)}
_MAX_HEADER: Final = 1 << 20


class BlobError(ValueError):
    """A value that is not a valid safetensors blob of BigEarthNet bands (message says why)."""


Header = dict[str, tuple[np.dtype, tuple[int, ...], int, int]]  # band -> (dtype, shape, start, end)


def encode_blob(arrays: Mapping[str, np.ndarray]) -> bytes:
    """Serialise ``{band: array}`` as safetensors (no pickle; arrays keep shape and dtype).

    Byte-identical to ``safetensors.numpy.save`` (tested), but builds each distinct header once and
    joins the header and the array buffers with a single copy: ~4x faster for the encoder's hot path.
    """
    items = sorted(arrays.items(), key=lambda item: _order(item[0], item[1].dtype))
    parts: list[Any] = [_header((name, arr.dtype, arr.shape) for name, arr in items)]
    for _, arr in items:
        if arr.dtype.byteorder == ">" or not arr.flags.c_contiguous:
            arr = np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("<"))
        parts.append(arr.data)
    return b"".join(parts)


_ENCODED: dict[tuple[Any, ...], bytes] = {}


class BlobLayout(NamedTuple):
    """Where each band lies in a blob of fixed bands: a writer can fill a blob in place."""

    header: bytes  # the blob's first bytes (length + JSON header)
    slots: dict[str, tuple[int, int]]  # band -> (start, end) in the blob
    size: int  # bytes in the blob


def blob_layout(bands: Mapping[str, tuple[np.dtype[Any], tuple[int, ...]]]) -> BlobLayout:
    """The layout of the blob :func:`encode_blob` writes for arrays of these dtypes and shapes: a
    buffer of ``size`` bytes starting with ``header``, each band's little-endian bytes in its slot,
    is byte for byte that blob (tested)."""
    items = sorted(((name, np.dtype(dtype), tuple(shape)) for name, (dtype, shape) in bands.items()),
                   key=lambda item: _order(item[0], item[1]))
    header = _header(items)
    slots, offset = {}, len(header)
    for name, dtype, shape in items:
        nbytes = dtype.itemsize * int(np.prod(shape, dtype=np.int64))
        slots[name] = (offset, offset + nbytes)
        offset += nbytes
    return BlobLayout(header, slots, offset)


def _header(items: Iterable[tuple[str, np.dtype[Any], tuple[int, ...]]]) -> bytes:
    """The header of a blob of these (name, dtype, shape), in blob order; each distinct one built once."""
    key = tuple((name, dtype.kind, dtype.itemsize, shape) for name, dtype, shape in items)
    header = _ENCODED.get(key)
    if header is None:
        header = _ENCODED[key] = _header_bytes(key)
    return header


_CODES: Final = {(dt.kind, dt.itemsize): code for code, dt in ST_DTYPES.items()}
#: safetensors lays tensors out by dtype in this order (its Rust enum, reversed), then by name
_RANK: Final = {code: i for i, code in enumerate(
    ("U64", "I64", "F64", "F32", "U32", "I32", "F16", "U16", "I16", "I8", "U8", "BOOL"))}


def _order(name: str, dtype: np.dtype[Any]) -> tuple[int, str]:
    return _RANK.get(_CODES.get((dtype.kind, dtype.itemsize), ""), len(_RANK)), name


def _header_bytes(key: tuple[Any, ...]) -> bytes:
    entries: dict[str, Any] = {}
    offset = 0
    for name, kind, itemsize, shape in key:
        code = _CODES.get((kind, itemsize))
        if code is None:
            raise BlobError(f"band {name}: dtype {kind}{itemsize} cannot be stored in safetensors")
        nbytes = itemsize * int(np.prod(shape, dtype=np.int64))
        entries[name] = {"dtype": code, "shape": list(shape), "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    text = json.dumps(entries, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text


def parse_header(buf: bytes | memoryview) -> tuple[Header, int]:
    """(band -> (dtype, shape, start, end), offset of the data section) of one blob.

    Checks that the header is well formed and every tensor lies inside ``buf``; raises
    :class:`BlobError` otherwise (a truncated or foreign value). Parsed headers are cached by their
    bytes: every S2 value of a store has the same header, and so has every S1 value.
    """
    size = len(buf)
    if size < 8:
        raise BlobError(f"value is {size} bytes, too short for a safetensors header")
    (n,) = struct.unpack_from("<Q", buf, 0)
    if n > _MAX_HEADER or 8 + n > size:
        raise BlobError(f"value is {size} bytes but its header claims {n} header bytes (truncated?)")
    raw = bytes(buf[8:8 + n])
    cached = _HEADERS.get(raw)
    if cached is None:
        cached = _parse(raw, 8 + n)
        if len(_HEADERS) >= 256:
            _HEADERS.clear()
        _HEADERS[raw] = cached
    header, base, last = cached
    if last > size:
        name = max(header, key=lambda k: header[k][3])
        raise BlobError(f"tensor {name!r} ends at byte {last} but the value has {size} bytes "
                        "(truncated value)")
    return header, base


_HEADERS: dict[bytes, tuple[Header, int, int]] = {}


def _parse(raw: bytes, base: int) -> tuple[Header, int, int]:
    try:
        info_by_name: dict[str, Any] = json.loads(raw)
    except ValueError:
        raise BlobError("value header is not valid JSON (not a safetensors blob)") from None
    if not isinstance(info_by_name, dict):
        raise BlobError("value header is not a JSON object (not a safetensors blob)")
    header: Header = {}
    last = base
    for name, info in info_by_name.items():
        if name == "__metadata__":
            continue
        try:
            dtype = ST_DTYPES[info["dtype"]]
            shape = tuple(int(s) for s in info["shape"])
            start, end = (int(x) for x in info["data_offsets"])
        except (KeyError, TypeError, ValueError):
            raise BlobError(f"tensor {name!r}: malformed header entry {info!r}") from None
        count = 1
        for side in shape:
            count *= side
        if end - start != dtype.itemsize * count or start < 0:
            raise BlobError(f"tensor {name!r}: data offsets {start}..{end} do not match shape {shape}")
        header[name] = (dtype, shape, base + start, base + end)
        last = max(last, base + end)
    return header, base, last


def decode_blob(buf: bytes | memoryview, bands: Iterable[str] | None = None,
                copy: bool = False) -> dict[str, np.ndarray]:
    """Band arrays of one blob.

    ``copy=False``: views into ``buf`` (no copy; read-only when ``buf`` is ``bytes``; only valid while
    ``buf`` is). ``copy=True``: each chosen band copied out into its own writable array.
    """
    header, _ = parse_header(buf)
    names = list(header) if bands is None else list(bands)
    out: dict[str, np.ndarray] = {}
    for name in names:
        try:
            dtype, shape, start, end = header[name]
        except KeyError:
            held = ", ".join(sorted(header))
            raise BlobError(f"band {name} is not in this value (it holds {held})") from None
        arr = np.frombuffer(buf, dtype=dtype, count=(end - start) // dtype.itemsize, offset=start)
        out[name] = arr.reshape(shape).copy() if copy else arr.reshape(shape)
    return out


def check_header(header: Header, modality: str) -> None:
    """Raise :class:`BlobError` unless ``header`` holds exactly the bands of ``modality`` ("s2"/"s1")
    at their native sizes and dtypes."""
    want = MODALITY_BANDS[modality]
    have = set(header)
    if have != want:
        missing, extra = sorted(want - have), sorted(have - want)
        parts = ([f"missing {', '.join(missing)}"] if missing else []) + (
            [f"unexpected {', '.join(extra)}"] if extra else [])
        raise BlobError(f"{modality.upper()} value has the wrong bands: {'; '.join(parts)}")
    for band, (dtype, shape, _, _) in header.items():
        side = BAND_SIZE[band]
        if shape != (side, side):
            raise BlobError(f"band {band} is {'x'.join(map(str, shape))}, expected {side}x{side}")
        if dtype != BAND_DTYPE[band]:
            raise BlobError(f"band {band} is {dtype}, expected {BAND_DTYPE[band]}")
