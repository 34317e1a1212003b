"""Weights out as a reBEN/ConfigILM hub folder (``benmm export --format configilm``).

The folder is what ``PyTorchModelHubMixin.save_pretrained(folder, config=config)`` writes for reBEN's
``BigEarthNetv2_0_ImageClassifier`` (see :mod:`benmm.models.hub` for the sources): ``config.json`` =
``dataclasses.asdict(ILMConfiguration(...))`` with every field of ConfigILM's ``ILMConfiguration``
(v0.7.1 defaults, ``configilm/ConfigILM.py``), and ``model.safetensors`` = the whole timm classifier
under ``model.vision_encoder.``, stem in the release v0.2.0 band order (ConfigILM >= 0.7's
``STANDARD_BANDS``), classifier rows in ConfigILM's alphabetical class order (``NEW_LABELS``). So
``BigEarthNetv2_0_ImageClassifier.from_pretrained(folder)`` and ``ConfigILM(ILMConfiguration(**config))``
+ ``load_state_dict`` take it. ``benmm.json`` beside them names the bands in order, the statistics and
resampling the model was trained with, and where it came from (ConfigILM ignores it; benmm reads it back).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Final

import torch

from benmm.atomic import atomic_path, atomic_write
from benmm.errors import BenmmError
from benmm.models.hub import HUB_CONFIG, HUB_SIDECAR, HUB_WEIGHTS, IMAGE_SIZE, KEY_PREFIXES, RELEASE_BANDS

EXPORT_RELEASE: Final = "v0.2.0"

#: ILMConfiguration's fields and defaults (ConfigILM 0.7.1, configilm/ConfigILM.py), as asdict writes
#: them after __post_init__ (fusion_out None -> fusion_in); network_type 0 = ILMType.IMAGE_CLASSIFICATION
ILM_DEFAULTS: Final[dict[str, Any]] = {
    "timm_model_name": None, "hf_model_name": None, "image_size": 120, "channels": 3, "classes": 10,
    "class_names": None, "network_type": 0, "visual_features_out": 512, "fusion_in": 512, "fusion_out": 512,
    "fusion_hidden": 256, "v_dropout_rate": 0.25, "t_dropout_rate": 0.25, "fusion_dropout_rate": 0.25,
    "_fusion_method": "torch.mul", "_fusion_activation": "nn.Tanh()", "drop_rate": 0.2,
    "drop_path_rate": None, "use_pooler_output": True, "max_sequence_length": 32,
    "load_pretrained_timm_if_available": False, "load_pretrained_hf_if_available": True,
    "custom_fusion_method": None, "custom_fusion_activation": None,
}


class HubExportError(BenmmError):
    """A model that has no ConfigILM / reBEN form."""


def _release_bands(bands: tuple[str, ...], source: Path) -> tuple[str, str, tuple[str, ...]]:
    for name, order in RELEASE_BANDS[EXPORT_RELEASE].items():
        if set(order) == set(bands) and len(order) == len(bands):
            return EXPORT_RELEASE, name, order
    raise HubExportError(f"{source}: bands {', '.join(bands)} are no reBEN band configuration (S1; S2 10 m + "
                         "20 m; S1+S2; or those with B01, B09); train with --bands s2-10m20m, --modality s1, "
                         "or --modality s1s2 --bands s2-10m20m to export it for ConfigILM")


def export_configilm(model: Any, info: dict[str, Any], out: str | Path, source: str | Path) -> list[Path]:
    """Write ``model`` (a benmm timm model, early fusion, 19 classes) as a hub folder ``out``."""
    from benmm.labels import label_names
    from benmm.models.fusion import TimmModel

    src = Path(source)
    if not isinstance(model, TimmModel) or "main" not in model.backbones:
        kind = "late-fusion" if isinstance(model, TimmModel) else model.spec.name
        raise HubExportError(f"{src}: a {kind} model has no ConfigILM form (one timm network on stacked "
                             "bands); export it with --format safetensors")
    spec = model.spec
    if spec.num_classes != 19 or int(info.get("labels") or 19) != 19:
        raise HubExportError(f"{src}: a {spec.num_classes}-class model; reBEN/ConfigILM models predict the "
                             "19-class nomenclature (train with --labels 19)")
    release, config_name, order = _release_bands(tuple(spec.bands), src)
    backbone = model.backbones["main"]
    cfg = dict(getattr(backbone, "pretrained_cfg", None) or {})
    classifier, first = cfg.get("classifier"), cfg.get("first_conv")
    if not isinstance(classifier, str) or not isinstance(first, str):
        raise HubExportError(f"{src}: timm gives {spec.name} no single classifier / stem layer; export it "
                             "with --format safetensors")
    # the model's class order is its info's (official unless trained with --order alphabetical)
    mine = list(info.get("class_names") or label_names(19, str(info.get("order") or "official")))
    theirs = list(label_names(19, "alphabetical"))  # ConfigILM's NEW_LABELS
    state = {k: v.detach().cpu() for k, v in backbone.state_dict().items()}
    stem = f"{first}.weight"
    state[stem] = state[stem][:, [spec.bands.index(b) for b in order]]
    rows = [mine.index(name) for name in theirs]
    state[f"{classifier}.weight"] = model.head.fc.weight.detach().cpu()[rows]
    state[f"{classifier}.bias"] = model.head.fc.bias.detach().cpu()[rows]
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    return _write(folder, state, spec, info, src, release, config_name, order, theirs)


def _write(folder: Path, state: dict[str, torch.Tensor], spec: Any, info: dict[str, Any], src: Path,
           release: str, config_name: str, order: tuple[str, ...], classes: list[str]) -> list[Path]:
    from safetensors.torch import save_file

    arch = spec.name.split(":", 1)[-1]
    opts = dict(spec.options)
    config = {**ILM_DEFAULTS, "timm_model_name": arch, "image_size": IMAGE_SIZE, "channels": len(order),
              "classes": 19, "class_names": classes, "drop_rate": float(opts.get("drop_rate", 0.0)),
              "drop_path_rate": float(opts["drop_path_rate"]) if opts.get("drop_path_rate") else None}
    weights = folder / HUB_WEIGHTS
    with atomic_path(weights) as tmp:  # the hub mixin writes {"format": "pt"} metadata too
        save_file({f"{KEY_PREFIXES[0]}{k}": v.contiguous() for k, v in state.items()}, str(tmp),
                  metadata={"format": "pt"})
    path = folder / HUB_CONFIG
    atomic_write(path, json.dumps(config, indent=2, sort_keys=True) + "\n")
    stats = info.get("stats")
    sidecar = folder / HUB_SIDECAR
    atomic_write(sidecar, json.dumps({
        "format": "benmm configilm export", "release": release, "band_config": config_name,
        "hub_bands": list(order), "class_names": classes, "benmm_model": spec.to_dict(),
        "resample": info.get("resample"), "stats": stats, "source": str(src),
        "note": "reBEN's BENv2DataModule feeds models nearest-upsampled bands normalised with the reBEN "
                "statistics; a model trained with other statistics or resampling wants its own (above)",
    }, indent=2) + "\n")
    return [weights, path, sidecar]
