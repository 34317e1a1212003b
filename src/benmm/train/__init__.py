"""Training and evaluation: the LightningModule (:mod:`.task`), fit (:mod:`.fit`), evaluate and predict
(:mod:`.evaluate`), the paper's multi-label metrics (:mod:`.metrics`) and the recipes (:mod:`.recipes`).

Names load lazily (Lightning is heavy)."""

from __future__ import annotations

from importlib import import_module
from typing import Any

_EXPORTS = {
    "train": "benmm.train.fit",
    "evaluate": "benmm.train.evaluate",
    "predict": "benmm.train.evaluate",
    "compute_metrics": "benmm.train.metrics",
    "load_recipe": "benmm.train.recipes",
    "ClassificationTask": "benmm.train.task",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'benmm.train' has no attribute {name!r}")
