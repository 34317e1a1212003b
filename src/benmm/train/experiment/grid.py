"""Experiment grids: a TOML file naming a base recipe, a store and the axes to cross, checked up front.

A grid file (see the shipped ones in ``grids/``)::

    description = "..."
    recipe = "demo"                 # base recipe: a shipped name or a .toml path (relative to this file)
    store = "my.store"              # a store (relative to this file), or "synthetic" (built in --out)
    synthetic_pairs = 400           # with store = "synthetic"
    set = ["trainer.epochs=3"]      # recipe overrides for every run (as `benmm train --set`)
    split = "test"                  # the split every run is scored on
    workers = 2                     # DataLoader workers (0 for tiny stores; the CLI's --workers wins)

    [axes]                          # every combination is one run (a missing axis: the recipe's value)
    model = ["resnet50"]            # registered names or timm:<name>
    modality = ["s2", "s1s2"]       # s1, s2, s1s2 (early fusion), s1s2-late
    labels = [19, 43]
    init = ["scratch", "imagenet"]  # scratch, or a name defined in [init]
    fraction = [0.01, 0.1, 1.0]     # share of the training split (seeded by data.fraction_seed)
    seed = [0, 1, 2]

    [init]                          # the initialisations other than scratch
    imagenet = "resnet50-imagenet.safetensors"   # a local timm file, or "stand-in" (see runner)
    bigearthnet = "runs/ben/model.safetensors"   # a benmm run folder / export / checkpoint, or "pretrain"

    [compare]                       # the per-class view: which classes gain from b over a
    a = { init = "scratch" }
    b = { init = "imagenet" }

Every mistake is one line naming the file, the line and the fix (:class:`GridError`).
"""

from __future__ import annotations

import difflib
import itertools
import re
import tomllib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Final

from benmm.errors import BenmmError

AXES: Final = ("model", "modality", "labels", "init", "fraction", "seed")
#: the axes that name a setting (everything but the seed): runs of one setting are averaged over seeds
SETTING_AXES: Final = AXES[:-1]
TOP_KEYS: Final = ("description", "recipe", "store", "synthetic_pairs", "set", "split", "workers", "axes",
                   "init", "compare")
MODALITIES: Final = {"s1": ("s1", "early"), "s2": ("s2", "early"), "s1s2": ("s1s2", "early"),
                     "s1s2-late": ("s1s2", "late")}
SPECIAL_INITS: Final = ("stand-in", "pretrain")
SPLITS: Final = ("train", "val", "validation", "test")
_HERE = Path(__file__).parent / "grids"


class GridError(BenmmError):
    """A grid file that cannot be run: unknown keys or values, a missing file, bad overrides."""


@dataclass(frozen=True)
class Run:
    """One cell of the grid: a setting and a seed."""

    model: str
    modality: str
    labels: int
    init: str
    fraction: float
    seed: int

    @property
    def setting(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in SETTING_AXES}

    @property
    def run_id(self) -> str:
        model = re.sub(r"[^A-Za-z0-9.-]+", "-", self.model)
        return (f"{model}_{self.modality}_L{self.labels}_{self.init}_f{self.fraction:g}_s{self.seed}")

    def overrides(self) -> list[str]:
        modality, fusion = MODALITIES[self.modality]
        return [f'model.name="{self.model}"', f'model.modality="{modality}"', f'model.fusion="{fusion}"',
                f"data.labels={self.labels}", f"data.fraction={self.fraction!r}"]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Grid:
    path: Path
    name: str
    description: str
    recipe: str
    store: str | None
    synthetic_pairs: int
    overrides: list[str]
    split: str
    axes: dict[str, list[Any]]
    inits: dict[str, str]
    compare: tuple[dict[str, Any], dict[str, Any]] | None
    workers: int = 2
    text: str = field(repr=False, default="")

    def runs(self) -> list[Run]:
        """Every combination of the axes, in file order (seeds innermost)."""
        return [Run(*values) for values in itertools.product(*(self.axes[a] for a in AXES))]


def list_grids() -> list[str]:
    """Names of the shipped grids."""
    return sorted(p.stem for p in _HERE.glob("*.toml"))


def grid_path(name_or_path: str | Path) -> Path:
    """A shipped grid's file (``demo-pretraining`` or ``demo-pretraining.toml``) or a path."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    stem = path.name.removesuffix(".toml")
    if stem in list_grids() and path.parent == Path("."):
        return _HERE / f"{stem}.toml"
    close = difflib.get_close_matches(stem, list_grids(), n=1, cutoff=0.5)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    raise GridError(f"{name_or_path}: no such grid file{hint} (shipped grids: {', '.join(list_grids())})")


def line_of(text: str, section: str | None, key: str) -> int | None:
    """The 1-based line where ``key`` is set in ``[section]`` (``None``: the top level)."""
    current: str | None = None
    pattern = re.compile(rf'^\s*"?{re.escape(key)}"?\s*=')
    for number, line in enumerate(text.splitlines(), 1):
        header = re.match(r"^\s*\[([^\]]+)\]", line)
        if header:
            current = header.group(1).strip()
        elif current == section and pattern.match(line):
            return number
    return None


class _Checker:
    def __init__(self, path: Path, text: str) -> None:
        self.path, self.text = path, text

    def fail(self, section: str | None, key: str, message: str) -> GridError:
        line = line_of(self.text, section, key)
        where = f"{self.path}:{line}" if line else str(self.path)
        return GridError(f"{where}: {message}")

    def unknown(self, section: str | None, key: str, known: tuple[str, ...] | list[str]) -> GridError:
        close = difflib.get_close_matches(key, list(known), n=1, cutoff=0.5)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        what = f"[{section}] key" if section else "key"
        return self.fail(section, key, f"unknown {what} {key!r}{hint} (known: {', '.join(known)})")


def _model_ok(name: str) -> bool:
    from benmm.models import list_models

    if name in list_models():
        return True
    if name.startswith("timm:"):
        import timm

        return bool(timm.is_model(name.removeprefix("timm:")))
    return False


def _check_axis(c: _Checker, axis: str, values: Any, inits: dict[str, str]) -> list[Any]:
    items = values if isinstance(values, list) else [values]
    if not items:
        raise c.fail("axes", axis, f"axis {axis!r} is empty: give at least one value or leave the axis out")
    out: list[Any] = []
    for v in items:
        bad: str | None = None
        if axis == "model" and not (isinstance(v, str) and _model_ok(v)):
            bad = "a registered model (see `benmm models`) or timm:<name> of an installed timm model"
        elif axis == "modality" and v not in MODALITIES:
            bad = f"one of {', '.join(MODALITIES)}"
        elif axis == "labels" and (isinstance(v, bool) or v not in (19, 43)):
            bad = "19 or 43"
        elif axis == "init" and not (v == "scratch" or v in inits):
            bad = f"scratch or a name defined in [init] ({', '.join(inits) or 'none defined'})"
        elif axis == "fraction" and (isinstance(v, bool) or not isinstance(v, int | float) or not 0 < v <= 1):
            bad = "a number in (0, 1], e.g. 0.01 for 1% of the training split"
        elif axis == "seed" and (isinstance(v, bool) or not isinstance(v, int) or v < 0):
            bad = "an integer >= 0"
        if bad:
            raise c.fail("axes", axis, f"{axis} value {v!r} is not valid: expected {bad}")
        out.append(float(v) if axis == "fraction" else v)
    if len(set(map(str, out))) != len(out):
        raise c.fail("axes", axis, f"axis {axis!r} repeats a value: {items}")
    return out


def _recipe_default(recipe: dict[str, Any], axis: str) -> Any:
    m, d = recipe["model"], recipe["data"]
    return {"model": m.get("name"),
            "modality": m.get("modality", "s1s2") + ("-late" if m.get("fusion") == "late" else ""),
            "labels": d.get("labels", 19), "init": "scratch", "fraction": float(d.get("fraction", 1.0)),
            "seed": 0}[axis]


def load_grid(name_or_path: str | Path, inits: dict[str, str] | None = None,
              check_files: bool = True) -> Grid:
    """Read and check a grid file (see the module docstring); every problem is a :class:`GridError`.
    ``inits`` replaces [init] entries (the CLI's ``--init NAME=PATH``); ``check_files=False`` (a dry run)
    accepts init files that do not exist yet."""
    from benmm.train.recipes import RecipeError, load_recipe

    path = grid_path(name_or_path)
    text = path.read_text(encoding="utf-8")
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise GridError(f"{path}: not valid TOML ({exc})") from None
    c = _Checker(path, text)
    for key in data:
        if key not in TOP_KEYS:
            raise c.unknown(None, key, TOP_KEYS)
    for key in ("axes", "init", "compare"):
        if key in data and not isinstance(data[key], dict):
            raise c.fail(None, key, f"{key!r} must be a table: write it as [{key}]")
    overrides_init = dict(inits or {})
    inits = {str(k): v for k, v in data.get("init", {}).items()}
    given_inits = overrides_init
    for name, value in given_inits.items():
        inits[name] = value if value in SPECIAL_INITS else str(Path(value).resolve())
    for name, value in inits.items():
        if name == "scratch":
            raise c.fail("init", name, "'scratch' is built in (random weights): give your initialisation "
                         "another name")
        if not isinstance(value, str) or not value:
            raise c.fail("init", name, f"[init] {name} must be a file or folder path, or one of "
                         f"{', '.join(SPECIAL_INITS)}")
        if value not in SPECIAL_INITS:
            target = (path.parent / value) if not Path(value).is_absolute() else Path(value)
            if check_files and not target.exists():
                raise c.fail("init", name, f"[init] {name}: {target} does not exist (a local timm file, a "
                             f"benmm run folder or export): give it with --init {name}=PATH, or use "
                             "\"stand-in\" / \"pretrain\"")
            inits[name] = str(target)
    recipe_name = str(data.get("recipe", "reben"))
    local = path.parent / recipe_name
    recipe_ref = str(local) if recipe_name.endswith(".toml") and local.is_file() else recipe_name
    overrides = data.get("set", [])
    if not isinstance(overrides, list) or not all(isinstance(o, str) for o in overrides):
        raise c.fail(None, "set", 'set must be a list of "key=value" strings, e.g. ["trainer.epochs=3"]')
    try:
        recipe = load_recipe(recipe_ref, overrides)
    except RecipeError as exc:
        text = str(exc)
        about_file = text.startswith(("unknown recipe '", "recipe ")) or "not valid TOML" in text
        key = "set" if overrides and not about_file else "recipe"
        raise c.fail(None, key, str(exc)) from None
    given = data.get("axes", {})
    for key in given:
        if key not in AXES:
            raise c.unknown("axes", key, AXES)
    axes = {a: _check_axis(c, a, given[a], inits) if a in given else [_recipe_default(recipe, a)]
            for a in AXES}
    if axes["modality"][0] not in MODALITIES:
        raise c.fail("axes", "modality", f"the recipe's modality {axes['modality'][0]!r} is unknown")
    split = str(data.get("split", "test"))
    if split not in SPLITS:
        raise c.fail(None, "split", f"split {split!r} is not one of {', '.join(SPLITS)}")
    pairs = data.get("synthetic_pairs", 400)
    if isinstance(pairs, bool) or not isinstance(pairs, int) or pairs < 40:
        raise c.fail(None, "synthetic_pairs", "synthetic_pairs must be an integer >= 40")
    workers = data.get("workers", 2)
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 0:
        raise c.fail(None, "workers", "workers must be an integer >= 0 (DataLoader worker processes)")
    store = data.get("store")
    if store is not None and (not isinstance(store, str) or not store):
        raise c.fail(None, "store", 'store must be a path or "synthetic"')
    if store not in (None, "synthetic") and not Path(store).is_absolute():
        store = str(path.parent / store)
    return Grid(path=path, name=path.stem, description=str(data.get("description", "")), recipe=recipe_ref,
                store=store, synthetic_pairs=pairs, overrides=list(overrides), split=split, axes=axes,
                inits=inits, compare=_compare(c, data.get("compare"), axes), workers=workers, text=text)


def _compare(c: _Checker, spec: Any, axes: dict[str, list[Any]]
             ) -> tuple[dict[str, Any], dict[str, Any]] | None:
    if spec is None:
        return None
    for key in spec:
        if key not in ("a", "b"):
            raise c.unknown("compare", key, ("a", "b"))
    if set(spec) != {"a", "b"}:
        raise c.fail(None, "compare", "[compare] needs both a = {...} and b = {...}")
    out = []
    for side in ("a", "b"):
        chosen = spec[side]
        if not isinstance(chosen, dict) or not chosen:
            raise c.fail("compare", side, f"[compare] {side} must be an inline table, e.g. "
                         '{ init = "scratch" }')
        for axis, value in chosen.items():
            if axis not in SETTING_AXES:
                raise c.fail("compare", side, f"[compare] {side}: unknown axis {axis!r} (axes: "
                             f"{', '.join(SETTING_AXES)})")
            if (float(value) if axis == "fraction" else value) not in axes[axis]:
                raise c.fail("compare", side, f"[compare] {side}: {axis} = {value!r} is not on the grid "
                             f"(values: {axes[axis]})")
        out.append({k: float(v) if k == "fraction" else v for k, v in chosen.items()})
    return out[0], out[1]
