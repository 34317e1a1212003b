"""The cross-modal row of ``benmm demo``: Sentinel-1 queries searched in a Sentinel-2 archive.

It trains the ``cross-modal`` recipe (an S1 and an S2 encoder into one code space) at the demo's small
K-Branch settings on the demo store, embeds the S1 side of the test split (the queries) and the S2 side
of the store (the archive = train split, as the uni-modal row of :mod:`benmm.retrieval.demo`), and scores
the search with :func:`benmm.retrieval.crossmodal.evaluate_queries` (what ``benmm evaluate-retrieval
INDEX --queries EMB`` runs), next to a random ranking of the same archive. Every step is a library call:
``train``, ``embed_store``, ``index_from_embeddings``, ``evaluate_queries``.

Supervision ``pairs`` (no labels: the S1/S2 partner of a pair is its positive, symmetric InfoNCE): on
the demo store (3,000 pairs, seed 0, 3 epochs, 64-bit codes) it reached S1->S2 mAP@20 0.871 against
0.835 for ``labels`` and 0.591 for a random ranking, at the same training time (about 80 s on the
loaded 2-core machine), so the demo shows the label-free one.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any, Final

from benmm.retrieval.evaluate import METRICS

SUPERVISION: Final = "pairs"
BITS: Final = 64
EPOCHS: Final = 3
#: the demo recipe's K-Branch CNN (width 8, 64-d, inputs pooled 4x), batch and optimiser: CPU minutes
OVERRIDES: Final = ('model.name="kbranch"', "model.width=8", "model.embed=64", "model.downsample=4",
                    "batch_size=32", "lr=3e-3", "warmup_steps=20", "data.augment=false", "patience=0",
                    "log_every_n_steps=10", "val_queries=500")
QUERY_SIDE: Final = "s1"
ARCHIVE_SIDE: Final = "s2"
#: the columns of the table by direction (the literature's mAP, P and NDCG)
TABLE_METRICS: Final = ("map", "precision", "ndcg")


def train_cross_modal(store: Any, out: Path, supervision: str = SUPERVISION, bits: int = BITS,
                      epochs: int = EPOCHS, workers: int = 0, progress: bool = False) -> Any:
    """The ``cross-modal`` recipe at the demo's settings; returns its
    :class:`~benmm.train.fit.TrainResult`."""
    from benmm.train.fit import train

    if out.exists():
        shutil.rmtree(out)
    sets = [*OVERRIDES, f"model.bits={bits}", f"supervision={supervision}", f"epochs={epochs}"]
    result = train(store, out, recipe="cross-modal", overrides=sets, workers=workers, progress=progress,
                   export=False)
    if result.best is None:
        raise RuntimeError(f"training the cross-modal model in {out} wrote no checkpoint")
    return result


def search_across(checkpoint: str | Path, store: Any, out: Path, k: int = 20,
                  ks: tuple[int, ...] = (1, 5, 10, 20), kind: str = "binary",
                  bits: int = BITS) -> dict[str, Any]:
    """Embed the S1 test queries and the S2 archive with ``checkpoint``, index the S2 train split and
    evaluate S1 -> S2 (:func:`~benmm.retrieval.crossmodal.evaluate_queries`, protocol ``default``)."""
    from benmm.retrieval.build import index_from_embeddings
    from benmm.retrieval.crossmodal import evaluate_queries
    from benmm.retrieval.embed import embed_store

    emb: dict[str, Any] = {}  # single process: embed_store returns the EmbeddingSet
    for side, split in ((QUERY_SIDE, "test"), (ARCHIVE_SIDE, "train")):
        folder = out / f"embeddings-{side}"
        shutil.rmtree(folder, ignore_errors=True)
        emb[side] = embed_store(checkpoint, store, folder, split=split, recommended=False, modality=side)
    archive = emb[ARCHIVE_SIDE]
    dim = int(archive.vectors.shape[1])
    ix = index_from_embeddings(archive, kind=kind, bits=min(bits, dim - dim % 8), archive_split="train")
    ix.save(out / f"index-{ARCHIVE_SIDE}", overwrite=True)
    return evaluate_queries(ix, emb[QUERY_SIDE], protocol="default", k=k, ks=ks,
                            names=(str(out / f"embeddings-{QUERY_SIDE}"), str(out / f"index-{ARCHIVE_SIDE}")))


def cross_modal_row(ctx: Any, k: int = 20, epochs: int = EPOCHS, supervision: str = SUPERVISION,
                    workers: int = 0, progress: bool = False) -> dict[str, Any]:
    """Train, embed, index and evaluate the demo's S1 -> S2 row (in ``<report>/retrieval/cross-modal``);
    returns its JSON-able figures at ``k`` next to random."""
    out = Path(ctx.report) / "retrieval" / "cross-modal"
    ctx.console.print(f"retrieval: training the cross-modal S1/S2 model (supervision {supervision}, "
                      f"{BITS}-bit codes, {epochs} epochs)")
    t0 = time.perf_counter()
    result = train_cross_modal(ctx.store, out / "run", supervision=supervision, epochs=epochs,
                               workers=workers, progress=progress)
    t_train = time.perf_counter() - t0
    with ctx.console.status("retrieval: embedding S1 queries and the S2 archive"):
        res = search_across(result.best, ctx.store, out, k=k)
    model, rand = res["model"], res["random"]
    kk = res["k"]
    return {
        "direction": res["direction"],
        "supervision": supervision,
        "epochs": result.epochs,
        "bits": res["bits"],
        "kind": res["kind"],
        "k": kk,
        "queries": model["queries"],
        "archive_size": res["archive_size"],
        "checkpoint": str(result.best),
        "train_seconds": t_train,
        "seconds": time.perf_counter() - t0,
        "metrics": {m: {"model": model[m][kk], "random": rand[m][kk]} for m in METRICS},
        "beats_random": bool(model["map"][kk] > rand["map"][kk] + 0.05
                             and model["ndcg"][kk] > rand["ndcg"][kk] + 0.05),
    }


def direction_table(uni: dict[str, Any] | None, cross: dict[str, Any]) -> Any:
    """Rows by search direction at K: the uni-modal row of :func:`benmm.retrieval.demo.demo_step`
    (when it ran), the cross-modal row, and the random ranking of each direction's archive (all the
    metrics are in the demo's ``summary.json``)."""
    from rich.table import Table

    from benmm.retrieval.crossmodal import direction
    from benmm.retrieval.evaluate import METRIC_TITLES

    k = cross["k"]
    table = Table(title=f"retrieval by direction @{k}: {cross['queries']} test queries vs "
                        f"{cross['archive_size']} train patches", title_justify="left", show_edge=False)
    table.add_column("direction")
    table.add_column("model")
    for m in TABLE_METRICS:
        table.add_column(METRIC_TITLES[m].replace("@K", f"@{k}"), justify="right")
    table.add_column("train time", justify="right")
    rows = []
    if uni and uni.get("k") == k:
        rows.append((direction("s1s2", "s1s2"), "K-Branch features, ITQ 64-bit", uni["metrics"], "-"))
    label = "pairs (no labels)" if cross["supervision"] == "pairs" else cross["supervision"]
    rows.append((cross["direction"], f"cross-modal, {label}, {cross['bits']}-bit", cross["metrics"],
                 f"{cross['train_seconds']:.0f} s"))
    for name, model, metrics, seconds in rows:
        table.add_row(name, model, *(f"{metrics[m]['model']:.3f}" for m in TABLE_METRICS), seconds)
    for name, _, metrics, _ in rows:
        table.add_row(name, "[dim]random ranking[/]", *(f"[dim]{metrics[m]['random']:.3f}[/]"
                                                         for m in TABLE_METRICS), "-")
    return table
