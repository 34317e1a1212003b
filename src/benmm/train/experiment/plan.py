"""``--dry-run``: the runs of a grid, whether each is finished, and what each costs.

The cost of a run is counted in pairs passed through the model: ``epochs x (training pairs after the
fraction + validation pairs) + pairs of the scored split`` (the store's recommended set, counted from its
metadata table; unknown while a synthetic store is not built). The time is estimated from the runs of
this out folder that already finished (seconds per pair passed, measured); without one it is unknown.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benmm.train.experiment.grid import Grid, Run
from benmm.train.experiment.runner import RESULT, is_finished, run_folder, split_counts


@dataclass
class PlannedRun:
    run: Run
    finished: bool
    epochs: int
    train_pairs: int | None
    pair_passes: int | None
    seconds: float | None


def seconds_per_pass(out: Path) -> float | None:
    """Measured seconds per pair pass over this folder's finished runs."""
    total_s, total_p = 0.0, 0
    for path in (out / "runs").glob(f"*/{RESULT}"):
        r = json.loads(path.read_text(encoding="utf-8"))
        passes = r.get("pair_passes")
        if passes:
            total_s += float(r["train_seconds"]) + float(r["eval_seconds"])
            total_p += int(passes)
    return total_s / total_p if total_p else None


def pair_passes(epochs: int, fraction: float, counts: dict[str, int], split: str) -> tuple[int, int]:
    n_train = counts.get("train", 0)
    kept = max(1, round(fraction * n_train)) if n_train else 0
    scored = counts.get("val" if split == "validation" else split, 0)
    return kept, epochs * (kept + counts.get("val", 0)) + scored


def plan(grid: Grid, out: Path, store: Path | None) -> list[PlannedRun]:
    from benmm.train.recipes import load_recipe

    counts = split_counts(store)
    rate = seconds_per_pass(out)
    planned = []
    for run in grid.runs():
        recipe = load_recipe(grid.recipe, [*grid.overrides, *run.overrides()])
        epochs = int(recipe["trainer"].get("epochs", 1))
        kept: int | None = None
        passes: int | None = None
        if counts is not None:
            kept, passes = pair_passes(epochs, run.fraction, counts, grid.split)
        finished = is_finished(out, run)
        secs = None
        if finished:
            r: dict[str, Any] = json.loads((run_folder(out, run) / RESULT).read_text(encoding="utf-8"))
            secs = float(r["train_seconds"]) + float(r["eval_seconds"])
        elif rate is not None and passes is not None:
            secs = rate * passes
        planned.append(PlannedRun(run, finished, epochs, kept, passes, secs))
    return planned
