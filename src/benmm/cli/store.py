"""`benmm encode` (archive -> store) and `benmm verify` (recompute a store's content hash)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

console = Console()

#: how many skipped pairs the summary lists (all of them are in the report file)
SHOW_SKIPPED = 20


def _size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:,.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1000
    return f"{n} B"  # pragma: no cover


def encode(
    src: list[Path] = typer.Argument(..., help="The archive: a v1 root (S2 + S1 folders), a reBEN folder "
                                     "(BigEarthNet-V2-LMDB/ + metadata.parquet), a benmm store, or the two "
                                     "v1 tarballs (S2 and S1, any order; .tar, .tar.gz, .tar.zst, .tar.bz2), "
                                     "or reBEN's BigEarthNet-S2, BigEarthNet-S1 [and Reference_Maps] "
                                     "tarballs with --metadata; read once each and never extracted."),
    dst: Path = typer.Argument(..., help="The store directory to write (new or empty; or an interrupted "
                               "encode of the same SRC, which is resumed)."),
    workers: int = typer.Option(0, "--workers", "-w", min=0,
                                help="Worker processes; 0 = one more than the CPU cores (a worker "
                                "waiting on the disk leaves its core to another). Tarballs are streamed "
                                "by one process (decompressing, parsing and writing threads)."),
    split: list[str] = typer.Option([], "--split", "-s",
                                    help="Keep only this split: train, val (or validation), test. "
                                    "Repeat or separate with commas for several."),
    skip_invalid: bool = typer.Option(False, "--skip-invalid",
                                      help="Skip invalid pairs (each listed with its reason in the summary "
                                      "and in DST/encode-report.json) instead of stopping at the first."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
    metadata: list[Path] = typer.Option([], "--metadata", "-m",
                                        help="reBEN tarballs: their metadata.parquet (the snow/cloud file "
                                        "beside it is read too; or give it as a second --metadata)."),
) -> None:
    """Encode archive SRC into the training store DST: parallel, validated, resumable.

    Killed or interrupted, the same command resumes where it stopped; the finished store is identical
    (same content hash) to one written in a single run.
    """
    from benmm.ingest.pipeline import encode_summary
    from benmm.store import REPORT

    source = src[0] if len(src) == 1 else src
    s = encode_summary(source, dst, workers=workers or None, split=split or None, skip_invalid=skip_invalid,
                       progress=progress, metadata=metadata)
    if s.already_complete:
        console.print(f"[bold]{dst}[/] is already a finished store of {s.source} ({s.pairs:,} pairs); "
                      f"nothing to do. content hash {s.store.content_hash}", soft_wrap=True)
        return
    table = Table(title=f"encoded {s.source} -> {dst}", title_justify="left", show_header=False,
                  show_edge=False)
    table.add_column(style="bold")
    table.add_column(justify="right")
    data_file = s.store.lmdb_path / "data.mdb"
    rows = [
        ("pairs in store", f"{s.pairs:,}"),
        ("written now", f"{s.written:,}"),
        ("resumed (already written)", f"{s.resumed:,}"),
        ("skipped (invalid)", f"{len(s.skipped):,}"),
        ("time", f"{s.seconds:,.1f} s"),
        ("throughput", f"{s.pairs_per_s:,.0f} pairs/s"),
        ("values written", _size(s.bytes_written)),
        ("store size", _size(data_file.stat().st_size)),
        ("workers", str(s.workers)),
    ]
    for row in rows:
        table.add_row(*row)
    console.print(table)
    console.print(f"[bold]content hash[/] {s.store.content_hash}", soft_wrap=True)
    if s.skipped:
        console.print(f"[yellow]skipped {len(s.skipped):,} invalid pair(s)[/] "
                      f"(all listed in {dst / REPORT}):")
        for name, reason in list(sorted(s.skipped.items()))[:SHOW_SKIPPED]:
            console.print(f"  {name}: {reason}", highlight=False, markup=False)
        if len(s.skipped) > SHOW_SKIPPED:
            console.print(f"  ... and {len(s.skipped) - SHOW_SKIPPED:,} more")


def verify(
    store: Path = typer.Argument(..., help="A benmm store (or a reBEN folder)."),
) -> None:
    """Read every value of STORE, check its bands, and recompute its content hash.

    Exits with an error if a value is damaged or the hash differs from the manifest's.
    """
    from benmm.store import Store

    st = Store.open(store)
    with console.status(f"verifying {len(st):,} pairs"):
        digest = st.verify()
    what = "matches the manifest" if st.manifest is not None else "(no manifest to compare: reBEN folder)"
    console.print(f"[green]ok[/] {store}: {len(st):,} pairs, content hash {digest} {what}", soft_wrap=True)


def register(app: typer.Typer) -> None:
    app.command("encode")(encode)
    app.command("verify")(verify)
