"""Weights in from a reBEN / ConfigILM hub folder: ``config.json`` + ``model.safetensors``.

The published reBEN models (huggingface.co/BIFOLD-BigEarthNetv2-0, e.g. ``resnet50-all-v0.2.0``) are
folders written by ``huggingface_hub.PyTorchModelHubMixin.save_pretrained(folder, config=config)`` of
reBEN's ``BigEarthNetv2_0_ImageClassifier`` (reBEN ``scripts/train_BigEarthNetv2_0.py``): a
LightningModule whose ``self.model = ConfigILM.ConfigILM(config)``, and ConfigILM's image classifier is
``self.vision_encoder = timm.create_model(timm_model_name, num_classes=classes, in_chans=channels,
img_size=image_size, drop_rate=..., drop_path_rate=...)`` (ConfigILM ``configilm/ConfigILM.py``). So:

* ``config.json`` is ``dataclasses.asdict(ILMConfiguration)`` (``timm_model_name``, ``channels``,
  ``classes``, ``image_size``, ``network_type`` 0 = IMAGE_CLASSIFICATION, ``class_names``, ...);
* ``model.safetensors`` keys are ``model.vision_encoder.<timm key>``: a whole timm classifier, whose
  classifier layer (timm's ``pretrained_cfg["classifier"]``) becomes benmm's ``head.fc``.

What benmm translates, each explicitly (never guessed, because a wrong one is silent bad accuracy):

* **band order** of the stem, per release (:data:`RELEASE_BANDS`), permuted into benmm's canonical
  order (S2 then S1, DESIGN §3). The release comes from the folder's name ``<arch>-<all|s1|s2>-v<X.Y.Z>``
  (reBEN names its folders f"{architecture}-{bandconfig}-{version}"), from a ``benmm.json`` written by
  ``benmm export --format configilm``, or from ``band_order=`` (``--band-order``); when none says it,
  or they disagree, loading stops and says so;
* **class order**: ConfigILM's ``NEW_LABELS = sorted(NEW_LABELS_ORIGINAL_ORDER)`` (alphabetical,
  ``configilm/extra/BENv2_utils.py``) unless ``class_names`` in config.json names the 19 classes; the
  head's rows are permuted into benmm's official order;
* **normalisation** and **resampling**: the reBEN statistics (``bands.stats_reben``, from ConfigILM's
  ``means/stds["120_nearest"]``) and ``nearest`` upsampling (ConfigILM's ``BENv2DataSet`` stacks bands
  with ``stack_and_interpolate(..., upsample_mode="nearest")``), carried in the returned info.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Final

import torch

from benmm.models.registry import TIMM_PREFIX, BenModel, ModelError, ModelSpec, build

HUB_CONFIG: Final = "config.json"
HUB_WEIGHTS: Final = "model.safetensors"
#: written beside them by benmm's export: the exact band list and what benmm knows about the model
HUB_SIDECAR: Final = "benmm.json"
#: BigEarthNetv2_0_ImageClassifier.model (ConfigILM) .vision_encoder (timm); bare ConfigILM: no "model."
KEY_PREFIXES: Final = ("model.vision_encoder.", "vision_encoder.")
IMAGE_SIZE: Final = 120

_S2_10M20M_OLD = ("B02", "B03", "B04", "B08", "B05", "B06", "B07", "B11", "B12", "B8A")
_S2_10M20M_NEW = ("B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B11", "B12")
_S2_ALL_OLD = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B09", "B11", "B12", "B8A")
_S2_ALL_NEW = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B11", "B12")

#: input band order of each release and band configuration (reBEN's ``bandconfig``: all = S1+S2 10 m
#: + 20 m, s2, s1; *_full = with the 60 m bands). Sources: the model cards (e.g.
#: huggingface.co/BIFOLD-BigEarthNetv2-0/resnet101-s1-v0.1.1: "v0.1.1: S1 [VH, VV]; S2 [B02 B03 B04
#: B08 B05 B06 B07 B11 B12 B8A]; S1+S2 the S2 list then VH, VV; newer: S1 [VV, VH]; S2 [B02 B03 B04 B05
#: B06 B07 B08 B8A B11 B12]; S1+S2 VV, VH then S2") and ConfigILM's ``STANDARD_BANDS`` before and after
#: its commit bfe81ce "fixing bandorder of BENv2 loading" (release v0.7.0), which also gives the
#: *_full orders (``STANDARD_BANDS["S2"]`` / ``["ALL"]``).
RELEASE_BANDS: Final[dict[str, dict[str, tuple[str, ...]]]] = {
    "v0.1.1": {"s1": ("VH", "VV"), "s2": _S2_10M20M_OLD, "all": (*_S2_10M20M_OLD, "VH", "VV"),
               "s1_full": ("VH", "VV"), "s2_full": _S2_ALL_OLD, "all_full": (*_S2_ALL_OLD, "VH", "VV")},
    "v0.2.0": {"s1": ("VV", "VH"), "s2": _S2_10M20M_NEW, "all": ("VV", "VH", *_S2_10M20M_NEW),
               "s1_full": ("VV", "VH"), "s2_full": _S2_ALL_NEW, "all_full": ("VV", "VH", *_S2_ALL_NEW)},
}
RELEASES: Final = tuple(RELEASE_BANDS)
#: band configuration from the channel count: the model cards list three configurations (S1, S2, S1+S2 =
#: 2, 10, 12 bands); the *_full ones of reBEN's training script are only read from a folder's name
CONFIG_BY_CHANNELS: Final = {2: "s1", 10: "s2", 12: "all", 14: "all_full"}
_NAME = re.compile(r"(?P<arch>[^-]+)-(?P<config>all_full|s1_full|s2_full|all|s1|s2)"
                   r"-(?P<version>v\d+\.\d+\.\d+)$")


class HubError(ModelError):
    """A hub folder that is incomplete, not a ConfigILM image classifier, or of an unknown release."""


def is_hub_folder(path: str | Path | None) -> bool:
    """True for a folder (a hub-style model, complete or not); files are benmm/timm weights."""
    return path is not None and Path(path).is_dir() and not (Path(path) / "checkpoints").is_dir()


def read_config(folder: Path) -> dict[str, Any]:
    path = folder / HUB_CONFIG
    if not path.is_file():
        raise HubError(f"{path}: missing; a reBEN/ConfigILM model folder holds {HUB_CONFIG} and "
                       f"{HUB_WEIGHTS} (download both files from the model's page)")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise HubError(f"{path}: not JSON ({exc}); download config.json again") from None
    if isinstance(raw, dict) and isinstance(raw.get("config"), dict):  # hub mixin's {"config": {...}, ...}
        raw = raw["config"]
    missing = [k for k in ("timm_model_name", "channels", "classes")
               if not isinstance(raw, dict) or k not in raw]
    if missing:
        raise HubError(f"{path}: not a ConfigILM ILMConfiguration (no {', '.join(missing)}); benmm reads "
                       "ConfigILM image classifiers (reBEN models)")
    if int(raw.get("network_type", 0) or 0) != 0:
        raise HubError(f"{path}: network_type {raw.get('network_type')} is not IMAGE_CLASSIFICATION (0); "
                       "benmm reads image classifiers only")
    if int(raw.get("image_size", IMAGE_SIZE)) != IMAGE_SIZE:
        raise HubError(f"{path}: image_size {raw.get('image_size')}; benmm's batches are {IMAGE_SIZE}x"
                       f"{IMAGE_SIZE} (reBEN models are trained at {IMAGE_SIZE})")
    return dict(raw)


def _name_release(folder: Path) -> tuple[str | None, str | None]:
    """(band config, version) from the folder's name or an ancestor's (the hub cache's
    ``models--ORG--NAME/snapshots/<hash>``); (None, None) when no name tells."""
    for part in [folder.name, *(p.name for p in list(folder.resolve().parents)[:3])]:
        m = _NAME.search(part.split("--")[-1])
        if m:
            return m["config"], m["version"]
    return None, None


def hub_bands(folder: str | Path, config: dict[str, Any], band_order: str | None = None) -> tuple[str, ...]:
    """The model's input bands in the order its stem takes them (see the module docstring)."""
    folder = Path(folder)
    channels = int(config["channels"])
    sidecar = folder / HUB_SIDECAR
    fix = f"say which with --band-order {'|'.join(RELEASES)} (the model card names it)"
    if sidecar.is_file():
        try:
            bands = tuple(json.loads(sidecar.read_text(encoding="utf-8"))["hub_bands"])
        except (ValueError, KeyError, TypeError) as exc:
            raise HubError(f"{sidecar}: unreadable ({exc}); delete it and {fix}") from None
        if band_order is None or RELEASE_BANDS.get(band_order, {}).get(_config_of(bands), ()) == bands:
            return _checked(bands, channels, sidecar)
        raise HubError(f"{sidecar}: the export says bands {', '.join(bands)}, --band-order {band_order} "
                       "says otherwise; leave --band-order out")
    cfg, version = _name_release(folder)
    if band_order is not None:
        if band_order not in RELEASE_BANDS:
            raise HubError(f"--band-order {band_order!r}: unknown; the releases are {', '.join(RELEASES)}")
        if version is not None and version != band_order:
            raise HubError(f"{folder}: its name says release {version}, --band-order says {band_order}; "
                           "leave --band-order out or rename the folder")
        version = band_order
    if version is None:
        raise HubError(f"{folder}: the folder's name does not tell the release (reBEN names end in "
                       f"-all|-s1|-s2-vX.Y.Z), and v0.1.1 and v0.2.0 take the bands in different orders; "
                       f"{fix}")
    if version not in RELEASE_BANDS:
        raise HubError(f"{folder}: release {version} has no known band order (known: {', '.join(RELEASES)}); "
                       f"if its model card gives the order of one of them, {fix}")
    if cfg is None:
        cfg = CONFIG_BY_CHANNELS.get(channels)
        if cfg is None:
            raise HubError(f"{folder / HUB_CONFIG}: channels={channels} fits no reBEN band configuration "
                           f"({', '.join(map(str, CONFIG_BY_CHANNELS))} bands); give the folder its model "
                           "name, e.g. resnet50-s2_full-v0.2.0")
    return _checked(RELEASE_BANDS[version][cfg], channels, folder / HUB_CONFIG)


def _config_of(bands: tuple[str, ...]) -> str:
    for configs in RELEASE_BANDS.values():
        for name, order in configs.items():
            if order == bands:
                return name
    return ""


def _checked(bands: tuple[str, ...], channels: int, where: Path) -> tuple[str, ...]:
    if len(bands) != channels:
        raise HubError(f"{where}: channels={channels}, but its band configuration takes {len(bands)} bands "
                       f"({', '.join(bands)}); the folder's name or --band-order is wrong")
    return bands


def hub_class_names(config: dict[str, Any], where: Path) -> tuple[str, ...]:
    """The head's class order: ``class_names`` when it names the 19 classes, else ConfigILM's sorted list."""
    from benmm.labels import label_names

    official = label_names(19, "official")
    if int(config["classes"]) != len(official):
        raise HubError(f"{where}: classes={config['classes']}; reBEN models predict the 19-class "
                       "nomenclature, and benmm reads only those (train a 43-class model with benmm train "
                       "--labels 43)")
    names = config.get("class_names")
    if isinstance(names, list) and sorted(map(str, names)) == sorted(official):
        return tuple(map(str, names))
    # ConfigILM numbers unnamed classes "0".."18"; its labels are NEW_LABELS = sorted(...) (BENv2_utils.py)
    return label_names(19, "alphabetical")


def _timm_state(folder: Path) -> dict[str, torch.Tensor]:
    from benmm.models.weights import read_file

    path = folder / HUB_WEIGHTS
    if not path.is_file():
        raise HubError(f"{path}: missing; download {HUB_WEIGHTS} from the model's page into {folder}")
    state, _ = read_file(path)
    for prefix in KEY_PREFIXES:
        inner = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
        if inner:
            return inner
    raise HubError(f"{path}: no key starts with {KEY_PREFIXES[0]!r}; not a ConfigILM image classifier "
                   f"(keys: {', '.join(list(state)[:3])}...)")


def hub_spec(config: dict[str, Any], bands: tuple[str, ...]) -> ModelSpec:
    from benmm.bands import choose_bands, split_by_modality

    s2, s1 = split_by_modality(bands)
    modality = "s1s2" if s1 and s2 else "s1" if s1 else "s2"
    options: dict[str, Any] = {"drop_rate": float(config.get("drop_rate") or 0.0)}
    if config.get("drop_path_rate"):
        options["drop_path_rate"] = float(config["drop_path_rate"])
    return ModelSpec(name=f"{TIMM_PREFIX}{config['timm_model_name']}", modality=modality, num_classes=19,
                     bands=choose_bands(modality, bands), fusion="early", options=options)


def translate_state(model: BenModel, timm_state: dict[str, torch.Tensor], bands: tuple[str, ...],
                    classes: tuple[str, ...], where: str) -> dict[str, torch.Tensor]:
    """benmm state dict of ``model`` from a whole timm classifier's ``timm_state`` (stem in ``bands``
    order, head rows in ``classes`` order)."""
    from benmm.labels import label_names

    backbone: Any = model.backbones["main"]  # type: ignore[index]
    target = backbone.state_dict()
    head = sorted(k for k in timm_state if k not in target)
    stems = {k.rsplit(".", 1)[0] for k in head}
    if len(stems) != 1 or sorted(head) != sorted(f"{next(iter(stems))}.{p}" for p in ("bias", "weight")):
        raise HubError(f"{where}: expected the timm classifier's weight and bias beside the backbone, found "
                       f"{head[:4]} (another architecture than timm {model.spec.name[len(TIMM_PREFIX):]!r}?)")
    fc = next(iter(stems))
    first = (getattr(backbone, "pretrained_cfg", None) or {}).get("first_conv")
    stem_key = f"{first}.weight" if isinstance(first, str) else ""
    if stem_key not in timm_state or timm_state[stem_key].ndim != 4:
        raise HubError(f"{where}: no stem convolution {stem_key!r} to reorder the bands of")
    stem = timm_state[stem_key]
    if stem.shape[1] != len(bands):
        raise HubError(f"{where}: the stem takes {stem.shape[1]} bands, config.json says {len(bands)}")
    state = {f"backbones.main.{k}": v for k, v in timm_state.items() if k in target}
    canonical = model.spec.bands
    state[f"backbones.main.{stem_key}"] = stem[:, [bands.index(b) for b in canonical]].clone()
    rows = [classes.index(name) for name in label_names(19, "official")]
    state["head.fc.weight"] = timm_state[f"{fc}.weight"][rows].clone()
    state["head.fc.bias"] = timm_state[f"{fc}.bias"][rows].clone()
    return state


def hub_info(folder: str | Path, band_order: str | None = None) -> tuple[ModelSpec, dict[str, Any], Any]:
    """(benmm spec, checkpoint info, the raw pieces) of a hub folder, without building the model."""
    from benmm.bands import stats_reben
    from benmm.labels import label_names

    root = Path(folder)
    config = read_config(root)
    bands = hub_bands(root, config, band_order)
    classes = hub_class_names(config, root / HUB_CONFIG)
    spec = hub_spec(config, bands)
    _, version = _name_release(root)
    info = {"name": spec.name, "modality": spec.modality, "bands": list(spec.bands), "fusion": spec.fusion,
            "num_classes": 19, "options": spec.options, "labels": 19, "order": "official",
            "resample": "nearest", "stats": stats_reben().to_json(),
            "class_names": list(label_names(19, "official")), "threshold": 0.5, "keep_native": False,
            "source": "configilm-hub", "release": band_order or version, "hub_bands": list(bands)}
    return spec, info, (config, bands, classes)


def load_hub(folder: str | Path, band_order: str | None = None) -> tuple[BenModel, dict[str, Any]]:
    """(benmm model in eval mode, info) from a reBEN/ConfigILM hub folder (module docstring)."""
    from benmm.models.weights import load_state

    root = Path(folder)
    spec, info, (_, bands, classes) = hub_info(root, band_order)
    model = build(spec)
    state = translate_state(model, _timm_state(root), bands, classes, str(root / HUB_WEIGHTS))
    load_state(model, state, str(root / HUB_WEIGHTS))
    model.eval()
    return model, info


def recipe_overrides(folder: str | Path, band_order: str | None = None) -> list[str]:
    """Recipe overrides that make ``benmm train --weights FOLDER`` build the hub model and feed it as it
    was trained (the user's own ``--set`` come after these and win)."""
    spec, info, _ = hub_info(folder, band_order)
    return [f"model.name={json.dumps(spec.name)}", f"model.modality={json.dumps(spec.modality)}",
            f"model.bands={json.dumps(list(spec.bands))}", 'model.fusion="early"', "data.labels=19",
            'data.stats="reben"', f"data.resample={json.dumps(info['resample'])}"]


def load_hub_weights(model: BenModel, folder: str | Path, band_order: str | None = None) -> None:
    """Load a hub folder into ``model`` (``create_model(..., weights=FOLDER)``, fine-tuning): the model
    must be the folder's (same timm network, bands and 19 classes)."""
    from benmm.models.weights import load_state

    hub, _ = load_hub(folder, band_order)
    mine, theirs = model.spec, hub.spec
    if (mine.name, mine.modality, mine.bands, mine.num_classes) != (
            theirs.name, theirs.modality, theirs.bands, theirs.num_classes):
        raise HubError(
            f"{folder}: a {theirs.name} model of {theirs.num_classes} classes on bands "
            f"{', '.join(theirs.bands)} does not fit {mine.name} ({mine.num_classes} classes, bands "
            f"{', '.join(mine.bands)}); `benmm train --weights FOLDER` sets the model from the folder "
            "(leave the model, bands and label-set options out)")
    load_state(model, hub.state_dict(), str(folder))
