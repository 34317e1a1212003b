"""``benmm stats``: per-band mean/std of a store's split, for ``--stats FILE`` normalisation."""

from __future__ import annotations

import json
import time
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from benmm.atomic import atomic_write
from benmm.progress import progress_bar

console = Console()


def stats(
    store: Path = typer.Argument(..., help="A benmm store or a reBEN folder (LMDB + metadata.parquet)."),
    split: str = typer.Option("train", "--split", help="train, val (or validation), test, or 'all'."),
    out: Path = typer.Option(Path("stats.json"), "--out", "-o",
                             help="Where to write the statistics (JSON; use it as --stats FILE)."),
    name: str | None = typer.Option(None, "--name", help="Name recorded in the file (default: store+split)."),
    bands: str | None = typer.Option(None, "--bands",
                                     help="Comma-separated bands or groups (default: all 14)."),
    all_pairs: bool = typer.Option(False, "--all-pairs",
                                   help="Include the snow, cloud/shadow and no-19-class patches "
                                        "(default: the recommended set only)."),
    workers: int = typer.Option(0, "--workers", min=0, help="DataLoader worker processes."),
    batch_size: int = typer.Option(64, "--batch-size", min=1, help="Pairs per batch."),
) -> None:
    """Compute per-band mean and std over a split, streamed, at native resolution (S2 in DN, S1 in dB)."""
    from benmm.data import BigEarthNetDataset, DatasetError, compute_stats
    from benmm.store import Store

    st = Store.open(store)
    split_arg = None if split.lower() == "all" else split
    band_arg = None if bands is None else [b.strip() for b in bands.split(",") if b.strip()]
    ds = BigEarthNetDataset(st, modality="s1s2", bands=band_arg, split=split_arg,
                            recommended=not all_pairs)
    if len(ds) == 0:
        raise DatasetError(f"{store}: the {split} split has no pairs"
                           f"{'' if all_pairs else ' in the recommended set (try --all-pairs)'}; "
                           "nothing to compute statistics over")
    out.parent.mkdir(parents=True, exist_ok=True)  # an unwritable output fails before the work
    label = name or f"{Path(store).name}:{split}"
    source = (f"benmm stats over {len(ds)} pairs of {Path(store).resolve()} (split {split}, "
              f"{'all pairs' if all_pairs else 'recommended set'}), native resolution")
    start = time.perf_counter()
    with progress_bar(console) as bar:
        task = bar.add_task("stats", total=len(ds))
        result = compute_stats(ds, name=label, source=source, batch_size=batch_size, num_workers=workers,
                               progress=lambda n: bar.advance(task, n))
    elapsed = time.perf_counter() - start
    payload = result.to_json() | {"pairs": len(ds), "split": split, "bands": list(ds.bands)}
    atomic_write(out, json.dumps(payload, indent=1) + "\n")
    table = Table("band", "mean", "std", title=f"{label}: {len(ds)} pairs")
    for band in ds.bands:
        table.add_row(band, f"{result.mean[band]:.4f}", f"{result.std[band]:.4f}")
    console.print(table)
    rate = len(ds) / elapsed if elapsed > 0 else float("inf")
    console.print(f"wrote {out} ({len(ds)} pairs in {elapsed:.1f} s, {rate:,.0f} pairs/s); "
                  f"use it with --stats {out}")


def register(app: typer.Typer) -> None:
    app.command("stats")(stats)
