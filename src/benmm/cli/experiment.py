"""`benmm experiment GRID --out DIR [--dry-run] [--resume]`: a grid of train + evaluate runs."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from benmm.errors import BenmmError

console = Console()


def _inits(items: list[str]) -> dict[str, str]:
    out = {}
    for item in items:
        if "=" not in item:
            raise BenmmError(f"--init {item!r} is not NAME=PATH (e.g. --init imagenet=resnet50.safetensors)")
        name, path = item.split("=", 1)
        out[name.strip()] = path.strip()
    return out


def experiment_cmd(
    grid: str = typer.Argument(..., help="A grid .toml file, or a shipped grid: demo-pretraining, "
                               "demo-43-vs-19, paper-pretraining, paper-43-vs-19."),
    out: Path = typer.Option(..., "--out", "-o", help="Experiment folder: runs/, results, plots."),
    dry_run: bool = typer.Option(False, "--dry-run", help="List the runs and their cost; train nothing."),
    resume: bool = typer.Option(False, "--resume", help="Go on in an existing --out: finished runs are "
                                "skipped, failed ones run again."),
    store: str | None = typer.Option(None, "--store", help="The store to run on (overrides the grid's)."),
    init: list[str] = typer.Option([], "--init", help="NAME=PATH: the file of an initialisation of the "
                                   "grid's [init] (repeatable), e.g. imagenet=resnet50.safetensors."),
    workers: int | None = typer.Option(None, "--workers", "-w", min=0,
                                       help="DataLoader worker processes (default: the grid's, else 2)."),
    devices: str = typer.Option("auto", "--devices", help="Lightning devices per run: auto, a count, ids."),
    accelerator: str = typer.Option("auto", "--accelerator", help="Lightning accelerator: auto, cpu, gpu."),
) -> None:
    """Run a grid of training runs (models x modalities x label sets x initialisations x fractions x
    seeds), each an ordinary train + evaluate folder, and write one results table with plots."""
    from benmm.cli.train import _devices
    from benmm.train.experiment import load_grid, plan, run_experiment, summarize
    from benmm.train.experiment.runner import RunOutcome

    g = load_grid(grid, inits=_inits(init), check_files=not dry_run)
    if dry_run:
        store_path = Path(store) if store else (out / "store" if g.store == "synthetic" else
                                                 Path(g.store) if g.store else None)
        rows = plan(g, out, store_path)
        table = Table(title=f"{g.name}: {len(rows)} runs ({sum(r.finished for r in rows)} finished)",
                      title_justify="left")
        table.add_column("run", no_wrap=True, min_width=max(len(r.run.run_id) for r in rows))
        for col in ("epochs", "train pairs", "pair passes", "est. time", "state"):
            table.add_column(col, justify="left" if col == "state" else "right", overflow="fold")
        for r in rows:
            table.add_row(r.run.run_id, str(r.epochs), "?" if r.train_pairs is None else f"{r.train_pairs:,}",
                          "?" if r.pair_passes is None else f"{r.pair_passes:,}",
                          "?" if r.seconds is None else f"{r.seconds:.0f} s",
                          "done" if r.finished else "to run")
        console.print(table)
        passes = [r.pair_passes for r in rows if not r.finished]
        left = [r.seconds for r in rows if not r.finished]
        total = f"{sum(p for p in passes if p):,} pair passes" if all(p is not None for p in passes) else \
            "pair passes unknown (the store is not built yet)"
        est = ("" if not left else
               f", about {sum(s for s in left if s) / 60:.1f} min at the speed of this folder's finished runs"
               if all(s is not None for s in left) else
               "; time unknown until a run of this folder has finished (then --dry-run estimates the rest)")
        console.print(f"to run: {len(passes)} runs, {total}{est}")
        return

    def show(kind: str, o: RunOutcome, i: int, n: int) -> None:
        if kind == "start":
            console.print(f"[{i}/{n}] {o.run.run_id} ...", highlight=False)
        elif o.status == "skipped":
            console.print(f"[{i}/{n}] {o.run.run_id}: finished before, skipped", highlight=False)
        elif o.status == "failed":
            console.print(f"[{i}/{n}] [red]{o.run.run_id}: FAILED[/] ({o.error}); see {o.folder}/error.txt",
                          highlight=False)
        else:
            m = o.result["scores"][str(o.run.labels)]["metrics"]
            console.print(f"[{i}/{n}] {o.run.run_id}: macro AP {m['ap_macro']:.4f}, micro AP "
                          f"{m['ap_micro']:.4f} ({o.seconds:.0f} s)", highlight=False)

    if store is None and g.store == "synthetic" and not (out / "store" / "benmm-store.json").is_file():
        console.print(f"building a synthetic store of {g.synthetic_pairs} pairs in {out / 'store'} ...")
    outcomes = run_experiment(g, out, store=store, resume=resume,
                              workers=g.workers if workers is None else workers,
                              trainer_kwargs={"devices": _devices(devices), "accelerator": accelerator},
                              on_event=show)
    summary = summarize(g, out)
    console.print((out / "results.md").read_text(encoding="utf-8"), highlight=False, markup=False)
    failed = [o for o in outcomes if o.status == "failed"]
    done = sum(o.status == "done" for o in outcomes)
    skipped = sum(o.status == "skipped" for o in outcomes)
    console.print(f"{done} runs done, {skipped} skipped (finished before), {len(failed)} failed; wrote "
                  f"{', '.join(p.name for p in summary['files'])} to {out}", highlight=False)
    for o in failed:
        console.print(f"[red]failed:[/] {o.run.run_id}: {o.error}", highlight=False)
    if failed:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.command("experiment")(experiment_cmd)
