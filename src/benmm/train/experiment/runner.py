"""Run a grid: one ordinary ``benmm train`` + ``benmm evaluate`` folder per run, one after another.

``run_experiment(grid, out)`` writes ``out/runs/<run id>/`` (checkpoints, metrics.csv, recipe.json,
model.safetensors, ``eval-<split>/`` with metrics.json and per_class.csv) and, once a run is scored,
``result.json`` beside them: a run with a ``result.json`` is finished and is skipped on ``resume``. A run
that raises is recorded in ``error.txt`` (its message) and the next one starts; on ``resume`` a failed or
interrupted run starts again from nothing. A 43-class run is also scored on the 19-class nomenclature
(:func:`benmm.labels.scores_to_19`: the maximum over the merged classes), so 43 and 19 compare on equal
terms.

Initialisations: ``scratch`` (random), a local file (a timm state dict, e.g. ImageNet weights saved from
timm; or a benmm run folder / export / checkpoint: "BigEarthNet-trained"), ``stand-in`` (a randomly
initialised timm model of the run's architecture saved to ``out/init/``: a stand-in for an ImageNet file
where no model hub is reachable, named so in every table) and ``pretrain`` (a model of the run's
architecture trained here first on the whole training split, ``out/pretrain/``, then fine-tuned).
"""

from __future__ import annotations

import json
import shutil
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benmm.atomic import atomic_write
from benmm.errors import BenmmError
from benmm.train.experiment.grid import MODALITIES, Grid, GridError, Run

RESULT = "result.json"
ERROR = "error.txt"
RULE_43_TO_19 = ("43 -> 19: each 19-class score is the maximum of the scores of the 43-class labels that "
                 "merge into it (benmm.labels.scores_to_19); targets converted with the official table")


@dataclass
class RunOutcome:
    run: Run
    status: str  # "done", "skipped" (finished before), "failed"
    folder: Path
    seconds: float = 0.0
    error: str | None = None
    result: dict[str, Any] = field(default_factory=dict)


def run_folder(out: Path, run: Run) -> Path:
    return out / "runs" / run.run_id


def is_finished(out: Path, run: Run) -> bool:
    return (run_folder(out, run) / RESULT).is_file()


def resolve_store(grid: Grid, out: Path, store: str | Path | None = None, progress: bool = False) -> Path:
    """The store a grid runs on: ``store`` (the CLI's --store), the grid's, or a synthetic one built once
    in ``out/store`` (``store = "synthetic"``)."""
    chosen = str(store) if store is not None else grid.store
    if chosen is None:
        raise GridError(f"{grid.path}: the grid names no store: give --store PATH (a benmm store or reBEN "
                        "folder) or set store = \"...\" in the grid")
    if chosen != "synthetic":
        if not Path(chosen).exists():
            raise GridError(f"{chosen}: no such store (the grid's store, or --store)")
        return Path(chosen)
    target = out / "store"
    if not (target / "benmm-store.json").is_file():
        from benmm.ingest import encode
        from benmm.synth.archive import synthesize

        archive = out / "synthetic-archive"
        if not archive.is_dir():
            synthesize(archive, pairs=grid.synthetic_pairs, seed=0, layout="v1", workers=1)
        encode(archive, target, workers=1, progress=progress)
    return target


def split_counts(store: Path | None) -> dict[str, int] | None:
    """Pairs per split of the store's recommended set, or None when there is no store yet."""
    if store is None or not store.exists():
        return None
    from benmm.archive.splits import normalize_split
    from benmm.data.selection import select
    from benmm.store import Store

    meta = select(Store.open(store).metadata, None, True, None, None, str(store))
    names = meta["split"].map(lambda v: normalize_split(str(v), strict=False))
    return {str(k): int(v) for k, v in names.value_counts().items()}


def _timm_arch(model: str) -> str:
    from benmm.models.fusion import TIMM_BASELINES

    if model.startswith("timm:"):
        return model.removeprefix("timm:")
    if model in TIMM_BASELINES:
        return TIMM_BASELINES[model]
    raise GridError(f"init stand-in: model {model!r} is not a timm model, so a timm file cannot initialise "
                    "it; use scratch or a benmm file for it")


def stand_in_file(out: Path, name: str, model: str) -> Path:
    """A randomly initialised timm model (3 input channels, its own classifier, like an ImageNet file)
    saved as a timm state dict: a STAND-IN for an ImageNet file, labelled so in its metadata."""
    arch = _timm_arch(model)
    path = out / "init" / f"{name}-stand-in-{arch}.safetensors"
    if not path.is_file():
        import timm
        import torch
        from safetensors.torch import save_file

        from benmm.atomic import atomic_path

        torch.manual_seed(0)
        net = timm.create_model(arch, pretrained=False)
        state = {k: v.detach().contiguous() for k, v in net.state_dict().items()}
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            save_file(state, str(tmp), metadata={"format": "pt", "benmm_stand_in": (
                f"randomly initialised timm {arch} (seed 0), NOT ImageNet weights: a stand-in where no "
                "model hub is reachable")})
    return path


def _pretrained(grid: Grid, out: Path, run: Run, store: Path, workers: int, kwargs: dict[str, Any]) -> Path:
    """``pretrain``: the run's model trained once on the whole training split (seed 0), then reused."""
    from benmm.train.fit import train

    base = Run(run.model, run.modality, run.labels, "scratch", 1.0, 0)
    folder = out / "pretrain" / base.run_id.removesuffix("_scratch_f1_s0")
    export = folder / "model.safetensors"
    if not export.is_file():
        if folder.exists():
            shutil.rmtree(folder)
        train(store, folder, recipe=grid.recipe, overrides=[*grid.overrides, *base.overrides()],
              workers=workers, seed=0, progress=False, **kwargs)
    if not export.is_file():
        raise BenmmError(f"{folder}: pretraining wrote no model.safetensors (no best checkpoint)")
    return export


def init_weights(grid: Grid, out: Path, run: Run, store: Path, workers: int = 2,
                 trainer_kwargs: dict[str, Any] | None = None) -> str | None:
    """The weights file a run starts from (``None``: scratch)."""
    if run.init == "scratch":
        return None
    source = grid.inits[run.init]
    if source == "stand-in":
        return str(stand_in_file(out, run.init, run.model))
    if source == "pretrain":
        return str(_pretrained(grid, out, run, store, workers, trainer_kwargs or {}))
    path = Path(source)
    if path.is_dir():
        from benmm.train.export import resolve_checkpoint

        for candidate in (path / "model.safetensors",):
            if candidate.is_file():
                return str(candidate)
        return str(resolve_checkpoint(path))
    return str(path)


def score_on_19(scores: Any, targets: Any, order: str) -> dict[str, Any]:
    """Metrics of a 43-class model's outputs converted to the 19-class nomenclature (see module doc)."""
    from benmm.labels import label_names, scores_to_19
    from benmm.train.metrics import compute_metrics, per_class_metrics

    s19 = scores_to_19(scores, order43=order, order19=order)  # type: ignore[arg-type]
    t19 = scores_to_19(targets, order43=order, order19=order)  # type: ignore[arg-type]
    return {"rule": RULE_43_TO_19, "metrics": compute_metrics(s19, t19),
            "per_class": per_class_metrics(s19, t19, label_names(19, order))}


def execute(grid: Grid, out: Path, run: Run, store: Path, workers: int = 2,
            trainer_kwargs: dict[str, Any] | None = None) -> dict[str, Any]:
    """Train, evaluate and score one run; writes and returns its ``result.json`` payload."""
    from benmm.train.evaluate import evaluate
    from benmm.train.fit import train

    folder = run_folder(out, run)
    weights = init_weights(grid, out, run, store, workers, trainer_kwargs)
    t0 = time.perf_counter()
    trained = train(store, folder, recipe=grid.recipe, overrides=[*grid.overrides, *run.overrides()],
                    weights=weights, workers=workers, seed=run.seed, progress=False, **(trainer_kwargs or {}))
    if trained.best is None:
        raise BenmmError(f"{folder}: training saved no best checkpoint")
    train_s = time.perf_counter() - t0
    ev = evaluate(trained.best, store, split=grid.split, out=folder / f"eval-{grid.split}", workers=workers,
                  progress=False)
    result: dict[str, Any] = {
        "run": run.run_id, "setting": run.setting, "seed": run.seed, "split": ev.split,
        "modality": MODALITIES[run.modality][0], "fusion": MODALITIES[run.modality][1],
        "init_file": weights, "init_kind": grid.inits.get(run.init, "scratch"),
        "train_seconds": train_s, "eval_seconds": ev.seconds, "epochs": trained.epochs,
        "train_samples": trained.train_samples,
        "pair_passes": trained.epochs * (trained.train_samples + (split_counts(store) or {}).get("val", 0))
        + int(ev.metrics["n_samples"]),
        "scores": {str(run.labels): {"metrics": ev.metrics, "per_class": ev.per_class}}}
    if run.labels == 43:
        order = str(json.loads((folder / "recipe.json").read_text())["data"].get("order", "official"))
        result["scores"]["19"] = score_on_19(ev.scores, ev.targets, order)
        atomic_write(folder / f"eval-{grid.split}" / "metrics-19.json",
                     json.dumps(result["scores"]["19"], indent=2))
    atomic_write(folder / RESULT, json.dumps(result, indent=2))
    return result


def check_out(out: Path, resume: bool) -> None:
    runs = out / "runs"
    if runs.is_dir() and any(runs.iterdir()) and not resume:
        raise GridError(f"{out} already holds runs: add --resume to go on (finished runs are skipped), or "
                        "choose another --out")


def run_experiment(grid: Grid, out: str | Path, store: str | Path | None = None, resume: bool = False,
                   workers: int = 2, trainer_kwargs: dict[str, Any] | None = None,
                   on_event: Callable[[str, RunOutcome, int, int], None] | None = None) -> list[RunOutcome]:
    """Run every run of ``grid`` into ``out`` (see the module docstring); returns one outcome per run.
    ``on_event(kind, outcome, i, n)`` is called with kind "start" before and "end" after each run."""
    from benmm.train.fit import quiet_lightning

    out = Path(out)
    check_out(out, resume)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / "grid.toml", grid.text)
    store_path = resolve_store(grid, out, store)
    quiet_lightning()
    runs = grid.runs()
    outcomes: list[RunOutcome] = []
    for i, run in enumerate(runs, 1):
        folder = run_folder(out, run)
        outcome = RunOutcome(run=run, status="done", folder=folder)
        if is_finished(out, run):
            outcome.status = "skipped"
            outcome.result = json.loads((folder / RESULT).read_text(encoding="utf-8"))
            outcomes.append(outcome)
            if on_event:
                on_event("end", outcome, i, len(runs))
            continue
        if on_event:
            on_event("start", outcome, i, len(runs))
        if folder.exists():  # failed or interrupted earlier: start it again from nothing
            shutil.rmtree(folder)
        t0 = time.perf_counter()
        try:
            outcome.result = execute(grid, out, run, store_path, workers, trainer_kwargs)
        except KeyboardInterrupt:
            raise
        except Exception as exc:  # a failing run is reported and the grid goes on
            outcome.status = "failed"
            outcome.error = f"{type(exc).__name__}: {exc}".splitlines()[0]
            folder.mkdir(parents=True, exist_ok=True)
            atomic_write(folder / ERROR, outcome.error + "\n\n" + traceback.format_exc())
        outcome.seconds = time.perf_counter() - t0
        outcomes.append(outcome)
        if on_event:
            on_event("end", outcome, i, len(runs))
    return outcomes
