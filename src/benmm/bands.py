"""Band names, canonical order, native sizes and resolutions, dtypes, groups, normalisation stats."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache
from typing import Final

import numpy as np

from benmm.errors import BandError
from benmm.resources import resource_path

S2_BANDS: Final = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B11", "B12")
S1_BANDS: Final = ("VV", "VH")
ALL_BANDS: Final = S2_BANDS + S1_BANDS

BAND_RESOLUTION: Final = {
    "B01": 60, "B02": 10, "B03": 10, "B04": 10, "B05": 20, "B06": 20, "B07": 20, "B08": 10,
    "B8A": 20, "B09": 60, "B11": 20, "B12": 20, "VV": 10, "VH": 10,
}
#: side length in pixels of a 1.2 km x 1.2 km patch at the band's native resolution
PATCH_METRES: Final = 1200
BAND_SIZE: Final = {band: PATCH_METRES // res for band, res in BAND_RESOLUTION.items()}
BAND_DTYPE: Final = {band: np.dtype(np.uint16) for band in S2_BANDS} | {
    band: np.dtype(np.float32) for band in S1_BANDS
}
MODALITY_OF: Final = {band: "s2" for band in S2_BANDS} | {band: "s1" for band in S1_BANDS}

BAND_GROUPS: Final = {
    "s2-rgb": ("B04", "B03", "B02"),
    "s2-10m": ("B02", "B03", "B04", "B08"),
    "s2-10m20m": ("B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B11", "B12"),
    "s2-all": S2_BANDS,
    "s1": S1_BANDS,
    "s1s2": S2_BANDS + S1_BANDS,
}

RESOLUTION_GROUPS: Final = {10: "s2", 20: "s2_20m", 60: "s2_60m"}
"""Sample key (DESIGN §4) that holds S2 bands of each native resolution."""


def _unknown(name: str) -> BandError:
    import difflib

    known = list(ALL_BANDS) + list(BAND_GROUPS)
    padded = f"B0{name[1:]}" if len(name) == 2 and name[0] in "bB" and name[1].isdigit() else None
    close = ([padded.upper()] if padded and padded.upper() in ALL_BANDS
             else difflib.get_close_matches(name, known, n=1, cutoff=0.5))
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return BandError(
        f"unknown band or band group {name!r}{hint}. Bands: {', '.join(ALL_BANDS)}; "
        f"groups: {', '.join(BAND_GROUPS)}"
    )


def resolve_bands(bands: str | Iterable[str]) -> tuple[str, ...]:
    """Expand band names and group names into unique band names in canonical order (S2 then S1).

    Always canonical, also for ``"s2-rgb"`` (-> B02, B03, B04): display order is the renderer's job
    (``BAND_GROUPS["s2-rgb"]`` keeps the R, G, B order for it).
    """
    items = [bands] if isinstance(bands, str) else list(bands)
    if not items:
        raise BandError("no bands given; name at least one band or band group")
    chosen: set[str] = set()
    for item in items:
        if item in BAND_GROUPS:
            chosen.update(BAND_GROUPS[item])
        elif item in BAND_RESOLUTION:
            chosen.add(item)
        else:
            raise _unknown(item)
    return tuple(b for b in ALL_BANDS if b in chosen)


def split_by_modality(bands: Iterable[str]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(S2 bands, S1 bands), each in canonical order."""
    chosen = set(resolve_bands(list(bands)))
    return tuple(b for b in S2_BANDS if b in chosen), tuple(b for b in S1_BANDS if b in chosen)


MODALITIES: Final = ("s1", "s2", "s1s2")


def check_modality(modality: str) -> str:
    if modality not in MODALITIES:
        raise BandError(f"unknown modality {modality!r}; valid modalities: {', '.join(MODALITIES)}")
    return modality


def choose_bands(modality: str, bands: str | Iterable[str] | None) -> tuple[str, ...]:
    """The bands a dataset or a model of ``modality`` uses, canonical order (S2 then S1): the one rule.

    ``bands=None`` takes every band of the modality. For ``s1s2``, naming only S2 bands keeps both S1
    bands (``modality="s1s2", bands="s2-10m20m"``) and naming only S1 bands keeps all S2 bands.
    """
    check_modality(modality)
    if bands is None:
        return {"s1": S1_BANDS, "s2": S2_BANDS, "s1s2": S2_BANDS + S1_BANDS}[modality]
    s2, s1 = split_by_modality(resolve_bands(bands))
    if modality == "s1":
        if s2:
            raise BandError(f"modality 's1' has only the bands {', '.join(S1_BANDS)}; "
                            f"got S2 bands {', '.join(s2)} (use modality='s1s2' for both)")
        return s1
    if modality == "s2":
        if s1:
            raise BandError(f"modality 's2' has only the bands {', '.join(S2_BANDS)}; "
                            f"got S1 bands {', '.join(s1)} (use modality='s1s2' for both)")
        return s2
    return (s2 or S2_BANDS) + (s1 or S1_BANDS)


def group_by_resolution(bands: Iterable[str]) -> dict[int, tuple[str, ...]]:
    """S2 bands grouped by native resolution (10, 20, 60), canonical order inside each group."""
    s2, _ = split_by_modality(bands)
    out: dict[int, tuple[str, ...]] = {}
    for res in (10, 20, 60):
        group = tuple(b for b in s2 if BAND_RESOLUTION[b] == res)
        if group:
            out[res] = group
    return out


@dataclass(frozen=True)
class BandStats:
    """Per-band mean and std with their provenance."""

    name: str
    source: str
    mean: dict[str, float]
    std: dict[str, float]

    def arrays(self, bands: Iterable[str]) -> tuple[np.ndarray, np.ndarray]:
        names = list(bands)
        missing = [b for b in names if b not in self.mean or b not in self.std]
        if missing:
            raise BandError(f"band statistics {self.name!r} have no entry for {', '.join(missing)}")
        return (np.array([self.mean[b] for b in names], dtype=np.float32),
                np.array([self.std[b] for b in names], dtype=np.float32))

    def to_json(self) -> dict[str, object]:
        return {"name": self.name, "source": self.source, "mean": self.mean, "std": self.std}

    @classmethod
    def from_json(cls, data: dict[str, object]) -> BandStats:
        return cls(name=str(data["name"]), source=str(data["source"]),
                   mean={k: float(v) for k, v in dict(data["mean"]).items()},  # type: ignore[call-overload]
                   std={k: float(v) for k, v in dict(data["std"]).items()})  # type: ignore[call-overload]


STATS_V1_SOURCE: Final = (
    "BigEarthNet v1.0 official models (bigearthnet-common 2.8.0, band_stats_v1.json): "
    "S2 in uint16 DN, S1 in dB"
)


@cache
def stats_v1() -> BandStats:
    """The official v1 per-band statistics (S2 in DN, S1 in dB)."""
    raw = json.loads(resource_path("band_stats_v1.json").read_text(encoding="utf-8"))
    mean = {**raw["s2"]["mean"], **raw["s1"]["mean"]}
    std = {**raw["s2"]["std"], **raw["s1"]["std"]}
    return BandStats(name="v1", source=STATS_V1_SOURCE, mean=mean, std=std)


STATS_REBEN_FILE: Final = "band_stats_reben.json"


@cache
def stats_reben() -> BandStats:
    """The BigEarthNet v2.0 (reBEN) statistics the published reBEN / ConfigILM models were trained with
    (S2 in DN after nearest upsampling to 120x120, S1 in dB; the source is in the file)."""
    raw = json.loads(resource_path(STATS_REBEN_FILE).read_text(encoding="utf-8"))
    mean = {**raw["s2"]["mean"], **raw["s1"]["mean"]}
    std = {**raw["s2"]["std"], **raw["s1"]["std"]}
    return BandStats(name="reben", source=str(raw["source"]), mean=mean, std=std)


NAMED_STATS: Final = {"v1": stats_v1, "reben": stats_reben}


def load_stats(name_or_path: str) -> BandStats:
    """Named statistics (``"v1"``) or a JSON file written by ``benmm stats``."""
    if name_or_path in NAMED_STATS:
        return NAMED_STATS[name_or_path]()
    from pathlib import Path

    path = Path(name_or_path)
    if not path.is_file():
        raise BandError(
            f"band statistics {name_or_path!r} not found: use one of {', '.join(NAMED_STATS)} "
            "or a JSON file written by `benmm stats`"
        )
    try:
        return BandStats.from_json(json.loads(path.read_text(encoding="utf-8")))
    except (ValueError, KeyError, TypeError) as exc:
        raise BandError(f"{path}: not a benmm band statistics file ({exc})") from None
