"""timm backbones with early (channel-stacked) or late (one backbone per modality) S1+S2 fusion.

Early fusion stacks the S2 bands (resampled to 120x120 by the batch transform) and S1 VV/VH into one
input of ``k_s2 + k_s1`` channels. Late fusion runs one backbone per modality and concatenates their
pooled features before a shared head. Backbones are built with ``pretrained=False`` (never a download);
``weights=PATH`` loads local files (see :mod:`benmm.models.weights`).
"""

from __future__ import annotations

from typing import Any, Final

import timm
import torch
from torch import nn

from benmm.models.registry import (
    TIMM_PREFIX,
    BenModel,
    ModelError,
    ModelSpec,
    register_model,
    register_prefix,
)

#: registered baseline name -> timm architecture
TIMM_BASELINES: Final = {
    "vgg16": "vgg16",
    "vgg19": "vgg19",
    "resnet18": "resnet18",
    "resnet50": "resnet50",
    "resnet101": "resnet101",
    "resnet152": "resnet152",
}


class Head(nn.Module):
    """Dropout + linear classifier on pooled features."""

    def __init__(self, dim: int, num_classes: int, drop_rate: float = 0.0) -> None:
        super().__init__()
        self.drop = nn.Dropout(drop_rate)
        self.fc = nn.Linear(dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.drop(x))


def modality_input(batch: dict[str, Any], key: str, channels: int) -> torch.Tensor:
    """``batch[key]`` checked to hold ``channels`` channels on one grid (a clear error otherwise)."""
    if key not in batch:
        raise ModelError(f"batch has no {key!r} tensor (keys: {', '.join(map(str, batch))}); "
                         "build batches with benmm.data for the model's modality")
    x = batch[key]
    if x.ndim != 4 or x.shape[1] != channels:
        raise ModelError(
            f"batch[{key!r}] has shape {tuple(x.shape)}, the model expects [B, {channels}, H, W]: "
            "apply BatchTransform with the model's bands (S2 bands resampled onto one grid)"
        )
    return x


def timm_backbone(arch: str, in_chans: int, options: dict[str, Any], any_arch: bool = False) -> nn.Module:
    """A timm model without classifier (``num_classes=0``): ``backbone(x) -> pooled features``."""
    kwargs = {k: v for k, v in options.items() if k not in ("drop_rate",)}
    if not kwargs.get("drop_path_rate"):
        kwargs.pop("drop_path_rate", None)
    if any_arch and "img_size" not in kwargs:
        # transformers with a fixed input size get BigEarthNet's 120x120; CNNs do not take img_size
        try:
            return timm.create_model(arch, pretrained=False, in_chans=in_chans, num_classes=0,
                                     img_size=120, **kwargs)
        except (TypeError, RuntimeError):
            pass
    try:
        return timm.create_model(arch, pretrained=False, in_chans=in_chans, num_classes=0, **kwargs)
    except RuntimeError as exc:  # timm: unknown model
        raise ModelError(f"timm has no model {arch!r} ({exc}); list them with timm.list_models()") from None
    except TypeError as exc:
        raise ModelError(f"timm model {arch!r} does not take options {kwargs}: {exc}") from None


def backbone_features(backbone: nn.Module, x: torch.Tensor) -> torch.Tensor:
    # timm's forward_features + forward_head(pre_logits=True), the embedding every model exposes
    return backbone.forward_head(backbone.forward_features(x), pre_logits=True)  # type: ignore[operator]


class TimmModel(BenModel):
    """One or two timm backbones (S1+S2 early or late fusion) and a shared linear head."""

    def __init__(self, spec: ModelSpec, arch: str, any_arch: bool = False) -> None:
        super().__init__(spec)
        opts = dict(spec.options)
        drop_rate = float(opts.pop("drop_rate", 0.0))
        k2, k1 = len(spec.s2_bands), len(spec.s1_bands)
        self.late = spec.modality == "s1s2" and spec.fusion == "late"
        self.backbones = nn.ModuleDict()
        if self.late:
            self.backbones["s2"] = timm_backbone(arch, k2, opts, any_arch)
            self.backbones["s1"] = timm_backbone(arch, k1, opts, any_arch)
        else:
            self.backbones["main"] = timm_backbone(arch, k1 + k2, opts, any_arch)
        # pre-logits width: head_hidden_size where timm has one (VGG's 4096 ConvMlp), else num_features
        self._dim = sum(int(getattr(b, "head_hidden_size", None) or b.num_features)  # type: ignore[misc,arg-type]
                        for b in self.backbones.values())
        self.head = Head(self._dim, spec.num_classes, drop_rate)

    @property
    def feature_dim(self) -> int:
        return self._dim

    def features(self, batch: dict[str, Any]) -> torch.Tensor:
        spec = self.spec
        k2, k1 = len(spec.s2_bands), len(spec.s1_bands)
        if self.late:
            f2 = backbone_features(self.backbones["s2"], modality_input(batch, "s2", k2))
            f1 = backbone_features(self.backbones["s1"], modality_input(batch, "s1", k1))
            return torch.cat([f2, f1], dim=1)
        parts = []
        if k2:
            parts.append(modality_input(batch, "s2", k2))
        if k1:
            parts.append(modality_input(batch, "s1", k1))
        x = parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)
        return backbone_features(self.backbones["main"], x)

    def head_forward(self, feats: torch.Tensor) -> torch.Tensor:
        return self.head(feats)


def _baseline(arch: str, description: str) -> None:
    def factory(spec: ModelSpec) -> BenModel:
        return TimmModel(spec, arch, any_arch=True)

    factory.__doc__ = description
    register_model(arch, description)(factory)


for _name, _arch in TIMM_BASELINES.items():
    _baseline(_arch, f"{_name.upper()} (timm {_arch}, random init; early or late S1+S2 fusion)")


@register_prefix(TIMM_PREFIX)
def build_timm_any(spec: ModelSpec) -> BenModel:
    """``timm:<arch>``: any timm architecture as backbone."""
    arch = spec.name[len(TIMM_PREFIX):]
    if not arch:
        raise ModelError("empty timm model name: use 'timm:<name>', e.g. timm:convnext_nano")
    return TimmModel(spec, arch, any_arch=True)
