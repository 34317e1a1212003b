"""`benmm info` and `benmm check`: what an archive or store holds, and every problem in it."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from benmm.progress import progress_bar

console = Console()


def _progress() -> Progress:
    return progress_bar(console, transient=True)


def _table(title: str, counts: dict[str, int], total: int | None = None, column: str = "name") -> Table:
    table = Table(title=title, title_justify="left", show_edge=False)
    table.add_column(column)
    table.add_column("pairs", justify="right")
    if total:
        table.add_column("%", justify="right")
    for key, value in counts.items():
        row = [key, f"{value:,}"]
        if total:
            row.append(f"{100 * value / total:.1f}")
        table.add_row(*row)
    return table


def info(
    path: Path = typer.Argument(..., help="A v1 archive root, a reBEN folder or a benmm store."),
    labels: bool = typer.Option(True, "--labels/--no-labels",
                                help="Count labels, splits and countries (v1: reads every S2 JSON)."),
    check: int = typer.Option(20, "--check", min=0,
                              help="Validate this many pairs, spread over the archive."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
) -> None:
    """What archive or store PATH is: pair count, splits, countries, label histograms, problems."""
    from benmm.archive import open_archive
    from benmm.archive.report import pairs_frame, summarize

    arc = open_archive(path)
    frame = None
    if labels and as_json:
        frame = pairs_frame(arc)
    elif labels:
        with _progress() as bar:
            task = bar.add_task("reading labels", total=len(arc))
            frame = pairs_frame(arc, progress=lambda n: bar.advance(task, n))
    summary = summarize(arc, frame, quick_check=check)
    _add_extent(arc, summary)
    if as_json:
        typer.echo(json.dumps(summary, indent=2))
        return
    _print_summary(summary)


def _add_extent(arc: Any, summary: dict[str, Any]) -> None:
    """A store's lon/lat extent per country (``extent``), from its GeoParquet footprints."""
    files = getattr(arc, "metadata_files", None)
    if getattr(arc, "kind", None) == "reben" and getattr(arc, "backend", None) == "lmdb":
        from benmm.archive.footprint import REBEN_NO_FOOTPRINT

        summary["no_footprints"] = REBEN_NO_FOOTPRINT
    if not files:
        return
    from benmm.store.geoparquet import extent_by_country

    summary["extent"] = extent_by_country(files, arc.metadata["country"].tolist())
    note = ((getattr(arc, "manifest", None) or {}).get("footprints") or {})
    if not any(summary["extent"].values()):
        summary["no_footprints"] = note.get("why_none") or "the metadata has no footprint column"


def _print_extent(s: dict[str, Any]) -> None:
    if "no_footprints" in s:
        console.print(f"extent: unknown (no footprints: {s['no_footprints']})", highlight=False)
        return
    table = Table(title="extent (WGS84 degrees)", title_justify="left")
    for col in ("country", "lon min", "lat min", "lon max", "lat max"):
        table.add_column(col, justify="left" if col == "country" else "right")
    for country, box in s["extent"].items():
        table.add_row(country, *(f"{v:.4f}" for v in box) if box else ("-",) * 4)
    console.print(table)


def _print_summary(s: dict[str, Any]) -> None:
    console.print(f"[bold]{s['path']}[/]: {s['description']}")
    console.print(f"pairs: [bold]{s['pairs']:,}[/]")
    if "reference_maps" in s:
        console.print(f"reference maps: {'yes' if s['reference_maps'] else 'none'}")
    if "pairing" in s:
        how = ", ".join(f"{v:,} by {k}" for k, v in s["pairing"].items() if v)
        console.print(f"S2: {s['s2_root']}\nS1: {s['s1_root']}\npaired: {how or 'none'}")
    total = s["pairs"]
    for key, column in (("splits", "split"), ("countries", "country"), ("seasons", "season")):
        if key in s:
            console.print(_table(key, s[key], total, column))
    if "extent" in s or "no_footprints" in s:
        _print_extent(s)
    if "excluded" in s:
        ex = s["excluded"]
        console.print(f"flagged: {ex['seasonal snow']:,} seasonal snow, {ex['cloud or shadow']:,} cloud or "
                      f"shadow, {s['no_19_class_label']:,} without a 19-class label")
    if "labels19" in s:
        console.print(_table("labels (19 classes)", s["labels19"], total, "label"))
    if "labels43" in s:
        console.print(_table("labels (43 classes)", s["labels43"], total, "label"))
    problems = s["problems"]
    head = f"quick check of {s['checked_pairs']} pair(s) and the folder structure: "
    if not problems:
        console.print(head + "[green]no problems found[/]")
        return
    console.print(head + f"[red]{len(problems)} problem(s)[/] (run `benmm check` for all)")
    for p in problems[:20]:
        console.print(f"  {p['path']}: {p['reason']}", highlight=False, markup=False)


def check(
    path: Path = typer.Argument(..., help="A v1 archive root, a reBEN folder or a benmm store."),
    report: Path | None = typer.Option(None, "--report", "-r",
                                       help="Write every problem here: JSON lines if it ends in "
                                            ".jsonl/.json, CSV (pair,path,reason) otherwise."),
    workers: int = typer.Option(min(8, os.cpu_count() or 1), "--workers", "-w", min=1,
                                help="Worker processes."),
) -> None:
    """Validate every pair of PATH: bands present with the right shape and dtype, JSON present and
    well-formed, labels known, S1 partner present and pointing back.

    Exit codes: 0 = no problem found; 1 = problems found (listed, and written to --report);
    2 = usage error or PATH is not an archive.
    """
    from benmm.archive import open_archive
    from benmm.archive.report import archive_problems, check_pairs, write_report

    start = time.perf_counter()
    arc = open_archive(path)
    problems = archive_problems(arc)
    n_archive = len(problems)
    bad_pairs = 0
    with _progress() as bar:
        task = bar.add_task("checking pairs", total=len(arc))
        for _name, found in check_pairs(arc, workers=workers):
            if found:
                bad_pairs += 1
                problems += found
            bar.advance(task)
    elapsed = time.perf_counter() - start
    for p in problems[:50]:
        console.print(f"[red]✗[/] {p.path}: {p.reason}", highlight=False)
    if len(problems) > 50:
        console.print(f"... and {len(problems) - 50} more")
    if report is not None:
        n = write_report(problems, report)
        console.print(f"report: {n} problem(s) written to {report}")
    rate = len(arc) / elapsed if elapsed > 0 else 0.0
    summary = (f"{len(arc):,} pairs checked in {elapsed:.1f} s ({rate:,.0f} pairs/s): "
               f"{bad_pairs:,} pair(s) with problems, {n_archive:,} problem(s) of the archive itself "
               f"(folders without a partner, duplicates, stray folders), {len(problems):,} problem(s) in all")
    if problems:
        console.print(f"[red]{summary}[/]")
        raise typer.Exit(1)
    console.print(f"[green]{summary}[/]")


def register(app: typer.Typer) -> None:
    app.command("info")(info)
    app.command("check")(check)
