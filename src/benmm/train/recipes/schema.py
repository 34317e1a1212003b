"""The recipe schema: every key a recipe may hold, its type and its range, checked after overrides.

A key the schema does not know is refused (training would silently ignore it), and so is a value of the
wrong type or range, each with one line naming the key. ``model.*`` keys beyond name/modality/fusion/
bands are options of the chosen model, checked by the model itself (``create_model``). Hand-written
rather than pydantic (which benmm installs only with the ``serve`` extra) because the checks are a
table of a dozen keys.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from benmm.errors import BenmmError


class RecipeError(BenmmError):
    """An unknown recipe, a malformed recipe file, or a bad override."""


@dataclass(frozen=True)
class Key:
    """One recipe key: what it accepts (in words, for the message) and a check returning the clean value."""

    what: str
    check: Callable[[Any], Any]


def _int(lo: int, hi: int | None = None) -> Callable[[Any], int]:
    def check(v: Any) -> int:
        if isinstance(v, bool) or not isinstance(v, int) or v < lo or (hi is not None and v > hi):
            raise ValueError
        return v
    return check


def _num(lo: float, strict: bool = False) -> Callable[[Any], float]:
    def check(v: Any) -> float:
        if isinstance(v, bool) or not isinstance(v, int | float) or v < lo or (strict and v == lo):
            raise ValueError
        return float(v)
    return check


def _choice(*options: Any) -> Callable[[Any], Any]:
    def check(v: Any) -> Any:
        if v not in options:
            raise ValueError
        return v
    return check


def _bool(v: Any) -> bool:
    if not isinstance(v, bool):
        raise ValueError
    return v


def _names(v: Any) -> list[str] | None:
    if v is None or v == "all" or v == []:
        return None
    items = [v] if isinstance(v, str) else v
    if not isinstance(items, list) or not all(isinstance(x, str) and x for x in items):
        raise ValueError
    return list(items)


def _stats(v: Any) -> str | None:
    if v in (None, "none", False):
        return None  # no normalisation
    if not isinstance(v, str) or not v:
        raise ValueError
    from benmm.bands import NAMED_STATS

    if v not in NAMED_STATS and not Path(v).is_file():
        raise ValueError
    return v


def _fraction(v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float) or not 0.0 < v <= 1.0:
        raise ValueError
    return float(v)


def _bbox(v: Any) -> list[float] | None:
    if v is None or v == "all" or v == []:
        return None
    from benmm.data.place import check_bbox

    try:
        return list(check_bbox(v))
    except BenmmError:
        raise ValueError from None


def _bits(v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < 8 or v % 8 or v > 4096:
        raise ValueError
    return v


def _str(v: Any) -> str:
    if not isinstance(v, str) or not v:
        raise ValueError
    return v


SCHEMA: Final[dict[str, dict[str, Key]]] = {
    "model": {
        "name": Key("a model name (see `benmm models`) or timm:<name>", _str),
        "modality": Key("s1, s2 or s1s2", _choice("s1", "s2", "s1s2")),
        "fusion": Key("early or late", _choice("early", "late")),
        "bands": Key('"all", a band group or a list of bands', lambda v: v),  # checked by the model
        # the retrieval recipes (hashing, cross-modal); model keys s1_<option> / s2_<option> set an option
        # of one cross-modal encoder only
        "bits": Key("the hash code length, a multiple of 8 (16, 32, 64 or 128)", _bits),
        "s1_name": Key("the S1 encoder's model name (cross-modal; default: model.name)", _str),
        "s2_name": Key("the S2 encoder's model name (cross-modal; default: model.name)", _str),
    },
    "data": {
        "resample": Key("nearest, bilinear or bicubic", _choice("nearest", "bilinear", "bicubic")),
        "stats": Key('"v1", a file written by `benmm stats`, "reben" or "none" (no normalisation)', _stats),
        "augment": Key("true or false", _bool),
        "labels": Key("19 or 43", _choice(19, 43)),
        "order": Key("official or alphabetical", _choice("official", "alphabetical")),
        "batch_size": Key("a positive integer", _int(1)),
        "recommended": Key("true (leave out the snow, cloud and no-label patches) or false", _bool),
        "countries": Key('"all" or a list of country names', _names),
        "seasons": Key('"all" or a list of seasons', _names),
        "bbox": Key('"all" or [lon_min, lat_min, lon_max, lat_max] in degrees (pairs whose footprint meets '
                    'it)', _bbox),
        "fraction": Key("a number in (0, 1]: the share of the training split used (seeded)", _fraction),
        "fraction_seed": Key("an integer >= 0 (which random subset `fraction` keeps)", _int(0)),
    },
    "optim": {
        "optimizer": Key("adam, adamw or sgd", _choice("adam", "adamw", "sgd")),
        "lr": Key("a positive number", _num(0.0, strict=True)),
        "weight_decay": Key("a number >= 0", _num(0.0)),
        "momentum": Key("a number >= 0 (sgd)", _num(0.0)),
        "scheduler": Key("none or cosine", _choice("none", "cosine")),
        "warmup_steps": Key("an integer >= 0", _int(0)),
    },
    "trainer": {
        "epochs": Key("a positive integer", _int(1)),
        "patience": Key("an integer >= 0 (0: no early stopping)", _int(0)),
        "precision": Key("32-true, bf16-mixed, 16-mixed, ...", _str),
        "log_every_n_steps": Key("a positive integer", _int(1)),
        "gradient_clip_val": Key("a number >= 0 (0: no clipping)", _num(0.0)),
    },
    # the objective of the retrieval recipes (benmm.train.losses), and their validation mAP@K
    "retrieval": {
        "supervision": Key("labels (multi-label similarity) or pairs (the S1/S2 partner is the positive)",
                           _choice("labels", "pairs")),
        "temperature": Key("a positive number", _num(0.0, strict=True)),
        "quantization": Key("a number >= 0 (weight of the quantisation term)", _num(0.0)),
        "balance": Key("a number >= 0 (weight of the bit-balance term)", _num(0.0)),
        "classification": Key("a number >= 0 (weight of the codes' label classifier; labels supervision)",
                              _num(0.0)),
        "k": Key("a positive integer (validation mAP@K, the checkpoint monitor)", _int(1)),
        "val_queries": Key("a positive integer (validation queries drawn for mAP@K)", _int(1)),
    },
}
#: what a recipe trains
TASKS: Final = ("classification", "hashing", "cross-modal")
#: sections a classification recipe may leave out
OPTIONAL_SECTIONS: Final = ("retrieval",)
#: model keys that only the retrieval recipes read
RETRIEVAL_MODEL_KEYS: Final = ("bits", "s1_name", "s2_name")
#: model keys that are not options of the model
MODEL_KEYS: Final = tuple(SCHEMA["model"])


def validate(recipe: dict[str, Any]) -> dict[str, Any]:
    """Check every key of every section (model options excepted); returns the recipe, values cleaned."""
    task = recipe.get("task", "classification")
    if task not in TASKS:
        raise RecipeError(f"recipe task {task!r}: expected one of {', '.join(TASKS)}")
    for section, keys in SCHEMA.items():
        for key, value in list(recipe.get(section, {}).items()):
            spec = keys.get(key)
            if spec is None:
                if section == "model":
                    continue  # an option of the model: create_model checks it
                known = [f"{section}.{k}" for k in keys]
                close = difflib.get_close_matches(f"{section}.{key}", known, n=1, cutoff=0.6)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                raise RecipeError(f"unknown recipe setting {section}.{key}{hint} (training would ignore it). "
                                  f"Settings of [{section}]: {', '.join(keys)}")
            try:
                recipe[section][key] = spec.check(value)
            except (ValueError, TypeError):
                raise RecipeError(f"recipe setting {section}.{key} = {value!r}: expected {spec.what}"
                                  ) from None
    _check_task(recipe, task)
    return recipe


def _check_task(recipe: dict[str, Any], task: str) -> None:
    """Settings of one task given to another would be ignored: refuse them, naming the recipes that read
    them."""
    model, retrieval = recipe["model"], recipe.get("retrieval", {})
    if task == "classification":
        extra = [f"model.{k}" for k in RETRIEVAL_MODEL_KEYS if k in model]
        extra += [f"retrieval.{k}" for k in retrieval]
        if extra:
            raise RecipeError(f"recipe settings {', '.join(extra)} belong to the hashing and cross-modal "
                              "recipes; this recipe trains a classifier (--recipe hashing or cross-modal)")
        return
    if "bits" not in model:
        raise RecipeError(f"the {task} recipe needs model.bits (the code length, e.g. --set model.bits=64)")
    if task == "hashing":
        extra = [f"model.{k}" for k in ("s1_name", "s2_name") if k in model]
        if retrieval.get("supervision", "labels") != "labels":
            extra.append("retrieval.supervision=pairs")
        if extra:
            raise RecipeError(f"recipe settings {', '.join(extra)} need two modalities: use the cross-modal "
                              "recipe (the hashing recipe learns codes of one modality from labels)")
