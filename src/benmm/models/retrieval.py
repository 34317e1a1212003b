"""Retrieval models: a hash head on any registered model, and two encoders into one S1/S2 code space.

* :class:`HashModel` — a registered backbone (any modality, any fusion) without its classifier, then a
  hash head of ``bits`` outputs: linear, batch norm, ``tanh``; ``features(batch) = tanh(bn(linear(
  backbone(batch))))`` is the float code before the sign, the binary code ``features(batch) > 0``. The
  batch norm centres every bit over the batch from the first step (pooled ReLU features all point one
  way, so without it a fresh head gives nearly every patch the same code and the losses start flat);
  training therefore drops a last batch of one (the data module's ``drop_last``).
* :class:`CrossModalModel` — an S1 :class:`HashModel` and an S2 :class:`HashModel` (any registered model
  each) of the same code length: ``embed(batch, "s1")`` / ``embed(batch, "s2")`` land in one space, so an
  S1 query ranks S2 patches; ``embed(batch, "s1s2")`` is the mean of the two.

A model is rebuilt from its :meth:`description` (plain JSON values, saved in checkpoints next to the
backbone's :class:`~benmm.models.registry.ModelSpec`): :func:`build_retrieval_model`.
"""

from __future__ import annotations

from typing import Any, Final

import torch
from torch import nn

from benmm.bands import choose_bands
from benmm.models.registry import BenModel, ModelError, ModelSpec, build

KINDS: Final = ("hashing", "cross-modal")
SUPERVISION: Final = ("labels", "pairs")


def check_bits(bits: Any) -> int:
    if isinstance(bits, bool) or not isinstance(bits, int) or bits < 8 or bits % 8 or bits > 4096:
        raise ModelError(f"hash code length {bits!r}: give a multiple of 8 bits (16, 32, 64 or 128)")
    return bits


class HashModel(BenModel):
    """A backbone's pooled features -> linear -> tanh: ``bits`` real outputs whose signs are the code."""

    def __init__(self, backbone: BenModel, bits: int) -> None:
        super().__init__(backbone.spec)
        bits = check_bits(bits)
        if hasattr(backbone, "head"):
            backbone.head = nn.Identity()  # the classifier is not trained here (and DDP wants no idle layer)
        self.backbone = backbone
        self.hash = nn.Sequential(nn.Linear(backbone.feature_dim, bits), nn.BatchNorm1d(bits))
        self.code_bits = bits
        self.native_groups = backbone.native_groups

    @property
    def feature_dim(self) -> int:
        return int(self.code_bits or 0)

    def features(self, batch: dict[str, Any]) -> torch.Tensor:
        return torch.tanh(self.hash(self.backbone.features(batch)))

    def head_forward(self, feats: torch.Tensor) -> torch.Tensor:
        return feats

    def description(self) -> dict[str, Any]:
        return {"kind": "hashing", "bits": self.code_bits, "supervision": "labels"}


class CrossModalModel(BenModel):
    """An S1 and an S2 encoder (each a :class:`HashModel`) into one code space."""

    def __init__(self, s1: BenModel, s2: BenModel, bits: int, supervision: str = "labels") -> None:
        if s1.spec.modality != "s1" or s2.spec.modality != "s2":
            raise ModelError(f"a cross-modal model needs an s1 and an s2 encoder, got {s1.spec.modality} "
                             f"and {s2.spec.modality}")
        if supervision not in SUPERVISION:
            raise ModelError(f"supervision {supervision!r}: choose {' or '.join(SUPERVISION)}")
        name = s1.spec.name if s1.spec.name == s2.spec.name else f"{s1.spec.name}+{s2.spec.name}"
        spec = ModelSpec(name=f"cross-modal:{name}", modality="s1s2", num_classes=s2.spec.num_classes,
                         bands=choose_bands("s1s2", (*s2.spec.bands, *s1.spec.bands)), fusion="late")
        super().__init__(spec)
        self.s1 = HashModel(s1, bits)
        self.s2 = HashModel(s2, bits)
        self.code_bits = check_bits(bits)
        self.supervision = supervision
        self.native_groups = s2.native_groups  # S2 native groups stay native for a K-Branch S2 encoder

    @property
    def modalities(self) -> tuple[str, ...]:
        return ("s1", "s2", "s1s2")

    @property
    def feature_dim(self) -> int:
        return int(self.code_bits or 0)

    def embed(self, batch: dict[str, Any], modality: str | None = None) -> torch.Tensor:
        m = self.check_modality(modality)
        if m == "s1s2":
            return 0.5 * (self.s1.features(batch) + self.s2.features(batch))
        return (self.s1 if m == "s1" else self.s2).features(batch)

    def features(self, batch: dict[str, Any]) -> torch.Tensor:
        return self.embed(batch, "s1s2")

    def head_forward(self, feats: torch.Tensor) -> torch.Tensor:
        return feats

    def description(self) -> dict[str, Any]:
        return {"kind": "cross-modal", "bits": self.code_bits, "supervision": self.supervision,
                "encoders": {"s1": self.s1.spec.to_dict(), "s2": self.s2.spec.to_dict()}}


def build_retrieval_model(spec: ModelSpec, description: dict[str, Any]) -> BenModel:
    """A retrieval model (random init) from its backbone spec and :meth:`HashModel.description`."""
    kind = description.get("kind")
    if kind == "hashing":
        return HashModel(build(spec), int(description["bits"]))
    if kind == "cross-modal":
        enc = description["encoders"]
        return CrossModalModel(build(ModelSpec.from_dict(enc["s1"])), build(ModelSpec.from_dict(enc["s2"])),
                               int(description["bits"]), str(description.get("supervision", "labels")))
    raise ModelError(f"unknown retrieval model kind {kind!r}; valid: {', '.join(KINDS)}")
