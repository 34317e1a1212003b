"""Queries of one side (or split) against an index of another: ``benmm evaluate-retrieval INDEX
--queries EMBEDDINGS``.

**Protocols** (query split, archive split):

* ``default`` — queries = test, archive = train (the BigEarthNet-MM retrieval papers, and
  ``benmm index --archive-split train``);
* ``csmae`` — queries = validation, archive = test (Hackstein et al., IEEE TGRS 2024, code
  ``jakhac/CSMAE`` ``retrieval.py``: ``query ... from val``, ``archive ... from test``; top K = 10,
  L2-normalised features).

A named protocol checks that the index's archive is the protocol's split; ``query_split=...`` instead
picks any query split and checks nothing about the archive (``protocol`` is then recorded as ``custom``).

**The query's own pair.** Under both protocols queries and archive are different splits, so no query
finds its own pair. When they share a split (e.g. S1 test queries vs an S2 test archive), the archive
item with the query's patch name (the same place, seen by the other sensor; or the very same entry in a
uni-modal run) is **left out** of the query's results and of its relevant-item count, as the uni-modal
evaluation always did: finding one's own pair says nothing about land-cover retrieval.
``include_own_pair=True`` keeps it (the pair-recovery view of the self-supervised cross-modal work).

Before searching, both sides are checked (one-line errors naming both): the same store, label set,
embedding model, dimension and code length; the index's and the queries' side must be sides the model
embeds; the query split must hold queries.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any, Final

import numpy as np

from benmm.archive.splits import normalize_split
from benmm.errors import RetrievalError
from benmm.retrieval.evaluate import DEFAULT_KS, random_ranking, retrieval_metrics

PROTOCOLS: Final = {"default": ("test", "train"), "csmae": ("val", "test")}
#: metrics.json key -> retrieval_metrics key. recall@K and f1@K are CSMAE's label-overlap recall and F1;
#: the archive-normalised recall of :mod:`benmm.retrieval.evaluate` is archive_recall@K.
FLAT_KEYS: Final = {
    "map": "map", "precision": "precision", "ndcg": "ndcg", "wmap": "wmap", "acg": "acg",
    "recall": "label_recall", "f1": "f1", "label_precision": "label_precision", "archive_recall": "recall",
}


def direction(query_side: str, archive_side: str) -> str:
    """``S1->S2`` style name of a search direction."""
    return f"{query_side.upper()}->{archive_side.upper()}"


def _side_of_index(index: Any) -> str:
    src = index.source
    return str(src.get("modality") or (src.get("model") or {}).get("modality") or "s1s2")


def check_compatible(index: Any, queries: Any, index_name: str, queries_name: str) -> None:
    """Raise a one-line :class:`RetrievalError` naming both sides when they cannot be compared."""
    src, info = index.source, queries.info
    both = f"queries {queries_name} vs index {index_name}"
    q_store, i_store = info.get("store"), src.get("store")
    q_hash, i_hash = info.get("store_hash"), src.get("store_hash")
    if (q_hash and i_hash and q_hash != i_hash) or (not (q_hash and i_hash) and q_store and i_store
                                                     and q_store != i_store):
        raise RetrievalError(f"{both}: embeddings of different stores ({q_store} vs {i_store}); "
                             "embed both sides from one store")
    q_labels = int(info.get("labels") or 19)
    if q_labels != len(index.label_names) or (src.get("order") and info.get("order") != src.get("order")):
        raise RetrievalError(f"{both}: different label sets ({q_labels} classes, {info.get('order')} order "
                             f"vs {len(index.label_names)} classes, {src.get('order')} order); "
                             "embed both sides with one label set")
    q_model = info.get("checkpoint") or info.get("embedder")
    i_model = src.get("checkpoint") or src.get("embedder")
    if q_model and i_model and q_model != i_model:
        raise RetrievalError(f"{both}: embedded by different models ({q_model} vs {i_model}); "
                             "embed both sides with one model")
    q_side, i_side = queries.modality, _side_of_index(index)
    sides = (info.get("model") or {}).get("modalities") or (src.get("model") or {}).get("modalities")
    for what, side in (("queries", q_side), ("index", i_side)):
        if sides and side not in sides:
            raise RetrievalError(f"{both}: the {what} are of modality {side}, which the model does not embed "
                                 f"(it embeds {', '.join(sides)})")
    q_dim = int(queries.vectors.shape[1])
    if q_dim != index.dim:
        raise RetrievalError(f"{both}: {q_side} queries are {q_dim}-d but the {i_side} index expects "
                             f"{index.dim}-d embeddings; use one model that embeds both sides into one space")
    q_bits, i_bits = info.get("code_bits"), src.get("code_bits")
    if q_bits is not None and i_bits is not None and int(q_bits) != int(i_bits):
        raise RetrievalError(f"{both}: {q_bits}-bit query codes vs {i_bits}-bit index codes; "
                             "use codes of one length")


def evaluate_queries(
    index: Any,
    queries: Any,
    protocol: str = "default",
    query_split: str | None = None,
    k: int = 100,
    ks: Iterable[int] = DEFAULT_KS,
    include_own_pair: bool = False,
    limit: int | None = None,
    seed: int = 0,
    batch: int = 4096,
    names: tuple[str, str] = ("QUERIES", "INDEX"),
) -> dict[str, Any]:
    """Metrics of ``queries`` (an :class:`~benmm.retrieval.embset.EmbeddingSet`) searched in ``index``
    (a :class:`~benmm.retrieval.index.RetrievalIndex`) and of a random ranking of the same archive.

    Returns ``{"model": metrics, "random": metrics, "direction", "protocol", "query_split",
    "archive_split", "own_pair", "names", "ranked", "distances", ...}`` (metrics as
    :func:`~benmm.retrieval.evaluate.retrieval_metrics` returns them).
    """
    from benmm.retrieval.index import multi_hot

    q_name, i_name = names
    check_compatible(index, queries, i_name, q_name)
    archive_split = index.manifest.get("archive_split")
    if query_split is None:
        if protocol not in PROTOCOLS:
            raise RetrievalError(f"unknown protocol {protocol!r}; valid: {', '.join(PROTOCOLS)}")
        split, want_archive = PROTOCOLS[protocol]
        have = None if archive_split is None else normalize_split(str(archive_split), strict=False)
        if have != want_archive:
            raise RetrievalError(
                f"protocol {protocol} searches a {want_archive} archive but index {i_name} holds "
                f"{have or 'every split'}: build it with `benmm index ... --archive-split {want_archive}`, "
                "or give --query-split"
            )
    else:
        split, protocol = normalize_split(query_split, strict=False), "custom"
    splits = queries.items["split"].astype(str).map(lambda s: normalize_split(s, strict=False))
    pick = np.flatnonzero((splits == split).to_numpy())
    if not len(pick):
        raise RetrievalError(f"queries {q_name} hold no {split} patches (they hold {sorted(set(splits))}); "
                             f"index {i_name} archive: {archive_split or 'all'}; embed the {split} split")
    if limit is not None and limit < len(pick):
        pick = np.sort(np.random.default_rng(seed).choice(pick, size=limit, replace=False))
    q_names = queries.items["name"].to_numpy(dtype=object)[pick]
    labels = multi_hot(queries.items["labels"].iloc[pick], index.label_names)
    vectors = index.encode(np.asarray(queries.vectors)[pick])
    pos = [None if include_own_pair else index.position(str(n)) for n in q_names]
    own = np.array([-1 if p is None else p for p in pos], dtype=np.int64)  # archive row of the own pair
    k = min(k, len(index) - (1 if (own >= 0).any() else 0))
    if k < 1:
        raise RetrievalError(f"index {i_name} holds no archive item to search besides the queries' own pairs")
    ks = sorted({x for x in ks if 1 <= x <= k} | {k})
    ranked = np.empty((len(q_names), k), dtype=np.int64)
    dists = np.empty((len(q_names), k), dtype=np.float32)
    for s in range(0, len(q_names), batch):
        mine = own[s : s + batch]
        extra = int((mine >= 0).any())
        d, i = index.search_encoded(vectors[s : s + batch], k + extra)
        if extra:
            keep = i != np.where(mine >= 0, mine, -2)[:, None]
            keep[keep.all(axis=1), -1] = False  # own pair not in the top k+1: drop the last result
            d, i = d[keep].reshape(len(d), k), i[keep].reshape(len(i), k)
        ranked[s : s + batch], dists[s : s + batch] = i, d
    rand = random_ranking(len(q_names), len(index), k + 1, seed)
    rand = (np.stack([row[row != p][:k] for row, p in zip(rand, own, strict=True)]) if len(rand)
            else rand[:, :k])
    return {
        "direction": direction(queries.modality, _side_of_index(index)),
        "query_modality": queries.modality,
        "archive_modality": _side_of_index(index),
        "protocol": protocol,
        "query_split": split,
        "archive_split": archive_split,
        "own_pair": "included" if include_own_pair else "excluded",
        "archive_size": len(index),
        "kind": index.kind,
        "bits": index.bits,
        "code_bits": queries.info.get("code_bits"),
        "dim": index.dim,
        "k": k,
        "model": retrieval_metrics(labels, index.labels, ranked, ks, exclude=own),
        "random": retrieval_metrics(labels, index.labels, rand, ks, exclude=own),
        "names": q_names,
        "query_labels": [list(x) for x in queries.items["labels"].iloc[pick]],
        "ranked": ranked,
        "distances": dists,
    }


def flat_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    """``{"map@10": ..., "precision@10": ..., "recall@10": ..., "f1@10": ...}`` from nested metrics."""
    return {f"{flat}@{k}": float(metrics[key][k]) for flat, key in FLAT_KEYS.items() for k in metrics["ks"]}


def metrics_report(res: dict[str, Any], index: str | Path, queries: str | Path) -> dict[str, Any]:
    """The JSON-able ``metrics.json``: flat model metrics, the same under ``random``, and the setting."""
    meta = {key: res[key] for key in ("direction", "query_modality", "archive_modality", "protocol",
                                      "query_split", "archive_split", "own_pair", "archive_size", "kind",
                                      "bits", "code_bits", "dim", "k")}
    return {
        **flat_metrics(res["model"]),
        "random": flat_metrics(res["random"]),
        **meta,
        "ks": res["model"]["ks"],
        "queries": res["model"]["queries"],
        "skipped": res["model"]["skipped"],
        "index": str(index),
        "query_embeddings": str(queries),
        "definitions": "map/precision/ndcg/wmap/acg: benmm.retrieval.evaluate (relevant = shares a label); "
                       "recall/f1/label_precision: label overlap as CSMAE (jakhac/CSMAE retrieval.py); "
                       "archive_recall: relevant retrieved / relevant in the archive",
    }
