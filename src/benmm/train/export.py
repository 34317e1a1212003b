"""``benmm export``: a trained model in the formats other tools load.

* ``safetensors``: benmm's own export: the weights, with the model spec, bands, class order, label
  set, resampling, the statistics' values and the threshold in the metadata (what ``load_checkpoint``
  and every benmm command need, nothing else).
* ``timm``: the backbone alone, as a safetensors state dict under timm's own key names, loadable with
  ``timm.create_model(arch, pretrained=True, pretrained_cfg_overlay=dict(file=PATH), in_chans=C,
  num_classes=0)``; its ``forward`` then gives benmm's ``features()``. An S1+S2 early-fusion model has
  one backbone whose stem takes the S2 bands then the S1 bands stacked (``in_chans`` = their number, in
  the order of ``bands`` in the sidecar JSON); a late-fusion model has one backbone per modality
  (``PATH`` gets ``-s2`` / ``-s1`` before its suffix). K-Branch is not a timm model.

* ``configilm``: a reBEN/ConfigILM hub folder (``config.json``, ``model.safetensors`` with
  ``model.vision_encoder.<timm key>``, ``benmm.json``), see :mod:`benmm.models.hub_export`; ConfigILM's
  ``ConfigILM(ILMConfiguration(**config))`` and reBEN's ``from_pretrained`` load it
  (``benchmarks/interop_configilm.py`` checks it with the real package).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Final

from benmm.atomic import atomic_path, atomic_write
from benmm.errors import BenmmError

FORMATS: Final = ("safetensors", "timm", "configilm")


class ExportError(BenmmError):
    """A run or checkpoint that cannot be exported in the asked format."""


def resolve_checkpoint(run: str | Path) -> Path:
    """A checkpoint file, or a `benmm train` run folder (its best checkpoint)."""
    path = Path(run)
    if path.is_dir():
        for candidate in (path / "checkpoints" / "best.ckpt", path / "model.safetensors",
                          path / "checkpoints" / "last.ckpt"):
            if candidate.is_file():
                return candidate
        raise ExportError(f"{path}: no checkpoints/best.ckpt (nor model.safetensors): not a finished "
                          "`benmm train` run; give a checkpoint file, or train (or --resume) until a best "
                          "checkpoint is saved")
    if not path.is_file():
        raise ExportError(f"{path}: no such run folder or checkpoint")
    return path


def _hparams(path: Path) -> dict[str, Any]:
    from benmm.models.weights import read_file

    _, extra = read_file(path)
    if "benmm" in extra:
        meta = json.loads(extra["benmm"])
        return {"model_spec": meta["model"], "data": meta.get("data", {}),
                "threshold": meta.get("threshold", 0.5), "retrieval": meta.get("retrieval")}
    return dict(extra.get("hyper_parameters") or {})


def export(run: str | Path, fmt: str, out: str | Path) -> list[Path]:
    """Export the model of ``run`` (folder or checkpoint) as ``fmt`` to ``out``; returns the files."""
    from benmm.models.weights import export_safetensors
    from benmm.train.task import load_checkpoint

    if fmt not in FORMATS:
        raise ExportError(f"unknown export format {fmt!r}; formats: {', '.join(FORMATS)}")
    source = resolve_checkpoint(run)
    model, info = load_checkpoint(source)
    if fmt == "configilm":
        from benmm.models.hub_export import export_configilm

        return export_configilm(model, info, out, source)
    hp = _hparams(source)
    target = Path(out)
    target.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "safetensors":
        extra = {"retrieval": hp["retrieval"]} if hp.get("retrieval") else {}  # a hashing/cross-modal head
        return [export_safetensors(model, target, {"data": hp.get("data", {}),
                                                   "threshold": hp.get("threshold", 0.5), **extra})]
    return _export_timm(model, target, source)


def _export_timm(model: Any, target: Path, source: Path) -> list[Path]:
    from safetensors.torch import save_file

    from benmm.models.fusion import TimmModel

    if not isinstance(model, TimmModel):
        raise ExportError(f"{source}: a {model.spec.name} model has no timm backbone; export it with "
                          "--format safetensors")
    spec = model.spec
    parts = {"main": (spec.bands, target)} if "main" in model.backbones else {
        "s2": (spec.s2_bands, target.with_name(f"{target.stem}-s2{target.suffix or '.safetensors'}")),
        "s1": (spec.s1_bands, target.with_name(f"{target.stem}-s1{target.suffix or '.safetensors'}")),
    }
    files = []
    for key, (bands, path) in parts.items():
        backbone = model.backbones[key]
        state = {k: v.detach().contiguous().cpu() for k, v in backbone.state_dict().items()}
        with atomic_path(path) as tmp:
            save_file(state, str(tmp), metadata={"format": "pt"})
        cfg: dict[str, Any] = dict(getattr(backbone, "pretrained_cfg", None) or {})
        arch = str(cfg.get("architecture") or spec.name.removeprefix("timm:"))
        sidecar = path.with_suffix(".json")
        atomic_write(sidecar, json.dumps({
            "architecture": arch, "in_chans": len(bands), "bands": list(bands), "num_classes": 0,
            "load": f"timm.create_model({arch!r}, pretrained=True, "
                    f"pretrained_cfg_overlay=dict(file={str(path)!r}), in_chans={len(bands)}, num_classes=0)",
            "source": str(source), "fusion": spec.fusion, "modality": spec.modality}, indent=2) + "\n")
        files += [path, sidecar]
    return files
