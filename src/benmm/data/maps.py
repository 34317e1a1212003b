"""Reading a reBEN reference-map value (safetensors ``{"Data": uint16 [120, 120]}``, see
:mod:`benmm.archive.refmaps`) straight from an LMDB buffer into a Dataset's int64 output."""

from __future__ import annotations

from typing import Any

import numpy as np

from benmm.archive.refmaps import SIDE, TENSOR
from benmm.store.blob import BlobError, parse_header


def fill_map(buf: Any, out: np.ndarray) -> str | None:
    """Copy the map in value ``buf`` (a buffer, or None when the key is missing) into ``out``;
    returns why the value is not a map value, or None. The codes were checked when the store was
    encoded, so they are not checked again per sample."""
    if buf is None:
        return "key is missing from the store (no reference map)"
    try:
        header, _ = parse_header(buf)
    except BlobError as exc:
        return str(exc)
    dtype, shape, start, end = header.get(TENSOR, (None, None, 0, 0))
    if dtype != np.dtype("<u2") or shape != (SIDE, SIDE) or len(buf) < end:
        return f"not a {SIDE}x{SIDE} uint16 {TENSOR!r} tensor"
    out[...] = np.frombuffer(buf, dtype="<u2", count=SIDE * SIDE, offset=start).reshape(SIDE, SIDE)
    return None
