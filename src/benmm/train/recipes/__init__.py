"""Training recipes: small TOML files (``paper-v1``, ``reben``) with sections model/data/optim/trainer.

``load_recipe("reben", ["optim.lr=3e-4", "epochs=5"])`` reads a shipped recipe (or a TOML path) and
applies overrides. An override is ``section.key=value`` or ``key=value`` where ``key`` is unique across
sections; values are parsed as TOML (``3e-4``, ``true``, ``"s2-rgb"``) and fall back to a plain string.
"""

from __future__ import annotations

import copy
import difflib
import tomllib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Final

from benmm.train.recipes.schema import MODEL_KEYS, OPTIONAL_SECTIONS, SCHEMA, RecipeError, validate

SECTIONS: Final = ("model", "data", "optim", "trainer")
_HERE = Path(__file__).parent
__all__ = ["RecipeError", "apply_overrides", "list_recipes", "load_recipe"]


def list_recipes() -> list[str]:
    """Names of the shipped recipes."""
    return sorted(p.stem for p in _HERE.glob("*.toml"))


def _read(name_or_path: str | Path) -> tuple[dict[str, Any], str]:
    path = Path(name_or_path)
    if str(name_or_path) in list_recipes():
        path = _HERE / f"{name_or_path}.toml"
    elif not (path.suffix == ".toml" and path.is_file()):
        close = difflib.get_close_matches(str(name_or_path), list_recipes(), n=1, cutoff=0.5)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise RecipeError(f"unknown recipe {str(name_or_path)!r}{hint}. Recipes: {', '.join(list_recipes())} "
                          "(or a path to a .toml file with the same sections)")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise RecipeError(f"{path}: not valid TOML ({exc})") from None
    return data, path.stem


def _parse_value(text: str) -> Any:
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def apply_overrides(recipe: dict[str, Any], overrides: Iterable[str] | Mapping[str, Any]) -> dict[str, Any]:
    """A copy of ``recipe`` with overrides applied (see the module docstring)."""
    out = copy.deepcopy(recipe)
    items = overrides.items() if isinstance(overrides, Mapping) else [_split(o) for o in overrides]
    for key, value in items:
        if isinstance(value, str) and not isinstance(overrides, Mapping):
            value = _parse_value(value)
        section, field = _locate(out, key)
        out.setdefault(section, {})[field] = value
    return out


def _split(item: str) -> tuple[str, str]:
    if "=" not in item:
        raise RecipeError(f"override {item!r} is not key=value (e.g. optim.lr=3e-4 or epochs=5)")
    key, value = item.split("=", 1)
    return key.strip(), value.strip()


def _locate(recipe: dict[str, Any], key: str) -> tuple[str, str]:
    known = {f"{s}.{k}" for s in (*SECTIONS, *OPTIONAL_SECTIONS) for k in recipe.get(s, {})} | {
        f"{s}.{k}" for s, keys in SCHEMA.items() for k in keys}
    if "." in key:
        section, field = key.split(".", 1)
        if f"{section}.{field}" in known or (section == "model" and field):
            return section, field  # new model.* keys are model options (create_model checks them)
    else:
        hits = [k for k in known if k.split(".", 1)[1] == key]
        if len(hits) == 1:
            return tuple(hits[0].split(".", 1))  # type: ignore[return-value]
        if len(hits) > 1:
            raise RecipeError(f"override {key!r} is ambiguous: use one of {', '.join(sorted(hits))}")
    close = difflib.get_close_matches(key, sorted(known), n=1, cutoff=0.5)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    raise RecipeError(f"unknown recipe setting {key!r}{hint}. Settings: {', '.join(sorted(known))}")


def load_recipe(name_or_path: str | Path = "reben",
                overrides: Iterable[str] | Mapping[str, Any] = ()) -> dict[str, Any]:
    """The recipe as nested dicts ``{"name", "description", "task", "model", "data", "optim", "trainer"}``
    (plus ``"retrieval"`` for the retrieval recipes; ``task`` is classification, hashing or cross-modal)."""
    data, stem = _read(name_or_path)
    missing = [s for s in SECTIONS if not isinstance(data.get(s), dict)]
    if missing:
        raise RecipeError(f"recipe {stem!r} lacks the section(s) {', '.join(missing)}")
    recipe = {"name": stem, "description": str(data.get("description", "")),
              "task": data.get("task", "classification"),
              **{s: dict(data[s]) for s in SECTIONS},
              **{s: dict(data[s]) for s in OPTIONAL_SECTIONS if isinstance(data.get(s), dict)}}
    out = apply_overrides(recipe, overrides)
    out["notes"] = _keep_options_of_their_model(recipe, out, overrides)
    return validate(out)


def _keep_options_of_their_model(recipe: dict[str, Any], out: dict[str, Any],
                                 overrides: Iterable[str] | Mapping[str, Any]) -> list[str]:
    """A recipe's model options were written for its model: when an override switches the model, the
    recipe file's options are dropped (options given as overrides stay), and a note says which."""
    if out["model"].get("name") == recipe["model"].get("name"):
        return []
    items = overrides.keys() if isinstance(overrides, Mapping) else [_split(o)[0] for o in overrides]
    given = {k.split(".", 1)[-1] for k in items}
    dropped = [k for k in recipe["model"] if k not in MODEL_KEYS and k not in given]
    for key in dropped:
        out["model"].pop(key, None)
    if not dropped:
        return []
    return [f"model {out['model']['name']!r} instead of the recipe's {recipe['model'].get('name')!r}: its "
            f"options {', '.join(dropped)} were written for that model and are not used"]
