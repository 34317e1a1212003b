"""``benmm demo``: the whole pipeline on a fresh machine, in minutes, with no arguments.

1. build the embedded default archive: a seeded synthetic BigEarthNet-MM archive (v1 layout) in the
   cache (:func:`benmm.cache.cache_dir`, sub-folder ``demo``; about 1.8 GB for the default 3,000
   pairs), reused when present; with ``BENMM_CACHE_DIR=off`` inside the report folder instead;
2. encode it into a store (reused when present);
3. train the demo recipe (a small K-Branch CNN) on S1, S2 and S1+S2;
4. evaluate each on the test split, next to the label-frequency baseline;
5. predict the 6 real BigEarthNet example pairs shipped with benmm;
6. print one summary table and write a report folder (metrics, per-class CSVs, plots);
7. :func:`retrieval_step`: the hook where the retrieval part of the demo runs;
8. :func:`cross_modal_step`: a cross-modal S1/S2 model, S1 test queries searched in the S2 train archive
   (:mod:`benmm.retrieval.demo_crossmodal`), printed by direction next to the uni-modal row and random.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from rich.console import Console
from rich.table import Table

DEMO_PAIRS: Final = 3000
DEMO_SEED: Final = 0
DEMO_RECIPE: Final = "demo"
#: (row label, modality) of the three demo models
DEMO_RUNS: Final = (("S1", "s1"), ("S2", "s2"), ("S1+S2", "s1s2"))
#: bump whenever the synthetic archive's pixels change (2: B09 and S1 levels fixed), so caches rebuild
CACHE_FORMAT: Final = 2


def cache_root(report: Path | None = None) -> Path:
    """The benmm cache (:func:`benmm.cache.cache_dir`); with caching off, ``<report>/cache``."""
    from benmm.cache import cache_dir

    folder = cache_dir()
    if folder is None:
        return (report or Path("benmm-demo")) / "cache"
    return folder


@dataclass
class DemoContext:
    """Everything the demo made; handed to :func:`retrieval_step` and returned by :func:`run_demo`."""

    cache: Path
    report: Path
    archive: Path
    store_path: Path
    console: Console
    store: Any = None
    pairs: int = DEMO_PAIRS
    seed: int = DEMO_SEED
    timings: dict[str, float] = field(default_factory=dict)
    runs: dict[str, dict[str, Any]] = field(default_factory=dict)  # label -> {checkpoint, metrics, seconds}
    baseline: dict[str, float] = field(default_factory=dict)
    examples: list[Any] = field(default_factory=list)
    retrieval: dict[str, Any] | None = None
    cross_modal: dict[str, Any] | None = None

    def checkpoint(self, label: str = "S1+S2") -> Path:
        return Path(self.runs[label]["checkpoint"])


def _progress(console: Console, description: str) -> tuple[Any, Callable[[int, int], None]]:
    from benmm.progress import progress_bar

    bar = progress_bar(console)
    task = bar.add_task(description, total=None)

    def update(done: int, total: int) -> None:
        bar.update(task, completed=done, total=total)

    return bar, update


def build_archive(ctx: DemoContext, workers: int, progress: bool) -> None:
    """The synthetic archive and its store in the cache; rebuilt when missing or of another config."""
    from benmm.ingest.pipeline import encode
    from benmm.store import Store
    from benmm.synth.archive import synthesize

    stamp = ctx.cache / f"demo-{ctx.pairs}-{ctx.seed}.json"
    config = {"format": CACHE_FORMAT, "pairs": ctx.pairs, "seed": ctx.seed}
    current = json.loads(stamp.read_text()) if stamp.is_file() else None
    if current != config:  # another cache format: start over (archive and store are rebuilt atomically)
        for p in (ctx.archive, ctx.store_path):
            if p.exists():
                shutil.rmtree(p)
        ctx.cache.mkdir(parents=True, exist_ok=True)
        stamp.write_text(json.dumps(config), encoding="utf-8")
    t0 = time.perf_counter()
    if not ctx.archive.is_dir():
        ctx.console.print(f"[bold]1/5[/] building the synthetic archive ({ctx.pairs} pairs, seed {ctx.seed}) "
                          f"in {ctx.archive}")
        ctx.cache.mkdir(parents=True, exist_ok=True)
        bar, update = _progress(ctx.console, "synthesize")
        with bar if progress else _null():
            synthesize(ctx.archive, ctx.pairs, seed=ctx.seed, layout="v1", workers=workers,
                       progress=update if progress else None)
    else:
        ctx.console.print(f"[bold]1/5[/] reusing the synthetic archive in {ctx.archive}")
    ctx.timings["synthesize"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    if not (ctx.store_path / "benmm-store.json").is_file():
        ctx.console.print(f"[bold]2/5[/] encoding it into the store {ctx.store_path}")
        ctx.store = encode(ctx.archive, ctx.store_path, workers=workers, progress=progress)
    else:
        ctx.console.print(f"[bold]2/5[/] reusing the store {ctx.store_path}")
        ctx.store = Store.open(ctx.store_path)
    ctx.timings["encode"] = time.perf_counter() - t0


class _null:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def label_frequency_baseline(store: Any) -> dict[str, float]:
    """Test metrics of scoring every test pair with the training frequency of each class."""
    from benmm.data import BigEarthNetDataset
    from benmm.train.metrics import compute_metrics, label_frequency_scores

    train = BigEarthNetDataset(store, modality="s2", bands="s2-rgb", split="train").labels()
    test = BigEarthNetDataset(store, modality="s2", bands="s2-rgb", split="test").labels()
    return compute_metrics(label_frequency_scores(train, len(test)), test)


def train_and_evaluate(ctx: DemoContext, epochs: int | None, workers: int, progress: bool) -> None:
    from benmm.train.evaluate import evaluate
    from benmm.train.fit import quiet_lightning, train

    quiet_lightning()
    for i, (label, modality) in enumerate(DEMO_RUNS, 1):
        ctx.console.print(f"[bold]3/5[/] training {label} ({i}/{len(DEMO_RUNS)}): demo recipe, K-Branch CNN")
        overrides = [f"modality={modality}"] + ([f"epochs={epochs}"] if epochs else [])
        if modality == "s1":
            overrides.append('model.bands="all"')  # the recipe's bands name S2 bands
        run_dir = ctx.report / "runs" / modality
        if run_dir.exists():
            shutil.rmtree(run_dir)
        result = train(ctx.store, run_dir, recipe=DEMO_RECIPE, overrides=overrides, workers=workers,
                       progress=progress, export=False)
        if result.best is None:
            raise RuntimeError(f"training {label} wrote no checkpoint")
        ctx.console.print(f"[bold]4/5[/] evaluating {label} on the test split")
        ev = evaluate(result.best, ctx.store, split="test", out=ctx.report / modality, workers=workers,
                      progress=progress, batch_size=64)
        ctx.runs[label] = {"modality": modality, "checkpoint": str(result.best), "metrics": ev.metrics,
                           "train_seconds": result.seconds, "eval_seconds": ev.seconds,
                           "epochs": result.epochs, "train_samples": result.train_samples}


def extract_examples(cache: Path) -> Path:
    """The 6 real example pairs shipped with benmm, extracted once into the cache."""
    from benmm.resources import extract_examples as extract

    return extract(cache / "examples")


def predict_examples(ctx: DemoContext) -> None:
    from benmm.train.evaluate import predict

    root = extract_examples(ctx.cache)
    ctx.console.print("[bold]5/5[/] predicting the 6 real BigEarthNet example pairs with the S1+S2 model")
    ctx.examples = predict(ctx.checkpoint("S1+S2"), root)
    render_examples(root, ctx.report / "examples", {p.name: p for p in ctx.examples})


def render_examples(root: Path, out: Path, preds: dict[str, Any]) -> list[Path]:
    """RGB + SAR render of each example pair, titled with its true and top predicted labels."""
    from benmm import viz
    from benmm.archive import open_archive

    arc = open_archive(root)
    files = []
    for name in arc:
        pair = arc[name]
        pred = preds.get(pair.name)
        top = sorted(pred.probs.items(), key=lambda kv: -kv[1])[:3] if pred else []
        title = (f"{pair.name}\ntrue: {'; '.join(pair.labels19)}\n"
                 f"predicted: {'; '.join(f'{n} {v:.2f}' for n, v in top)}")
        files.append(viz.render_pair(pair.bands, out / f"{pair.name}.png", title))
    return files


def summary_table(ctx: DemoContext) -> Table:
    table = Table(title=f"benmm demo — test split of the synthetic archive "
                        f"({ctx.pairs} pairs, seed {ctx.seed})")
    for col in ("model", "modality", "macro AP", "micro AP", "F1 micro", "F1 macro", "train time"):
        table.add_column(col, justify="left" if col in ("model", "modality") else "right")
    b = ctx.baseline
    table.add_row("label frequency", "-", f"{b['ap_macro']:.3f}", f"{b['ap_micro']:.3f}",
                  f"{b['f1_micro']:.3f}", f"{b['f1_macro']:.3f}", "-")
    for label, run in ctx.runs.items():
        m = run["metrics"]
        table.add_row("K-Branch CNN", label, f"{m['ap_macro']:.3f}", f"{m['ap_micro']:.3f}",
                      f"{m['f1_micro']:.3f}", f"{m['f1_macro']:.3f}", f"{run['train_seconds']:.0f} s")
    return table


def examples_table(ctx: DemoContext) -> Table:
    table = Table(title="the 6 real example pairs (model trained on synthetic data: a pipeline check, "
                        "not an accuracy claim)")
    table.add_column("pair")
    table.add_column("true labels")
    table.add_column("top-3 predicted (probability)")
    for p in ctx.examples:
        top = sorted(p.probs.items(), key=lambda kv: -kv[1])[:3]
        table.add_row(p.name, "; ".join(p.true_labels or []), "; ".join(f"{n} ({v:.2f})" for n, v in top))
    return table


def write_summary(ctx: DemoContext) -> None:
    from benmm import viz

    rows = [{"name": "label freq.", **ctx.baseline}]
    rows += [{"name": k, **v["metrics"]} for k, v in ctx.runs.items()]
    viz.summary_bars(rows, ctx.report / "summary.png", title="demo: test metrics")
    payload = {"pairs": ctx.pairs, "seed": ctx.seed, "timings_s": ctx.timings, "baseline": ctx.baseline,
               "runs": ctx.runs, "retrieval": ctx.retrieval, "cross_modal": ctx.cross_modal,
               "examples": [{"name": p.name, "probs": p.probs, "predicted": p.labels, "true": p.true_labels}
                            for p in ctx.examples]}
    (ctx.report / "summary.json").write_text(json.dumps(payload, indent=2, default=str), encoding="utf-8")


def retrieval_step(ctx: DemoContext) -> dict[str, Any] | None:
    """Hook for the retrieval part of the demo (embed, index, search with ``ctx.checkpoint()``,
    ``ctx.store``, writing into ``ctx.report``). Returns a small dict of figures for the summary, or
    None when there is nothing to show."""
    from benmm.retrieval.demo import demo_step

    return demo_step(ctx)


def cross_modal_step(ctx: DemoContext, epochs: int | None = None, workers: int = 0,
                     progress: bool = False) -> dict[str, Any]:
    """The cross-modal S1 -> S2 row (:func:`benmm.retrieval.demo_crossmodal.cross_modal_row`), printed
    in the table by direction beside the uni-modal row of :func:`retrieval_step` and random."""
    from benmm.retrieval.demo_crossmodal import EPOCHS, cross_modal_row, direction_table

    row = cross_modal_row(ctx, epochs=epochs or EPOCHS, workers=workers, progress=progress)
    ctx.console.print(direction_table(ctx.retrieval, row))
    return row


def run_demo(out: str | Path | None = None, pairs: int = DEMO_PAIRS, seed: int = DEMO_SEED,
             epochs: int | None = None, workers: int | None = None, threads: int | None = None,
             console: Console | None = None, progress: bool = True, examples: bool = True,
             cross_modal: bool = True) -> DemoContext:
    """Run the demo (see the module docstring); returns what it made. ``out``: the report folder
    (default ``./benmm-demo``); ``cross_modal=False`` leaves out the cross-modal row."""
    import torch

    start = time.perf_counter()
    console = console or Console()
    cores = os.cpu_count() or 1
    workers = max(1, min(4, cores // 2)) if workers is None else workers
    # one loader worker + the rest for compute: oversubscribing a small CPU slows training several-fold
    torch.set_num_threads(threads or max(1, cores - workers))
    report = Path(out) if out is not None else Path.cwd() / "benmm-demo"
    report.mkdir(parents=True, exist_ok=True)
    cache = cache_root(report) / "demo"
    ctx = DemoContext(cache=cache, report=report, archive=cache / f"archive-{pairs}-{seed}",
                      store_path=cache / f"store-{pairs}-{seed}", console=console, pairs=pairs, seed=seed)
    build_archive(ctx, workers=max(1, cores), progress=progress)
    ctx.baseline = label_frequency_baseline(ctx.store)
    t0 = time.perf_counter()
    train_and_evaluate(ctx, epochs, workers, progress)
    ctx.timings["train+evaluate"] = time.perf_counter() - t0
    if examples:
        t0 = time.perf_counter()
        predict_examples(ctx)
        ctx.timings["examples"] = time.perf_counter() - t0
    if _retrieval_available():
        t0 = time.perf_counter()
        ctx.retrieval = retrieval_step(ctx)
        ctx.timings["retrieval"] = time.perf_counter() - t0
        if cross_modal:
            t0 = time.perf_counter()
            ctx.cross_modal = cross_modal_step(ctx, epochs, workers, progress)
            ctx.timings["cross-modal"] = time.perf_counter() - t0
    ctx.timings["total"] = time.perf_counter() - start
    write_summary(ctx)
    return ctx


def _retrieval_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("benmm.retrieval") is not None


def check_claims(ctx: DemoContext) -> list[str]:
    """The demo's promises, as messages for the ones that failed (empty when all hold)."""
    fails = []
    fused = ctx.runs.get("S1+S2", {}).get("metrics", {}).get("ap_macro", float("nan"))
    s1 = ctx.runs.get("S1", {}).get("metrics", {}).get("ap_macro", float("nan"))
    base = ctx.baseline.get("ap_macro", float("nan"))
    if not fused >= base + 0.2:
        fails.append(f"S1+S2 macro AP {fused:.3f} is not well above the label-frequency baseline {base:.3f}")
    if not fused > s1:
        fails.append(f"S1+S2 macro AP {fused:.3f} does not beat S1 alone {s1:.3f}")
    return fails
