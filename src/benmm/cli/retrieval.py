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


def _shard(text: str) -> tuple[int, int]:
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise RetrievalError(f"--shard must look like I/N (e.g. 0/4), got {text!r}") from None
    return i, n


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
    split: str | None = typer.Option(
        None, "--split", help="train, val/validation or test; default every split."
    ),
    all_patches: bool = typer.Option(
        False, "--all", help="Include snow / cloud / no-19-class patches (default: the recommended set)."
    ),
    batch_size: int = typer.Option(64, "--batch-size", min=1, help="Patches per batch."),
    workers: int = typer.Option(0, "--workers", min=0, help="DataLoader worker processes."),
    device: str = typer.Option("cpu", "--device", help="torch device, e.g. cpu, cuda, cuda:1."),
    shard: str = typer.Option(
        "0/1",
        "--shard",
        help="I/N: embed every N-th chunk starting at I (one process "
        "per GPU/node on a shared output); the last one assembles.",
    ),
    limit: int | None = typer.Option(None, "--limit", min=1, help="Embed only the first N patches (trials)."),
    modality: str | None = typer.Option(
        None, "--modality", help="s1, s2 or s1s2: the side to embed (a cross-modal model has all three); "
        "default the model's own."
    ),
) -> None:
    """Embed every patch of STORE with MODEL into OUT (embeddings.npy + items.parquet + embeddings.json)."""
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
            shard=_shard(shard),
            limit=limit,
            on_progress=lambda done, total: bar.update(task, completed=done, total=total),
            modality=modality,
        )
    dt = time.perf_counter() - t0
    if result is None:
        console.print(
            f"[yellow]shard {shard} done[/]; other shards still running — the last one assembles {out}"
        )
        return
    n = len(result)
    console.print(
        f"[green]embedded[/] {n:,} patches -> {out}  ({result.vectors.shape[1]}-d, "
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
    as_json: bool = typer.Option(False, "--json", help="Print the results as JSON."),
) -> None:
    """Search INDEX by a patch name or a patch file; prints names, distances and labels."""
    from benmm.retrieval.index import RetrievalIndex

    if (name is None) == (patch is None):
        raise RetrievalError("give exactly one of --name PATCH or --patch PATH")
    ix = RetrievalIndex.load(index_dir)
    if name is not None:
        dist, idx = ix.search_name(name, k)
        qlabels = ix.labels_of(name)
        title = f"{name}  [{', '.join(qlabels)}]"
    else:
        from benmm.retrieval.service.app import _open_embedder
        from benmm.retrieval.service.upload import check_bands, read_patch_file

        embedder, note = _open_embedder(ix.source.get("checkpoint"), ix.source)
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
        bands = check_bands(found, embedder.bands)
        dist, idx = ix.search(embedder(bands), k)
        qlabels, title = [], str(patch)
    hits = ix.hits(dist[0], idx[0])
    if as_json:
        typer.echo(json.dumps({"query": title, "results": hits}, indent=2))
        return
    console.print(_hits_table(title, hits, qlabels))


def evaluate_retrieval(
    index_dir: Path = typer.Argument(..., metavar="INDEX", help="An index directory from `benmm index`."),
    query_split: str = typer.Option(
        "test", "--query-split", help="Split of the queries (test, as in the paper)."
    ),
    k: int = typer.Option(100, "-k", "--k", min=1, help="Results per query (the largest K)."),
    ks: str = typer.Option("1,5,10,20,50,100", "--ks", help="Comma-separated cut-offs K to report."),
    limit: int | None = typer.Option(None, "--limit", min=1, help="Use this many random queries (seeded)."),
    out: Path = typer.Option(Path("retrieval-report"), "--out", help="Folder for retrieval.json and plots."),
    examples: int = typer.Option(5, "--examples", min=0, help="Example queries in the thumbnail grid."),
    seed: int = typer.Option(0, "--seed", help="Seed of the query sample and the random baseline."),
) -> None:
    """Retrieval metrics (P, R, mAP, weighted mAP, ACG, NDCG @K) of INDEX vs a random ranking; plots."""
    from benmm.retrieval.evaluate import METRIC_TITLES, METRICS, evaluate_index
    from benmm.retrieval.index import RetrievalIndex

    try:
        cutoffs = [int(x) for x in ks.split(",") if x.strip()]
    except ValueError:
        raise RetrievalError(f"--ks must be comma-separated integers, got {ks!r}") from None
    ix = RetrievalIndex.load(index_dir)
    t0 = time.perf_counter()
    with console.status("searching"):
        res = evaluate_index(ix, query_split=query_split, k=k, ks=cutoffs, limit=limit, seed=seed)
    dt = time.perf_counter() - t0
    model, rand = res["model"], res["random"]
    table = Table(
        title=f"{model['queries']:,} {res['query_split']} queries vs {len(ix):,} archive patches ({ix.kind})",
        title_justify="left",
        show_edge=False,
    )
    table.add_column("metric")
    for kk in model["ks"]:
        table.add_column(f"@{kk}", justify="right")
    for m in METRICS:
        table.add_row(METRIC_TITLES[m], *(f"{model[m][kk]:.4f}" for kk in model["ks"]))
        table.add_row("[dim]  random[/]", *(f"[dim]{rand[m][kk]:.4f}[/]" for kk in model["ks"]))
    console.print(table)
    out.mkdir(parents=True, exist_ok=True)
    report = {
        "index": str(index_dir),
        "kind": ix.kind,
        "query_split": res["query_split"],
        "k": res["k"],
        "archive_size": len(ix),
        "seconds": dt,
        "model": model,
        "random": rand,
        "source": ix.source,
    }
    (out / "retrieval.json").write_text(json.dumps(report, indent=2, default=str))
    from benmm.retrieval.plots import plot_examples, plot_pr_vs_k

    files = [plot_pr_vs_k({"model": model, "random": rand}, out / "pr_vs_k.png")]
    store_path = ix.source.get("store")
    if examples and store_path:
        from benmm.store import Store

        st = Store.open(store_path)
        pick = range(min(examples, len(res["names"])))
        qnames = [str(res["names"][i]) for i in pick]
        hits = [
            [
                (h["name"], h["distance"], h["labels"])
                for h in ix.hits(res["distances"][i][:6], res["ranked"][i][:6])
            ]
            for i in pick
        ]
        files.append(
            plot_examples(qnames, [ix.labels_of(n) for n in qnames], hits, st.read_pair, out / "examples.png")
        )
    console.print(
        f"[green]wrote[/] {out / 'retrieval.json'}, " + ", ".join(str(f) for f in files) + f"  ({dt:.1f} s)"
    )


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
    app.command("evaluate-retrieval")(evaluate_retrieval)
    app.command("serve")(serve)
