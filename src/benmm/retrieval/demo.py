"""Retrieval's part of ``benmm demo``: index the demo model's embeddings, score them against chance.

``run(checkpoint, store, out)`` embeds every patch of the demo store with the trained S1+S2 model, builds
a binary-code index (archive = train, queries = test, as in the BigEarthNet-MM paper), and prints the
retrieval metrics next to a random ranking of the same archive. The index directory it returns is what
``benmm demo --serve`` (or ``benmm serve``) opens.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from benmm.retrieval.evaluate import METRIC_TITLES, METRICS, evaluate_index


def run(
    checkpoint: str | Path,
    store: Any,
    out: str | Path,
    kind: str = "binary",
    bits: int = 64,
    k: int = 20,
    console: Console | None = None,
    device: str = "cpu",
) -> dict[str, Any]:
    """Embed ``store`` with ``checkpoint``, index it under ``out``, print model vs random metrics.

    Returns ``{"index": path, "model": metrics, "random": metrics, "k": k}``.
    """
    from benmm.retrieval.build import index_from_embeddings
    from benmm.retrieval.embed import EmbeddingSet, embed_store

    console = console or Console()
    out = Path(out)
    emb_dir, index_dir = out / "embeddings", out / "index"
    if (emb_dir / "embeddings.json").is_file() and EmbeddingSet.load(emb_dir).info.get("checkpoint") == str(
        Path(checkpoint).resolve()
    ):
        emb = EmbeddingSet.load(emb_dir)  # a finished run of the same model: reuse it
    else:
        import shutil

        shutil.rmtree(emb_dir, ignore_errors=True)
        with console.status("retrieval: embedding the demo store"):
            emb = embed_store(checkpoint, store, emb_dir, recommended=False, device=device)  # type: ignore[assignment]
    dim = int(emb.vectors.shape[1])
    ix = index_from_embeddings(emb_dir, kind=kind, bits=min(bits, dim - dim % 8), archive_split="train")
    ix.save(index_dir, overwrite=True)
    res = evaluate_index(ix, query_split="test", k=min(k, len(ix)), ks=(1, 5, 10, k))
    model, rand = res["model"], res["random"]
    table = Table(
        title=f"retrieval: {model['queries']} test queries vs {len(ix)} train patches "
        f"({ix.kind}{f', {ix.bits}-bit codes' if ix.bits else ''})",
        title_justify="left",
        show_edge=False,
    )
    table.add_column("metric")
    for kk in model["ks"]:
        table.add_column(f"@{kk} model", justify="right")
        table.add_column(f"@{kk} random", justify="right", style="dim")
    for m in METRICS:
        cells = []
        for kk in model["ks"]:
            cells += [f"{model[m][kk]:.3f}", f"{rand[m][kk]:.3f}"]
        table.add_row(METRIC_TITLES[m], *cells)
    console.print(table)
    return {"index": index_dir, "model": model, "random": rand, "k": res["k"]}


def demo_step(ctx: Any) -> dict[str, Any]:
    """``benmm.demo.retrieval_step``: index the demo's S1+S2 model, print and return the figures.

    The returned dict (JSON-able) goes into the demo summary; ``index`` is the folder that
    ``benmm demo --serve`` opens with :func:`serve_index`.
    """
    res = run(ctx.checkpoint("S1+S2"), ctx.store, Path(ctx.report) / "retrieval", console=ctx.console)
    k = res["k"]
    model, rand = res["model"], res["random"]
    figures = {m: {"model": model[m][k], "random": rand[m][k]} for m in METRICS}
    beats = model["map"][k] > rand["map"][k] + 0.05 and model["ndcg"][k] > rand["ndcg"][k] + 0.05
    if not beats:
        ctx.console.print(f"[yellow]retrieval: the model does not clearly beat a random ranking at K={k}[/]")
    return {
        "index": str(res["index"]),
        "k": k,
        "queries": model["queries"],
        "metrics": figures,
        "beats_random": beats,
    }


def serve_index(index: str | Path, host: str = "127.0.0.1", port: int = 8000,
                announce: Any = None) -> None:
    """Open the retrieval service on ``index`` (what ``benmm demo --serve`` calls; blocks). The banner
    (or ``announce(notes)``) comes once the index is loaded and the port is free."""
    from benmm.retrieval.service.app import serve

    def banner(notes: dict[str, str | None]) -> None:
        Console().print(f"benmm retrieval on [bold]http://{host}:{port}/[/]  (Ctrl+C to stop)")

    serve(index, host=host, port=port, announce=announce or banner)
