"""One row of an experiment's results: a setting scored on one nomenclature, its values over seeds."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Final

import numpy as np

METRICS: Final = ("ap_macro", "ap_micro", "f1_macro", "f1_micro", "f2_micro")
CLASS_METRICS: Final = ("ap", "f1")
REPORTED_LABEL: Final = "reported, real archive"


@dataclass
class Row:
    """One setting scored on one nomenclature, over its seeds."""

    setting: dict[str, Any]
    scored_on: int
    init_kind: str
    seeds: list[int] = field(default_factory=list)
    values: dict[str, list[float]] = field(default_factory=dict)
    per_class: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    reported: dict[str, Any] | None = None

    def mean(self, key: str) -> float:
        v = self.values.get(key, [])
        return float(np.mean(v)) if v else math.nan

    def std(self, key: str) -> float:
        v = self.values.get(key, [])
        return float(np.std(v, ddof=1)) if len(v) > 1 else math.nan

    def class_mean(self, name: str, key: str) -> float:
        v = self.per_class.get(name, {}).get(key, [])
        finite = [x for x in v if x == x]
        return float(np.mean(finite)) if finite else math.nan

    @property
    def init_label(self) -> str:
        init = str(self.setting["init"])
        if self.init_kind == "stand-in":
            return f"{init} (stand-in: random timm weights)"
        if self.init_kind == "pretrain":
            return f"{init} (pretrained here, full train split)"
        return init


def describe(row: Row) -> str:
    s = row.setting
    return (f"{s['model']} {s['modality']} L{s['labels']} {row.init_label} f{s['fraction']:g} "
            f"(on {row.scored_on})")
