"""Training and evaluation: the LightningModule (:mod:`.task`), fit (:mod:`.fit`), evaluate and predict
(:mod:`.evaluate`), the paper's multi-label metrics (:mod:`.metrics`) and the recipes (:mod:`.recipes`).

Names load lazily (Lightning is heavy)."""

from __future__ import annotations

from benmm.lazy import lazy_getattr

_EXPORTS = {
    "train": "benmm.train.fit",
    "evaluate": "benmm.train.evaluate",
    "predict": "benmm.train.evaluate",
    "compute_metrics": "benmm.train.metrics",
    "load_recipe": "benmm.train.recipes",
    "ClassificationTask": "benmm.train.task",
}
__all__ = sorted(_EXPORTS)


__getattr__ = lazy_getattr(__name__, _EXPORTS)
