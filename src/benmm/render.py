"""The composites of a patch, on fixed scales: the service's thumbnails, the retrieval plots and the
demo's pair images (:func:`benmm.viz.render_pair`) all use these.

S2 true colour: B04/B03/B02 reflectance (DN / 10,000) on one *fixed* scale for every patch (0 .. 0.25
reflectance, gamma 1/1.6), so that thumbnails of a result grid compare honestly (a per-image stretch
would make a lake look like a forest). S1 false colour: R = VV in [-25, 0] dB, G = VH in [-30, -5] dB,
B = VV - VH in [0, 15] dB (the usual dual-pol composite).
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from typing import Final

import numpy as np
from PIL import Image

from benmm.errors import BenmmError


class RenderError(BenmmError, ValueError):
    """A patch lacks the bands a composite needs, or an unknown composite was asked for."""


S2_RGB: Final = ("B04", "B03", "B02")
S2_MAX_REFLECTANCE: Final = 0.25
S2_GAMMA: Final = 1 / 1.6
S1_RANGES: Final = {"VV": (-25.0, 0.0), "VH": (-30.0, -5.0), "ratio": (0.0, 15.0)}
MODES: Final = ("s2", "s1")


def _unit(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    return np.clip((np.nan_to_num(x.astype(np.float32)) - lo) / (hi - lo), 0.0, 1.0)


def true_colour(bands: Mapping[str, np.ndarray]) -> np.ndarray:
    """``uint8 [H, W, 3]`` from the S2 bands B04, B03, B02 (uint16 DN)."""
    missing = [b for b in S2_RGB if b not in bands]
    if missing:
        raise RenderError(f"true colour needs bands {', '.join(S2_RGB)}; missing {', '.join(missing)}")
    rgb = np.stack([_unit(np.asarray(bands[b]) / 10_000.0, 0.0, S2_MAX_REFLECTANCE) for b in S2_RGB], axis=-1)
    return (rgb**S2_GAMMA * 255).round().astype(np.uint8)


def false_colour_s1(bands: Mapping[str, np.ndarray]) -> np.ndarray:
    """``uint8 [H, W, 3]`` from the S1 bands VV, VH (dB)."""
    if "VV" not in bands or "VH" not in bands:
        raise RenderError("the S1 false colour needs bands VV and VH")
    vv, vh = np.asarray(bands["VV"], np.float32), np.asarray(bands["VH"], np.float32)
    rgb = np.stack(
        [_unit(vv, *S1_RANGES["VV"]), _unit(vh, *S1_RANGES["VH"]), _unit(vv - vh, *S1_RANGES["ratio"])],
        axis=-1,
    )
    return (rgb * 255).round().astype(np.uint8)


def render(bands: Mapping[str, np.ndarray], mode: str = "s2") -> np.ndarray:
    """The ``mode`` rendering; ``s2`` falls back to S1 for S1-only data (and vice versa)."""
    if mode not in MODES:
        raise RenderError(f"unknown rendering {mode!r}: choose one of {', '.join(MODES)}")
    has_s2 = all(b in bands for b in S2_RGB)
    has_s1 = "VV" in bands and "VH" in bands
    if (mode == "s2" and has_s2) or (mode == "s1" and not has_s1 and has_s2):
        return true_colour(bands)
    return false_colour_s1(bands)


def png_bytes(rgb: np.ndarray, size: int | None = None) -> bytes:
    """PNG-encode an RGB array, optionally resized to ``size`` x ``size`` (nearest: keeps pixels sharp)."""
    img = Image.fromarray(np.ascontiguousarray(rgb, dtype=np.uint8))
    if size is not None and size != img.width:
        img = img.resize((size, size), Image.Resampling.NEAREST)
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=False)
    return buf.getvalue()
