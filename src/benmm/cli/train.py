"""`benmm train | evaluate | predict | models | demo`: models, training, evaluation, the demo."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from benmm.errors import BenmmError

console = Console()

KEY_METRICS = ("ap_macro", "ap_micro", "f1_macro", "f1_micro", "f1_sample", "f2_micro", "precision_micro",
               "recall_micro", "hamming_loss", "one_error", "coverage", "ranking_loss", "lrap")


def _devices(value: str) -> Any:
    if value == "auto":
        return "auto"
    if "," in value:
        return [int(v) for v in value.split(",") if v.strip()]
    return int(value) if value.lstrip("-").isdigit() else value


def train_cmd(
    store: Path = typer.Argument(..., help="A benmm store (benmm encode) or a reBEN folder."),
    out: Path = typer.Option(Path("benmm-run"), "--out", "-o",
        help="Run folder: checkpoints, CSV logs, recipe."),
    recipe: str = typer.Option("reben", "--recipe", "-r",
        help="Recipe: paper-v1, reben, demo, or a .toml path."),
    model: str | None = typer.Option(None, "--model", "-m",
        help="Model name (see `benmm models`), or timm:<name>."),
    modality: str | None = typer.Option(None, "--modality", help="s1, s2 or s1s2."),
    fusion: str | None = typer.Option(None, "--fusion", help="S1+S2 fusion: early or late."),
    bands: str | None = typer.Option(None, "--bands",
        help="Band group or comma-separated bands (e.g. s2-10m20m)."),
    epochs: int | None = typer.Option(None, "--epochs", min=1, help="Maximum epochs."),
    batch_size: int | None = typer.Option(None, "--batch-size", "-b", min=1, help="Batch size per device."),
    lr: float | None = typer.Option(None, "--lr", help="Learning rate."),
    precision: str | None = typer.Option(None, "--precision",
                                         help="Lightning precision: 32-true, bf16-mixed, 16-mixed."),
    overrides: list[str] = typer.Option([], "--set", help="Any recipe setting, key=value (repeatable), "
                                        "e.g. --set optim.weight_decay=0.05 --set model.width=16."),
    weights: str | None = typer.Option(None, "--weights",
        help="Initial weights: a local timm or benmm file, or a reBEN/ConfigILM model folder (fine-tune)."),
    band_order: str | None = typer.Option(None, "--band-order",
        help="Release of a reBEN/ConfigILM model folder whose name does not tell it: v0.1.1 or v0.2.0."),
    resume: Path | None = typer.Option(None, "--resume",
        help="Resume from this checkpoint (last/interrupted)."),
    workers: int = typer.Option(2, "--workers", "-w", min=0, help="DataLoader worker processes."),
    devices: str = typer.Option("auto", "--devices", help="Lightning devices: auto, a count, or ids 0,1."),
    num_nodes: int = typer.Option(1, "--num-nodes", min=1, help="Lightning num_nodes (multi-node DDP)."),
    strategy: str = typer.Option("auto", "--strategy",
        help="Lightning strategy: auto, ddp, ddp_spawn, fsdp..."),
    accelerator: str = typer.Option("auto", "--accelerator", help="Lightning accelerator: auto, cpu, gpu."),
    seed: int = typer.Option(0, "--seed", help="Seed of weights init, data order and augmentation."),
    labels: int | None = typer.Option(None, "--labels", help="Label set: 19 (the paper's nomenclature) or "
                                      "43 (CLC Level-3, v1 stores only)."),
    order: str | None = typer.Option(None, "--order", help="Class order of the outputs: official or "
                                     "alphabetical (ConfigILM's)."),
    stats: str | None = typer.Option(None, "--stats", help="Normalisation statistics: v1, reben (the "
                                     "reBEN models'), or a FILE written by `benmm stats`."),
) -> None:
    """Train a classifier on STORE with a recipe; CLI options override the recipe's settings."""
    from benmm.train.fit import TrainInterrupted, quiet_lightning, train

    sets = list(overrides)
    for key, value in (("model.name", model), ("model.modality", modality), ("model.fusion", fusion),
                       ("trainer.epochs", epochs), ("data.batch_size", batch_size), ("optim.lr", lr),
                       ("trainer.precision", precision), ("data.labels", labels), ("data.order", order),
                       ("data.stats", stats)):
        if value is not None:
            sets.append(f"{key}={json.dumps(value)}")
    if labels is not None and labels not in (19, 43):
        raise BenmmError(f"--labels {labels}: the label sets are 19 and 43")
    if order is not None and order not in ("official", "alphabetical"):
        raise BenmmError(f"--order {order!r}: the class orders are official and alphabetical")
    from benmm.bands import NAMED_STATS

    if stats is not None and stats not in NAMED_STATS and not Path(stats).is_file():
        raise BenmmError(f"--stats {stats}: no such file (give v1, reben, or a file written by "
                         "`benmm stats`)")
    if bands is not None:
        parts = [b.strip() for b in bands.split(",") if b.strip()]
        if not parts:
            raise BenmmError("--bands is empty: name bands or a group (e.g. s2-10m20m), or leave it out "
                             "for every band of the modality")
        sets.append(f"model.bands={json.dumps(parts[0] if len(parts) == 1 else parts)}")
    from benmm.train.recipes import load_recipe

    for note in load_recipe(recipe, sets)["notes"]:  # checks the recipe before anything else, too
        console.print(f"[yellow]note:[/] {note}", highlight=False)
    quiet_lightning()
    try:
        result = train(store, out, recipe=recipe, overrides=sets, weights=weights, resume=resume,
                       workers=workers, devices=_devices(devices), num_nodes=num_nodes, strategy=strategy,
                       accelerator=accelerator, seed=seed, band_order=band_order)
    except TrainInterrupted as exc:
        console.print(f"[yellow]{exc}[/]")
        raise typer.Exit(130) from None
    table = Table(title=f"trained {result.epochs} epochs in {result.seconds:.0f} s "
                        f"({result.train_samples:,} training pairs)", title_justify="left")
    table.add_column("validation metric")
    table.add_column("value", justify="right")
    shown = [k for k in KEY_METRICS if k in result.val] or [k for k in result.val if k != "n_samples"]
    for key in shown:  # a retrieval recipe logs mAP@K etc. per direction instead
        table.add_row(key, f"{result.val[key]:.4f}")
    console.print(table)
    console.print(f"best checkpoint: {result.best}\nlast checkpoint: {result.last}\n"
                  f"weights + description: {result.export}\nlogs: {out / 'metrics.csv'}")


def evaluate_cmd(
    checkpoint: Path = typer.Argument(...,
        help="A benmm train checkpoint (.ckpt or model.safetensors), or a reBEN/ConfigILM model folder."),
    store: Path = typer.Argument(..., help="The store to evaluate on."),
    split: str = typer.Option("test", "--split", help="train, val (validation), test, or all."),
    out: Path | None = typer.Option(None, "--out", "-o",
                                    help="Report folder (default: <checkpoint folder>/eval-<split>)."),
    batch_size: int = typer.Option(64, "--batch-size", "-b", min=1, help="Batch size."),
    workers: int = typer.Option(2, "--workers", "-w", min=0, help="DataLoader worker processes."),
    threshold: float | None = typer.Option(None, "--threshold", min=0.0, max=1.0,
                                           help="Decision threshold in [0, 1] (default 0.5)."),
    as_json: bool = typer.Option(False, "--json", help="Print the metrics as JSON."),
    band_order: str | None = typer.Option(None, "--band-order",
        help="Release of a reBEN/ConfigILM model folder whose name does not tell it: v0.1.1 or v0.2.0."),
) -> None:
    """Evaluate CHECKPOINT on a split of STORE: table, metrics.json, per-class CSV and PNG plots."""
    from benmm.train.evaluate import evaluate
    from benmm.train.fit import quiet_lightning

    quiet_lightning()
    out = out or Path(checkpoint).resolve().parent / f"eval-{split}"
    res = evaluate(checkpoint, store, split=split, out=out, batch_size=batch_size, workers=workers,
                   threshold=threshold, progress=not as_json, band_order=band_order)
    if as_json:
        typer.echo(json.dumps(res.metrics, indent=2))
        return
    table = Table(title=f"{res.split}: {int(res.metrics['n_samples']):,} pairs", title_justify="left")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in res.metrics.items():
        if key != "n_samples":
            table.add_row(key, f"{value:.4f}")
    console.print(table)
    per = Table(title="per class", title_justify="left")
    for col in ("class", "support", "precision", "recall", "f1", "ap"):
        per.add_column(col, justify="left" if col == "class" else "right")
    for row in res.per_class:
        per.add_row(row["class"], str(row["support"]),
                    *(f"{row[k]:.3f}" for k in ("precision", "recall", "f1", "ap")))
    console.print(per)
    console.print(f"wrote {len(res.files)} files to {out}")


def predict_cmd(
    checkpoint: Path = typer.Argument(...,
        help="A benmm train checkpoint (.ckpt or model.safetensors), or a reBEN/ConfigILM model folder."),
    path: Path = typer.Argument(..., help="A store, a v1/reBEN archive, or one v1 patch folder."),
    out: Path | None = typer.Option(None, "--out", "-o",
        help="Write probabilities to this .csv or .json file."),
    threshold: float | None = typer.Option(None, "--threshold", min=0.0, max=1.0,
                                           help="Decision threshold in [0, 1] (default 0.5)."),
    batch_size: int = typer.Option(64, "--batch-size", "-b", min=1, help="Batch size."),
    top: int = typer.Option(3, "--top", min=1, help="Labels shown per pair in the table."),
    band_order: str | None = typer.Option(None, "--band-order",
        help="Release of a reBEN/ConfigILM model folder whose name does not tell it: v0.1.1 or v0.2.0."),
) -> None:
    """Label every pair under PATH with CHECKPOINT: per-class probabilities and predicted labels."""
    from benmm.train.evaluate import predict

    preds = predict(checkpoint, path, batch_size=batch_size, threshold=threshold, band_order=band_order)
    table = Table(title=f"{len(preds):,} pairs", title_justify="left")
    table.add_column("pair")
    table.add_column("predicted labels")
    table.add_column(f"top {top} (probability)")
    for p in preds[:50]:
        best = sorted(p.probs.items(), key=lambda kv: -kv[1])[:top]
        table.add_row(p.name, "; ".join(p.labels) or "-", "; ".join(f"{n} ({v:.2f})" for n, v in best))
    console.print(table)
    if len(preds) > 50:
        console.print(f"(first 50 of {len(preds):,} shown; use --out for all)")
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        if out.suffix == ".json":
            out.write_text(json.dumps([p.__dict__ for p in preds], indent=1), encoding="utf-8")
        else:
            names = list(preds[0].probs) if preds else []
            with open(out, "w", newline="", encoding="utf-8") as fh:
                w = csv.writer(fh)
                w.writerow(["name", "predicted", "true", *names])
                for p in preds:
                    w.writerow([p.name, ";".join(p.labels), ";".join(p.true_labels or []),
                                *(f"{p.probs[n]:.6f}" for n in names)])
        console.print(f"wrote {out}")


def models_cmd() -> None:
    """List the registered models and the training recipes."""
    from benmm.models import describe_models
    from benmm.train.recipes import list_recipes, load_recipe

    table = Table(title="models (any timm model also works as timm:<name>)", title_justify="left")
    table.add_column("name")
    table.add_column("description")
    for name, desc in describe_models().items():
        table.add_row(name, desc)
    console.print(table)
    rec = Table(title="recipes", title_justify="left")
    rec.add_column("name")
    rec.add_column("description")
    for name in list_recipes():
        rec.add_row(name, load_recipe(name)["description"])
    console.print(rec)


def demo_cmd(
    out: Path = typer.Option(Path("benmm-demo"), "--out", "-o", help="Report folder."),
    pairs: int = typer.Option(3000, "--pairs", min=200, help="Pairs in the synthetic archive."),
    epochs: int | None = typer.Option(None, "--epochs", min=1,
        help="Epochs per model (default: recipe's 5; the cross-modal model's 3)."),
    workers: int | None = typer.Option(None, "--workers", "-w", min=0, help="DataLoader workers."),
    serve: bool = typer.Option(False, "--serve",
        help="Afterwards, open the retrieval web page on the demo index (needs the `serve` extra)."),
    host: str = typer.Option("127.0.0.1", "--host", help="With --serve: address to listen on."),
    port: int = typer.Option(8000, "--port", min=1, max=65535, help="With --serve: port."),
) -> None:
    """The whole pipeline in minutes: synthetic archive -> store -> S1, S2, S1+S2 models -> test report
    -> retrieval index -> a cross-modal S1->S2 search; `--serve` then opens the retrieval web page on
    the index."""
    from benmm.demo import check_claims, examples_table, run_demo, summary_table

    ctx = run_demo(out=out, pairs=pairs, epochs=epochs, workers=workers, console=console)
    console.print(summary_table(ctx))
    if ctx.examples:
        console.print(examples_table(ctx))
    t = ctx.timings
    console.print(f"time: {t.get('total', 0):.0f} s (archive {t.get('synthesize', 0):.0f} s, store "
                  f"{t.get('encode', 0):.0f} s, train + evaluate {t.get('train+evaluate', 0):.0f} s"
                  + (f", cross-modal S1->S2 {t['cross-modal']:.0f} s" if "cross-modal" in t else "") + ")")
    for fail in check_claims(ctx):
        console.print(f"[yellow]note:[/] {fail}")
    console.print(f"report: {ctx.report} (summary.json, summary.png, s1/ s2/ s1s2/ with metrics and plots)")
    if serve:
        if not ctx.retrieval or not ctx.retrieval.get("index"):
            raise BenmmError("--serve needs the demo's retrieval index, which was not built (see above)")
        from benmm.retrieval.demo import serve_index

        serve_index(ctx.retrieval["index"], host=host, port=port, announce=lambda notes: console.print(
            f"serving the demo index at http://{host}:{port}/ (Ctrl-C to stop)"))


def export_cmd(
    run: Path = typer.Argument(..., help="A `benmm train` run folder (its best checkpoint) or a checkpoint."),
    fmt: str = typer.Option("safetensors", "--format", "-f",
        help="safetensors (benmm's, with everything a later use needs), timm (the backbone alone), or "
             "configilm (a reBEN/ConfigILM model folder)."),
    out: Path = typer.Option(..., "--out", "-o",
        help="The file to write (.safetensors), or the folder for configilm."),
) -> None:
    """Export a trained model: benmm's safetensors, or the timm backbone loadable by timm.create_model."""
    from benmm.train.export import export

    for path in export(run, fmt, out):
        console.print(f"wrote {path}")


def register(app: typer.Typer) -> None:
    app.command("train")(train_cmd)
    app.command("evaluate")(evaluate_cmd)
    app.command("predict")(predict_cmd)
    app.command("export")(export_cmd)
    app.command("models")(models_cmd)
    app.command("demo")(demo_cmd)
