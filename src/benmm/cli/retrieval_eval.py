"""`benmm evaluate-retrieval | retrieval-report`: retrieval metrics (uni- and cross-modal) and the
literature's table beside the reported figures."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from benmm.errors import RetrievalError

console = Console()


def _cutoffs(ks: str) -> list[int]:
    try:
        return [int(x) for x in ks.split(",") if x.strip()]
    except ValueError:
        raise RetrievalError(f"--ks must be comma-separated integers, got {ks!r}") from None


def _table(title: str, model: dict[str, Any], rand: dict[str, Any]) -> Table:
    from benmm.retrieval.evaluate import LABEL_METRICS, LABEL_TITLES, METRIC_TITLES, METRICS

    table = Table(title=title, title_justify="left", show_edge=False)
    table.add_column("metric")
    for kk in model["ks"]:
        table.add_column(f"@{kk}", justify="right")
    titles = METRIC_TITLES | LABEL_TITLES
    for m in (*METRICS, *LABEL_METRICS):
        table.add_row(titles[m], *(f"{model[m][kk]:.4f}" for kk in model["ks"]))
        table.add_row("[dim]  random[/]", *(f"[dim]{rand[m][kk]:.4f}[/]" for kk in model["ks"]))
    return table


def evaluate_retrieval(
    index_dir: Path = typer.Argument(..., metavar="INDEX", help="An index directory from `benmm index`."),
    queries: Path | None = typer.Option(
        None, "--queries", help="Query embeddings (`benmm embed`, e.g. the other modality); default: "
        "the index's own items."),
    protocol: str = typer.Option(
        "default", "--protocol", help="With --queries: default (test queries, train archive) or csmae "
        "(validation queries, test archive)."),
    query_split: str | None = typer.Option(
        None, "--query-split", help="Split of the queries (overrides the protocol; default test)."),
    include_own_pair: bool = typer.Option(
        False, "--include-own-pair", help="Keep the archive item with the query's own patch name "
        "(its pair) among the results; left out by default."),
    k: int = typer.Option(100, "-k", "--k", min=1, help="Results per query (the largest K)."),
    ks: str = typer.Option("1,5,10,20,50,100", "--ks", help="Comma-separated cut-offs K to report."),
    limit: int | None = typer.Option(None, "--limit", min=1, help="Use this many random queries (seeded)."),
    out: Path = typer.Option(Path("retrieval-report"), "--out", help="Folder for metrics.json and plots."),
    examples: int = typer.Option(5, "--examples", min=0, help="Example queries in the thumbnail grid."),
    seed: int = typer.Option(0, "--seed", help="Seed of the query sample and the random baseline."),
) -> None:
    """Retrieval metrics (mAP, P, NDCG, wmAP, ACG, R, F1 @K) of INDEX vs a random ranking, for its own
    items or for --queries of another modality or split; writes metrics.json and plots."""
    from benmm.retrieval.crossmodal import evaluate_queries, metrics_report
    from benmm.retrieval.evaluate import evaluate_index
    from benmm.retrieval.index import RetrievalIndex

    cutoffs = _cutoffs(ks)
    ix = RetrievalIndex.load(index_dir)
    t0 = time.perf_counter()
    with console.status("searching"):
        if queries is not None:
            from benmm.retrieval.embset import EmbeddingSet

            res = evaluate_queries(ix, EmbeddingSet.load(queries), protocol=protocol, query_split=query_split,
                                   k=k, ks=cutoffs, include_own_pair=include_own_pair, limit=limit, seed=seed,
                                   names=(str(queries), str(index_dir)))
        else:
            from benmm.retrieval.crossmodal import direction

            res = evaluate_index(ix, query_split=query_split or "test", k=k, ks=cutoffs, limit=limit,
                                 seed=seed)
            side = str(ix.source.get("modality") or (ix.source.get("model") or {}).get("modality") or "s1s2")
            res |= {"direction": direction(side, side), "query_modality": side, "archive_modality": side,
                    "protocol": "custom" if query_split else "default", "archive_split":
                    ix.manifest.get("archive_split"), "own_pair": "excluded", "bits": ix.bits,
                    "code_bits": ix.source.get("code_bits"), "dim": ix.dim}
    dt = time.perf_counter() - t0
    model, rand = res["model"], res["random"]
    console.print(_table(f"{res['direction']}: {model['queries']:,} {res['query_split']} queries vs "
                         f"{len(ix):,} archive patches ({ix.kind}, own pair {res['own_pair']})", model, rand))
    out.mkdir(parents=True, exist_ok=True)
    report = metrics_report(res, index_dir, queries or index_dir) | {"seconds": dt, "source": ix.source}
    (out / "metrics.json").write_text(json.dumps(report, indent=2, default=str))
    legacy = {"index": str(index_dir), "kind": ix.kind, "query_split": res["query_split"], "k": res["k"],
              "archive_size": len(ix), "seconds": dt, "model": model, "random": rand, "source": ix.source}
    (out / "retrieval.json").write_text(json.dumps(legacy, indent=2, default=str))
    files = [out / "metrics.json", *_plots(ix, res, out, examples)]
    console.print("[green]wrote[/] " + ", ".join(str(f) for f in files) + f"  ({dt:.1f} s)")


def _plots(ix: Any, res: dict[str, Any], out: Path, examples: int) -> list[Path]:
    from benmm.retrieval.plots import plot_examples, plot_pr_vs_k

    files = [plot_pr_vs_k({"model": res["model"], "random": res["random"]}, out / "pr_vs_k.png")]
    store_path = ix.source.get("store")
    if examples and store_path:
        from benmm.store import Store

        st = Store.open(store_path)
        pick = range(min(examples, len(res["names"])))
        qnames = [str(res["names"][i]) for i in pick]
        hits = [[(h["name"], h["distance"], h["labels"])
                 for h in ix.hits(res["distances"][i][:6], res["ranked"][i][:6])] for i in pick]
        qlabels = [list(x) for x in res["query_labels"][: len(qnames)]] if "query_labels" in res else [
            ix.labels_of(n) for n in qnames]
        mode = "s1" if res.get("archive_modality") == "s1" else "s2"
        files.append(plot_examples(qnames, qlabels, hits, st.read_pair, out / "examples.png", mode=mode))
    return files


def retrieval_report(
    paths: list[Path] = typer.Argument(..., metavar="RUN_OR_DIRS...", help="metrics.json files, or "
                                       "folders searched for them (runs, evaluate-retrieval reports)."),
    ks: str = typer.Option("5,10", "--ks", help="K of the columns (5: BEN-14K papers, 10: CSMAE)."),
    reported: bool = typer.Option(True, "--reported/--no-reported",
                                  help="Print the figures the papers report beside the measured rows."),
    as_json: bool = typer.Option(False, "--json", help="Print header and rows as JSON."),
) -> None:
    """The literature's table: S1->S1, S2->S2, S1S2->S1S2, S1->S2, S2->S1 x mAP/P/NDCG/F1 @K."""
    from benmm.retrieval.report import find_metrics, papers_without_figures, report_rows

    header, rows = report_rows(find_metrics(paths), _cutoffs(ks), reported=reported)
    if as_json:
        typer.echo(json.dumps({"header": header, "rows": rows}, indent=2))
        return
    table = Table(title="retrieval (measured rows: this store; reported rows: the papers, real archive)",
                  title_justify="left", show_edge=False)
    for i, col in enumerate(header):
        table.add_column(col, justify="left" if i < 4 else "right")
    for row in rows:
        table.add_row(*row, style="dim" if row[0].startswith("  random") else
                      "italic" if row[0].startswith("reported") else None)
    wide = Console(width=max(console.width, 200))  # 12 figure columns: never squeeze them into ellipses
    wide.print(table)
    if reported:
        for line in papers_without_figures():
            wide.print(f"[dim]no figures recorded: {line}[/]", highlight=False)


def register(app: typer.Typer) -> None:
    app.command("evaluate-retrieval")(evaluate_retrieval)
    app.command("retrieval-report")(retrieval_report)
