"""``benmm synth``: write a seeded synthetic archive in the real v1 or reBEN layout."""

from __future__ import annotations

import os
from pathlib import Path

import typer
from rich.console import Console

from benmm.progress import progress_bar

console = Console()


def synth(
    dst: Path = typer.Argument(..., help="Destination folder (created; must be new or empty, "
                                         "unless --overwrite)."),
    pairs: int = typer.Option(1000, "--pairs", "-n", help="Number of S1/S2 pairs to write (1..590,326)."),
    seed: int = typer.Option(0, "--seed", "-s", help="Random seed: the same seed writes the same bytes."),
    layout: str = typer.Option("v1", "--layout", "-l",
                               help="v1 = BigEarthNet v1.0 folders of GeoTIFFs + JSON; "
                                    "reben = reBEN LMDB + metadata.parquet; "
                                    "reben-release = reBEN as released: BigEarthNet-S2/, BigEarthNet-S1/, "
                                    "Reference_Maps/ GeoTIFFs + metadata."),
    workers: int = typer.Option(0, "--workers", "-w", help="Worker processes (0 = all cores)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace DST if it exists and is not empty."),
    pack: str = typer.Option("", "--pack", help="Pack the archive as the published tarballs, the folders "
                             "removed: v1 as BigEarthNet-S2-v1.0.tar.* and BigEarthNet-S1-v1.0.tar.*, "
                             "reben-release as BigEarthNet-S1.tar.*, BigEarthNet-S2.tar.*, "
                             "Reference_Maps.tar.* (metadata parquet files kept beside them); "
                             "tar, tar.gz, tar.zst or tar.bz2."),
) -> None:
    """Write a synthetic BigEarthNet-MM archive in the real on-disk format, with a learnable class signal."""
    from benmm.synth.archive import SynthError, synthesize
    from benmm.synth.pack import PACKS, pack_reben, pack_v1

    packers = {"v1": pack_v1, "reben-release": pack_reben}
    if pack and (pack not in PACKS or layout not in packers):
        raise SynthError(f"--pack {pack}: packs the v1 and reben-release layouts as {', '.join(PACKS)}"
                         + ("" if layout in packers else f" (not --layout {layout})"))

    with progress_bar(console, transient=True) as bar:
        task = bar.add_task(f"synth {layout} -> {dst}", total=pairs)

        def progress(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        summary = synthesize(dst, pairs=pairs, seed=seed, layout=layout,  # type: ignore[arg-type]
                             workers=workers or os.cpu_count() or 1, overwrite=overwrite, progress=progress)
    if pack:
        with console.status(f"packing {dst} as {pack}"):
            tarballs = packers[layout](dst, pack, remove=True)
        sizes = ", ".join(f"{p.name} ({p.stat().st_size / 1e6:,.1f} MB)" for p in tarballs)
        console.print(f"[green]packed[/] {sizes}")
    splits = ", ".join(f"{k} {v}" for k, v in sorted(summary.splits.items()))
    console.print(
        f"[green]wrote[/] {summary.pairs:,} pairs ({summary.layout}, seed {summary.seed}) to {summary.path} "
        f"in {summary.seconds:.1f} s ({summary.rate:,.0f} pairs/s, {summary.bytes / 1e6:,.1f} MB); "
        f"splits: {splits}; snow {summary.snow}, cloud/shadow {summary.cloud}, "
        f"no 19-class label {summary.no19}"
    )


def register(app: typer.Typer) -> None:
    app.command("synth")(synth)
