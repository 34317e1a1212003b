"""Model registry: name -> factory, and the common model interface.

Every registered model is a :class:`BenModel`: ``model(batch) -> logits [B, C]`` and
``model.features(batch) -> [B, D]`` on the transformed batch dict of DESIGN §4 (keys ``s2``, ``s1``;
``s2_20m``/``s2_60m`` for models that take native resolutions). ``model.spec`` holds everything needed
to rebuild the model (it goes into checkpoints), so a checkpoint never depends on pickled classes.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import Any, Final

import torch
from torch import nn

from benmm.bands import choose_bands, split_by_modality
from benmm.errors import BenmmError, RetrievalError


class ModelError(BenmmError):
    """Unknown model, bad model options, or weights that do not fit the model."""


FUSIONS: Final = ("early", "late")
TIMM_PREFIX: Final = "timm:"


@dataclass(frozen=True)
class ModelSpec:
    """Everything needed to rebuild a model (saved in checkpoints as plain JSON-able values)."""

    name: str
    modality: str
    num_classes: int
    bands: tuple[str, ...]
    fusion: str = "early"
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def s2_bands(self) -> tuple[str, ...]:
        return split_by_modality(self.bands)[0] if self.modality != "s1" else ()

    @property
    def s1_bands(self) -> tuple[str, ...]:
        return split_by_modality(self.bands)[1] if self.modality != "s2" else ()

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["bands"] = list(self.bands)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelSpec:
        return cls(name=str(data["name"]), modality=str(data["modality"]),
                   num_classes=int(data["num_classes"]), bands=tuple(data["bands"]),
                   fusion=str(data.get("fusion", "early")), options=dict(data.get("options") or {}))


class BenModel(nn.Module):
    """Base of every benmm model: logits and features from a batch dict."""

    #: True for models that take the S2 20 m / 60 m groups at native size (the data module then keeps them)
    native_groups: bool = False
    #: length of the binary codes the model learns (``codes = embed(...) > 0``); None: float embeddings
    code_bits: int | None = None

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__()
        self.spec = spec

    @property
    def feature_dim(self) -> int:
        raise NotImplementedError

    def features(self, batch: dict[str, Any]) -> torch.Tensor:
        """The embedding [B, D] (pre-logits) that retrieval uses."""
        raise NotImplementedError

    def head_forward(self, feats: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    @property
    def modalities(self) -> tuple[str, ...]:
        """The modalities :meth:`embed` takes (a classifier: its own; a cross-modal model: s1, s2, s1s2)."""
        return (self.spec.modality,)

    def check_modality(self, modality: str | None) -> str:
        """``modality`` (``None``: the model's own), or a one-line error naming the model's modalities."""
        if modality is None:
            return self.spec.modality
        if modality not in self.modalities:
            raise RetrievalError(f"model {self.spec.name!r} embeds {', '.join(self.modalities)} patches, "
                                 f"not {modality!r}; choose one of those modalities")
        return modality

    def embed(self, batch: dict[str, Any], modality: str | None = None) -> torch.Tensor:
        """The retrieval embedding [B, D] of ``batch`` as ``modality`` (a classifier: :meth:`features`)."""
        self.check_modality(modality)
        return self.features(batch)

    def forward(self, batch: dict[str, Any]) -> torch.Tensor:
        return self.head_forward(self.features(batch))


Factory = Callable[[ModelSpec], BenModel]
_REGISTRY: dict[str, Factory] = {}
_DESCRIPTIONS: dict[str, str] = {}
#: name prefix -> factory of a family of models (``timm:<name>``), registered by the family's module
_PREFIXES: dict[str, Factory] = {}


def register_model(name: str, description: str = "") -> Callable[[Factory], Factory]:
    """Register a factory ``f(spec) -> BenModel`` under ``name`` (tests iterate the registry)."""

    def deco(factory: Factory) -> Factory:
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} registered twice")
        _REGISTRY[name] = factory
        _DESCRIPTIONS[name] = description or (factory.__doc__ or "").strip().splitlines()[0]
        return factory

    return deco


def list_models() -> list[str]:
    """Registered model names (any timm model is also accepted as ``timm:<name>``)."""
    return sorted(_REGISTRY)


def describe_models() -> dict[str, str]:
    return {name: _DESCRIPTIONS[name] for name in sorted(_REGISTRY)}


def register_prefix(prefix: str) -> Callable[[Factory], Factory]:
    """Register the factory of every model named ``<prefix><anything>`` (timm's ``timm:<name>``)."""

    def deco(factory: Factory) -> Factory:
        _PREFIXES[prefix] = factory
        return factory

    return deco


def resolve_model_bands(modality: str, bands: str | Iterable[str] | None) -> tuple[str, ...]:
    """The bands a model of ``modality`` takes: the datasets' rule, :func:`benmm.bands.choose_bands`."""
    return choose_bands(modality, bands)


def build(spec: ModelSpec) -> BenModel:
    """Build a model from its spec (random init)."""
    for prefix, family in _PREFIXES.items():
        if spec.name.startswith(prefix):
            return family(spec)
    factory = _REGISTRY.get(spec.name)
    if factory is None:
        close = difflib.get_close_matches(spec.name, list(_REGISTRY), n=1, cutoff=0.5)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ModelError(
            f"unknown model {spec.name!r}{hint}. Registered: {', '.join(sorted(_REGISTRY))}; "
            "or any timm model as 'timm:<name>' (e.g. timm:convnext_nano)"
        )
    try:
        return factory(spec)
    except TypeError as exc:  # unknown option for this model
        raise ModelError(f"model {spec.name!r}: bad options {spec.options}: {exc}") from None
