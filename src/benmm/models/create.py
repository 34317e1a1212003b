"""``create_model``: a registered model (or ``timm:<name>``) from a modality, bands and options, with
optional local weights. Separate from the registry so that the registry imports no model or weight code."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from benmm.models.hub import is_hub_folder, load_hub_weights
from benmm.models.registry import FUSIONS, BenModel, ModelError, ModelSpec, build, resolve_model_bands
from benmm.models.weights import load_weights


def create_model(
    name: str,
    modality: str = "s1s2",
    num_classes: int = 19,
    bands: str | Iterable[str] | None = None,
    fusion: str = "early",
    weights: str | None = None,
    **options: Any,
) -> BenModel:
    """Build a registered model (or ``timm:<name>``) for the chosen modality and bands.

    ``options`` are model-specific (``drop_rate``, ``drop_path_rate``, ``width`` for K-Branch, ...).
    ``weights`` is a local file: a benmm checkpoint (.ckpt / .safetensors) or a timm state dict; or a
    reBEN/ConfigILM model folder whose name tells its release (:mod:`benmm.models.hub`).
    """
    if fusion not in FUSIONS:
        raise ModelError(f"unknown fusion {fusion!r}; valid fusions: {', '.join(FUSIONS)}")
    if num_classes < 1:
        raise ModelError(f"num_classes must be positive, got {num_classes}")
    spec = ModelSpec(name=name, modality=modality, num_classes=int(num_classes),
                     bands=resolve_model_bands(modality, bands), fusion=fusion, options=dict(options))
    model = build(spec)
    if is_hub_folder(weights):
        load_hub_weights(model, str(weights))
    elif weights is not None:
        load_weights(model, weights)
    return model
