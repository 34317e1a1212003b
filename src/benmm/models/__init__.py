"""Model registry: the paper's baselines (K-Branch CNN, VGG16/19, ResNet50/101/152), any timm backbone
(``timm:<name>``), early and late S1+S2 fusion. ``model(batch) -> logits``, ``model.features(batch)``."""

from __future__ import annotations

# the model modules register themselves on import (timm's way): importing the package loads them all
from benmm.models import fusion, kbranch  # noqa: F401
from benmm.models.create import create_model
from benmm.models.registry import (
    BenModel,
    ModelError,
    ModelSpec,
    build,
    describe_models,
    list_models,
    register_model,
)
from benmm.models.weights import export_safetensors, load_weights

__all__ = [
    "BenModel",
    "ModelError",
    "ModelSpec",
    "build",
    "create_model",
    "describe_models",
    "export_safetensors",
    "list_models",
    "load_weights",
    "register_model",
]
