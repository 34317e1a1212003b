"""Load model weights from local files only: benmm checkpoints or timm state dicts.

Accepted files: ``.safetensors`` (a benmm export or a timm state dict) and ``.ckpt``/``.pth``/``.pt``/
``.bin`` (a Lightning checkpoint written by ``benmm train`` or a plain state dict), read with
``torch.load(weights_only=True)`` (no arbitrary pickle). A timm state dict goes into the backbone(s):
its classifier is dropped, and a stem trained on another number of bands is adapted with timm's
``adapt_input_conv``. Any other shape mismatch is an error naming the layer.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from benmm.atomic import atomic_path
from benmm.models.registry import BenModel, ModelError

CHECKPOINT_SUFFIXES = (".safetensors", ".ckpt", ".pth", ".pt", ".bin")


def read_file(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(state dict, extra) of a weights file; ``extra`` holds a checkpoint's hyper-parameters/metadata."""
    p = Path(path)
    if not p.is_file():
        raise ModelError(f"weights file {p} not found (weights are only read from local files)")
    if p.suffix == ".safetensors":
        from safetensors import SafetensorError, safe_open

        try:
            with safe_open(str(p), framework="pt") as fh:
                meta = fh.metadata() or {}
                state = {k: fh.get_tensor(k) for k in fh.keys()}  # noqa: SIM118
        except (SafetensorError, OSError, ValueError) as exc:
            raise ModelError(f"{p}: not a readable .safetensors weights file ({exc})") from None
        return state, dict(meta)
    if p.suffix not in CHECKPOINT_SUFFIXES:
        raise ModelError(f"{p}: unsupported weights file; use one of {', '.join(CHECKPOINT_SUFFIXES)}")
    try:
        raw = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt file or pickled objects we refuse to run
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if "Weights only load failed" in text:  # torch's page of advice: say what it means here
            text = "it is damaged, or holds pickled objects that benmm never runs (only tensors and values)"
        raise ModelError(f"{p}: not a readable checkpoint or state dict ({text}); was it written "
                         "completely?") from None
    if not isinstance(raw, dict):
        raise ModelError(f"{p}: not a state dict or checkpoint")
    if "state_dict" in raw and isinstance(raw["state_dict"], dict):  # Lightning checkpoint
        # the model's weights (a task's own layers, e.g. a training-only classifier, stay behind)
        state = {k[len("model."):]: v for k, v in raw["state_dict"].items() if k.startswith("model.")}
        return state, {"hyper_parameters": raw.get("hyper_parameters", {})}
    for key in ("model", "state_dict_ema"):  # common wrappers of timm training scripts
        if key in raw and isinstance(raw[key], dict):
            raw = raw[key]
            break
    state = {k.removeprefix("module."): v for k, v in raw.items() if isinstance(v, torch.Tensor)}
    if not state:
        raise ModelError(f"{p}: holds no tensors")
    return state, {}


def _check_shapes(target: dict[str, torch.Tensor], source: dict[str, torch.Tensor], where: str) -> None:
    for key, value in source.items():
        if key in target and tuple(target[key].shape) != tuple(value.shape):
            raise ModelError(
                f"{where}: layer {key!r} has shape {tuple(value.shape)} in the file but "
                f"{tuple(target[key].shape)} in the model (another model, band set or class count?)"
            )


def load_state(model: nn.Module, state: dict[str, torch.Tensor], where: str) -> None:
    """Strict load with a clear error for shape mismatches and missing/unexpected layers."""
    target = model.state_dict()
    _check_shapes(target, state, where)
    missing = [k for k in target if k not in state]
    unexpected = [k for k in state if k not in target]
    if missing or unexpected:
        raise ModelError(
            f"{where}: weights do not fit the model: missing {missing[:5]}{'...' if len(missing) > 5 else ''}"
            f", unexpected {unexpected[:5]}{'...' if len(unexpected) > 5 else ''}"
        )
    model.load_state_dict(state)


def _load_timm(backbone: nn.Module, state: dict[str, torch.Tensor], where: str) -> None:
    from timm.models import adapt_input_conv

    target = backbone.state_dict()
    cfg = getattr(backbone, "pretrained_cfg", {}) or {}
    classifier = cfg.get("classifier")
    heads = tuple(f"{c}." for c in ([classifier] if isinstance(classifier, str) else classifier or []))
    extra = [k for k in state if k not in target and not (heads and k.startswith(heads))]
    if extra and len(extra) < len(state):
        raise ModelError(f"{where}: the file has layers the backbone lacks: {extra[:5]} "
                         "(another architecture or depth?)")
    state = {k: v for k, v in state.items() if k in target}  # drop the classifier of the source model
    first = cfg.get("first_conv")
    key = f"{first}.weight" if isinstance(first, str) else None
    if key and key in state and state[key].ndim == 4 and state[key].shape[1] != target[key].shape[1]:
        state[key] = adapt_input_conv(int(target[key].shape[1]), state[key])
    missing = [k for k in target if k not in state and not k.endswith("num_batches_tracked")]
    if len(missing) == len(target):
        raise ModelError(f"{where}: no layer of the file matches the backbone (another architecture?)")
    _check_shapes(target, state, where)
    if missing:
        raise ModelError(f"{where}: the file lacks backbone layers {missing[:5]} (another architecture?)")
    backbone.load_state_dict(state, strict=False)


def load_weights(model: BenModel, path: str | Path) -> None:
    """Load ``path`` into ``model``: a benmm checkpoint/export, or a timm backbone state dict (a
    reBEN/ConfigILM hub folder: :func:`benmm.models.hub.load_hub_weights`)."""
    state, _ = read_file(path)
    where = str(path)
    own = model.state_dict()
    if sum(k in own for k in state) >= max(1, len(state) // 2):
        load_state(model, state, where)
        return
    backbones = getattr(model, "backbones", None)
    if backbones is None:
        raise ModelError(f"{where}: not a benmm checkpoint of model {model.spec.name!r} "
                         "(timm state dicts fit timm-based models only)")
    for backbone in backbones.values():
        _load_timm(backbone, state, where)


def export_safetensors(model: BenModel, path: str | Path, info: dict[str, Any]) -> Path:
    """Write the model's weights + its spec/info (JSON in the safetensors metadata)."""
    import json

    from safetensors.torch import save_file

    p = Path(path)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    with atomic_path(p) as tmp:
        save_file(state, str(tmp), metadata={"benmm": json.dumps({"model": model.spec.to_dict(), **info})})
    return p
