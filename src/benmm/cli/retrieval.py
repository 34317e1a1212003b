"""`benmm embed | index | search | evaluate-retrieval | serve`: content-based retrieval."""

from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from benmm.errors import ArchiveError, RetrievalError
from benmm.progress import progress_bar

console = Console()


def _progress() -> Progress:
    return progress_bar(console, transient=True)


def _devices(value: str) -> Any:
    """``--devices`` as ``benmm train`` spells it: auto, a count, or ids ``0,1``."""
    if "," in value:
        return [int(v) for v in value.split(",") if v.strip()]
    return int(value) if value.lstrip("-").isdigit() else value


def embed(
    model: str = typer.Argument(
        ...,
        help="A `benmm train` checkpoint (.ckpt / .safetensors), or 'band-stats' "
        "(training-free band statistics).",
    ),
    store: Path = typer.Argument(..., help="The benmm store (or reBEN folder) to embed."),
    out: Path = typer.Argument(
        ..., help="Output embeddings directory (resumed if it holds an unfinished run)."
    ),
    modality: str | None = typer.Option(
        None, "--modality", help="The side to embed: s1, s2 or s1s2 (a cross-modal model has all three; "
        "default: the model's own)."
    ),
    split: str | None = typer.Option(
        None, "--split", help="train, val/validation or test; default every split."
    ),
    all_patches: bool = typer.Option(
        False, "--all", help="Include snow / cloud / no-19-class patches (default: the recommended set)."
    ),
    batch_size: int = typer.Option(64, "--batch-size", min=1, help="Patches per batch."),
    workers: int = typer.Option(0, "--workers", min=0, help="DataLoader worker processes."),
    device: str = typer.Option("cpu", "--device", help="One torch device, e.g. cpu, cuda, cuda:1."),
    accelerator: str | None = typer.Option(
        None, "--accelerator", help="Lightning accelerator (cpu, gpu, auto); overrides --device."
    ),
    devices: str | None = typer.Option(
        None, "--devices", help="Lightning devices: a count, ids 0,1, or auto (one process per device)."
    ),
    num_nodes: int = typer.Option(1, "--num-nodes", min=1, help="Lightning num_nodes (multi-node)."),
    strategy: str = typer.Option("auto", "--strategy", help="Lightning strategy: auto, ddp, ddp_spawn..."),
    limit: int | None = typer.Option(None, "--limit", min=1, help="Embed only the first N patches (trials)."),
) -> None:
    """Embed one side of every patch of STORE with MODEL into OUT (embeddings.npy [+ codes.npy] +
    items.parquet + embeddings.json), through Lightning's predict loop; resumable."""
    from benmm.retrieval.embed import embed_store

    t0 = time.perf_counter()
    with _progress() as bar:
        task = bar.add_task("embedding", total=None)
        result = embed_store(
            model,
            store,
            out,
            split=split,
            batch_size=batch_size,
            num_workers=workers,
            device=device,
            recommended=not all_patches,
            limit=limit,
            on_progress=lambda done, total: bar.update(task, completed=done, total=total),
            modality=modality,
            accelerator=accelerator,
            devices=None if devices is None else _devices(devices),
            num_nodes=num_nodes,
            strategy=strategy,
        )
    dt = time.perf_counter() - t0
    if result is None:  # a rank other than the global zero: that one assembles and reports
        return
    n = len(result)
    codes = f", {result.info['code_bits']}-bit codes" if result.codes is not None else ""
    console.print(
        f"[green]embedded[/] {n:,} patches ({result.modality}) -> {out}  "
        f"({result.vectors.shape[1]}-d{codes}, "
        f"{dt:.1f} s, {n / max(dt, 1e-9):,.0f} patches/s)"
    )


def index(
    embeddings: Path = typer.Argument(..., help="An embeddings directory from `benmm embed`."),
    out: Path = typer.Argument(..., help="Output index directory."),
    kind: str = typer.Option(
        "binary",
        "--kind",
        help="binary (PCA+ITQ codes, exact Hamming), flat (exact cosine) or hnsw (approximate cosine).",
    ),
    bits: int = typer.Option(
        128, "--bits", help="Code length for --kind binary (multiple of 8, e.g. 64-256)."
    ),
    archive_split: str | None = typer.Option(
        "train",
        "--archive-split",
        help="Searchable archive = items of this split; the rest become query "
        "items (searchable by name). 'all' = every item.",
    ),
    hnsw_m: int = typer.Option(32, "--hnsw-m", min=4, help="HNSW graph degree."),
    ef_construction: int = typer.Option(100, "--ef-construction", min=8, help="HNSW build beam width."),
    ef_search: int = typer.Option(64, "--ef-search", min=1, help="HNSW search beam width (recall vs speed)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace OUT if it exists."),
) -> None:
    """Build a FAISS index (with names, labels and a manifest) from EMBEDDINGS into OUT."""
    from benmm.retrieval.build import index_from_embeddings

    t0 = time.perf_counter()
    split = None if archive_split in (None, "all") else archive_split
    with console.status(f"building {kind} index"):
        ix = index_from_embeddings(
            embeddings,
            kind=kind,
            bits=bits,
            archive_split=split,
            hnsw={"m": hnsw_m, "ef_construction": ef_construction, "ef_search": ef_search},
        )
        ix.save(out, overwrite=overwrite)
    extra = 0 if ix.extra_items is None else len(ix.extra_items)
    size = sum(p.stat().st_size for p in Path(out).iterdir())
    what = f"{ix.bits}-bit codes" if ix.bits else f"{ix.dim}-d vectors"
    console.print(
        f"[green]indexed[/] {len(ix):,} archive patches ({what}, {kind}) + {extra:,} query patches -> "
        f"{out}  ({size / 1e6:.1f} MB, {time.perf_counter() - t0:.1f} s)"
    )


def _hits_table(title: str, hits: list[dict[str, Any]], query_labels: list[str]) -> Table:
    table = Table(title=title, title_justify="left", show_edge=False)
    for col, just in (("#", "right"), ("patch", "left"), ("distance", "right"), ("labels", "left")):
        table.add_column(col, justify=just)  # type: ignore[arg-type]
    qset = set(query_labels)
    for h in hits:
        labs = ", ".join(f"[bold]{lab}[/]" if lab in qset else lab for lab in h["labels"])
        table.add_row(str(h["rank"]), h["name"], f"{h['distance']:.4g}", labs)
    return table


def search(
    index_dir: Path = typer.Argument(..., metavar="INDEX", help="An index directory from `benmm index`."),
    name: str | None = typer.Option(
        None, "--name", help="Query by a patch of the index (archive or query items)."
    ),
    patch: Path | None = typer.Option(
        None,
        "--patch",
        help="Query by a new patch: a v1 patch folder, a zipped one, or bands in a .npz / .safetensors file.",
    ),
    k: int = typer.Option(20, "-k", "--k", min=1, help="Number of results."),
    query_modality: str | None = typer.Option(
        None, "--query-modality", help="The query's side: s1, s2 or s1s2 (default: the index's own). Another "
        "side is embedded with the index's model (a cross-modal model: S1 query -> S2 index)."
    ),
    store: str | None = typer.Option(
        None, "--store", help="Store to read a --name query's other side from (default: the index's)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the results as JSON."),
) -> None:
    """Search INDEX by a patch name or a patch file; prints names, distances and labels."""
    from benmm.retrieval.index import RetrievalIndex
    from benmm.retrieval.query import QuerySides, index_side
    from benmm.retrieval.service.app import _open_embedder, _open_store

    if (name is None) == (patch is None):
        raise RetrievalError("give exactly one of --name PATCH or --patch PATH")
    ix = RetrievalIndex.load(index_dir)
    side = index_side(ix)
    own = query_modality is None or query_modality.strip().lower() == side
    embedder, note = (None, None) if own and name is not None else _open_embedder(
        ix.source.get("checkpoint"), ix.source, side)
    sides = QuerySides(ix, embedder, note)
    qside = sides.resolve(query_modality)
    if name is not None:
        st, st_note = (None, None) if own else _open_store(store or ix.source.get("store"))
        qside, dist, idx = sides.search_name(name, qside, k, st, st_note)
        qlabels = ix.labels_of(name)
        title = f"{name}  [{', '.join(qlabels)}]"
    else:
        from benmm.retrieval.service.upload import read_patch_file

        if embedder is None:
            raise RetrievalError(f"{index_dir}: cannot embed a new patch: {note}")
        assert patch is not None
        found = None
        if patch.is_dir() and any(patch.glob("*_labels_metadata.json")):  # a v1 patch folder in its tree:
            from benmm.archive.v1 import pair_of_patch_folder  # the partner is found as `predict` does

            with contextlib.suppress(ArchiveError):  # outside a v1 tree: the folder's own bands
                found = pair_of_patch_folder(patch).bands
        if found is None:
            found = read_patch_file(patch)
        qside, dist, idx = sides.search_bands(found, qside, k, str(patch))
        qlabels, title = [], str(patch)
    hits = ix.hits(dist[0], idx[0])
    if as_json:
        typer.echo(json.dumps({"query": title, "query_modality": qside, "archive_modality": side,
                               "results": hits}, indent=2))
        return
    direction = f"{qside.upper()} -> {side.upper()}: " if qside != side else ""
    console.print(_hits_table(direction + title, hits, qlabels))


def serve(
    index_dir: Path = typer.Argument(..., metavar="INDEX", help="An index directory from `benmm index`."),
    host: str = typer.Option("127.0.0.1", "--host", help="Interface to listen on."),
    port: int = typer.Option(8000, "--port", min=0, max=65535, help="TCP port."),
    max_upload_mb: float = typer.Option(8.0, "--max-upload-mb", min=0.01, help="Largest accepted upload."),
    search_threads: int = typer.Option(
        1, "--search-threads", min=1, help="FAISS threads per search (requests already run in parallel)."
    ),
    store: str | None = typer.Option(
        None, "--store", help="Store for thumbnails (default: the one the index was built from)."
    ),
    checkpoint: str | None = typer.Option(
        None, "--checkpoint", help="Checkpoint that embeds uploads (default: the index's own)."
    ),
) -> None:
    """Serve INDEX: the web page at http://HOST:PORT/ and the JSON API under /api."""
    from benmm.retrieval.service.app import serve as run

    def announce(notes: dict[str, str | None]) -> None:
        console.print(f"benmm retrieval on [bold]http://{host}:{port}/[/]  (Ctrl+C to stop)")
        for what, note in notes.items():
            if note:
                console.print(f"[yellow]warning:[/] {what} are off: {note}", highlight=False)

    run(
        index_dir,
        announce=announce,
        host=host,
        port=port,
        search_threads=search_threads,
        max_upload_bytes=int(max_upload_mb * 1024 * 1024),
        store=store or "auto",
        embedder=checkpoint or "auto",
    )


def register(app: typer.Typer) -> None:
    app.command("embed")(embed)
    app.command("index")(index)
    app.command("search")(search)
    app.command("serve")(serve)
