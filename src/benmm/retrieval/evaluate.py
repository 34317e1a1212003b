"""Multi-label retrieval metrics: P@K, R@K, mAP@K, weighted mAP@K, ACG@K, NDCG@K.

Definitions (query ``q``, ranked results ``r_1 .. r_K``, ``s_i`` = number of labels that ``q`` and ``r_i``
share, ``rel_i = [s_i >= 1]`` — a result is relevant when it shares at least one label):

* ``P@K   = (1/K) sum_i rel_i``
* ``R@K   = (1/R_q) sum_i rel_i`` with ``R_q`` the number of relevant items in the whole archive
* ``AP@K  = (1/N_K) sum_i rel_i * P@i`` with ``N_K = sum_{i<=K} rel_i`` (0 when ``N_K = 0``); mAP@K is
  its mean.
  Normalising by the relevant items retrieved in the top K is the convention of the BigEarthNet-MM and
  deep-hashing retrieval literature.
* ``WAP@K = (1/N_K) sum_i rel_i * ACG@i`` (weighted AP, Zhao et al. 2015); weighted mAP@K is its mean
* ``ACG@K = (1/K) sum_i s_i`` (average cumulative gain)
* ``NDCG@K = DCG@K / IDCG@K``, ``DCG@K = sum_i (2^{s_i} - 1) / log2(1 + i)``; the ideal ranking is the best
  possible top K of the *whole archive* (computed exactly from the archive's label sets).

Missing results (index ``-1``, when the archive holds fewer than K items) count as irrelevant. Queries
with no relevant item anywhere in the archive (e.g. patches without a 19-class label) have undefined
recall and AP: they are left out of every mean and counted in ``skipped``.

Label-overlap precision, recall and F1 as CSMAE computes them (Hackstein et al., IEEE TGRS 2024; code
``jakhac/CSMAE``, ``retrieval.py`` at commit 4f4e455: per retrieved item ``prec = |L_q & L_r| / |L_r|``,
``rec = |L_q & L_r| / |L_q|``; each averaged over the K results, then over the queries; F1 is the
harmonic mean of those two means, not the mean of per-item F1s):

* ``LP@K = (1/K) sum_i s_i / |L_{r_i}|`` (0 for a missing result or one without labels)
* ``LR@K = (1/K) sum_i s_i / |L_q|``
* ``F1@K = 2 * mean(LP@K) * mean(LR@K) / (mean(LP@K) + mean(LR@K))``

These metrics are not in torchmetrics' retrieval module in this form (it has no ACG/weighted AP, and its
NDCG uses the retrieved list, not the archive, as the ideal), hence the small vectorised numpy code here;
the tests check it against hand-computed cases and a per-query reference loop.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Final

import numpy as np

from benmm.archive.splits import normalize_split
from benmm.errors import RetrievalError

METRICS: Final = ("precision", "recall", "map", "wmap", "acg", "ndcg")
METRIC_TITLES: Final = {
    "precision": "P@K",
    "recall": "R@K",
    "map": "mAP@K",
    "wmap": "wmAP@K",
    "acg": "ACG@K",
    "ndcg": "NDCG@K",
}
#: label-overlap metrics of CSMAE (module docstring), returned beside METRICS
LABEL_METRICS: Final = ("label_precision", "label_recall", "f1")
LABEL_TITLES: Final = {"label_precision": "LP@K", "label_recall": "LR@K", "f1": "F1@K"}
DEFAULT_KS: Final = (1, 5, 10, 20, 50, 100)
_CHUNK: Final = 2048


def _as_multi_hot(labels: np.ndarray, what: str) -> np.ndarray:
    arr = np.asarray(labels)
    if arr.ndim != 2:
        raise RetrievalError(f"{what} must be a 2-D multi-hot array [items, classes], got shape {arr.shape}")
    return (arr > 0).astype(np.float32)


def _archive_profile(archive: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unique label sets of the archive and how often each occurs (few thousand at archive scale)."""
    unique, counts = np.unique(archive.astype(np.uint8), axis=0, return_counts=True)
    return unique.astype(np.float32), counts.astype(np.float64)


def _discount_prefix(n: int) -> np.ndarray:
    """``D[n] = sum_{i=1..n} 1 / log2(1 + i)``, with ``D[0] = 0``."""
    return np.concatenate([[0.0], np.cumsum(1.0 / np.log2(np.arange(2, n + 2)))])


def retrieval_metrics(
    query_labels: np.ndarray,
    archive_labels: np.ndarray,
    ranked: np.ndarray,
    ks: Iterable[int] = DEFAULT_KS,
    exclude: np.ndarray | None = None,
) -> dict[str, object]:
    """Mean retrieval metrics at every K in ``ks``.

    Args:
        query_labels: multi-hot ``[Q, C]`` labels of the queries.
        archive_labels: multi-hot ``[N, C]`` labels of the archive (the searched set).
        ranked: ``[Q, Kmax]`` archive indices of each query's results, best first; ``-1`` = no result.
        ks: cut-offs, each ``1 <= K <= Kmax``.
        exclude: ``[Q]`` archive index of each query's own entry (``-1`` = none) when queries come from
            the archive: that entry is not counted as a relevant archive item (recall, ideal DCG).

    Returns:
        ``{"ks": [...], "queries": n_used, "skipped": n_without_relevant, "precision": {K: value}, ...}``
        for each metric in :data:`METRICS`.
    """
    queries = _as_multi_hot(query_labels, "query labels")
    archive = _as_multi_hot(archive_labels, "archive labels")
    ranked = np.asarray(ranked)
    if ranked.ndim != 2 or ranked.shape[0] != queries.shape[0]:
        raise RetrievalError(
            f"ranked results must be [queries={queries.shape[0]}, K], got shape {ranked.shape}"
        )
    if queries.shape[1] != archive.shape[1]:
        raise RetrievalError(
            f"queries have {queries.shape[1]} classes but the archive has {archive.shape[1]}: "
            "use one label set"
        )
    kmax = ranked.shape[1]
    ks = sorted(set(int(k) for k in ks))
    if not ks or ks[0] < 1 or ks[-1] > kmax:
        raise RetrievalError(f"every K must be in 1..{kmax} (the number of results per query), got {ks}")
    if ranked.size and (ranked.max() >= archive.shape[0] or ranked.min() < -1):
        raise RetrievalError(f"ranked indices must be in -1..{archive.shape[0] - 1}")

    unique, counts = _archive_profile(archive)
    disc = 1.0 / np.log2(np.arange(2, kmax + 2))
    dprefix = _discount_prefix(kmax)
    ranks = np.arange(1, kmax + 1, dtype=np.float64)
    sums = {m: np.zeros(len(ks)) for m in (*METRICS, *LABEL_METRICS[:2])}
    used = 0
    # archive labels with one all-zero row appended so that index -1 (no result) shares nothing
    padded = np.vstack([archive, np.zeros((1, archive.shape[1]), np.float32)])
    sizes = padded.sum(axis=1).astype(np.float64)  # labels per archive item (0 for "no result")

    for start in range(0, queries.shape[0], _CHUNK):
        q = queries[start : start + _CHUNK]
        idx = ranked[start : start + _CHUNK]
        # shared labels of each result: [Qc, K]
        shared = np.einsum("qc,qkc->qk", q, padded[idx], optimize=True).astype(np.float64)
        # archive-wide histogram of shared-label counts per query -> R_q and the ideal DCG
        s_unique = q @ unique.T  # [Qc, U]
        vmax = int(q.sum(axis=1).max()) if len(q) else 0
        hist = np.stack([(s_unique == v) @ counts for v in range(vmax + 1)], axis=1)  # [Qc, V]
        if exclude is not None:
            own = np.flatnonzero(np.asarray(exclude[start : start + _CHUNK]) >= 0)
            # the query itself shares all of its labels with itself
            np.subtract.at(hist, (own, q[own].sum(axis=1).astype(np.int64)), 1.0)
        n_relevant = hist[:, 1:].sum(axis=1)
        keep = n_relevant > 0
        if not keep.any():
            continue
        shared, hist, n_relevant = shared[keep], hist[keep], n_relevant[keep]
        used += int(keep.sum())
        rsize = sizes[idx[keep]]
        cum_lp = np.cumsum(np.where(rsize > 0, shared / np.where(rsize > 0, rsize, 1.0), 0.0), axis=1)
        cum_lr = np.cumsum(shared / q[keep].sum(axis=1, keepdims=True), axis=1)  # |L_q| >= 1 here

        rel = (shared >= 1).astype(np.float64)
        cum_rel = np.cumsum(rel, axis=1)
        prec_at = cum_rel / ranks
        acg_at = np.cumsum(shared, axis=1) / ranks
        ap_terms = np.cumsum(rel * prec_at, axis=1)
        wap_terms = np.cumsum(rel * acg_at, axis=1)
        dcg = np.cumsum((2.0**shared - 1.0) * disc, axis=1)
        # items with at least v shared labels, v = vmax .. 0; ideal list puts the highest v first
        at_least = np.cumsum(hist[:, ::-1], axis=1)[:, ::-1]  # at_least[:, v] = #{s >= v}
        above = np.concatenate([at_least[:, 1:], np.zeros((len(hist), 1))], axis=1)  # #{s > v}
        for j, k in enumerate(ks):
            c = k - 1
            n_k = cum_rel[:, c]
            safe = np.where(n_k > 0, n_k, 1.0)
            sums["precision"][j] += prec_at[:, c].sum()
            sums["recall"][j] += (n_k / n_relevant).sum()
            sums["map"][j] += np.where(n_k > 0, ap_terms[:, c] / safe, 0.0).sum()
            sums["wmap"][j] += np.where(n_k > 0, wap_terms[:, c] / safe, 0.0).sum()
            sums["acg"][j] += acg_at[:, c].sum()
            sums["label_precision"][j] += (cum_lp[:, c] / k).sum()
            sums["label_recall"][j] += (cum_lr[:, c] / k).sum()
            gains = 2.0 ** np.arange(hist.shape[1]) - 1.0
            hi = dprefix[np.minimum(at_least, k).astype(np.int64)]
            lo = dprefix[np.minimum(above, k).astype(np.int64)]
            idcg = ((hi - lo) * gains).sum(axis=1)
            sums["ndcg"][j] += np.where(idcg > 0, dcg[:, c] / np.where(idcg > 0, idcg, 1.0), 0.0).sum()

    out: dict[str, object] = {"ks": ks, "queries": used, "skipped": int(queries.shape[0] - used)}
    for m in (*METRICS, *LABEL_METRICS[:2]):
        out[m] = {k: (float(sums[m][j] / used) if used else 0.0) for j, k in enumerate(ks)}
    lp, lr = out["label_precision"], out["label_recall"]
    out["f1"] = {k: (2 * lp[k] * lr[k] / (lp[k] + lr[k]) if lp[k] + lr[k] > 0 else 0.0)  # type: ignore[index]
                 for k in ks}
    return out


def random_ranking(n_queries: int, n_archive: int, k: int, seed: int = 0) -> np.ndarray:
    """A random ranking baseline: ``k`` distinct archive indices per query (``-1`` past the archive size)."""
    rng = np.random.default_rng(seed)
    kk = min(k, n_archive)
    ranked = np.full((n_queries, k), -1, dtype=np.int64)
    for i in range(n_queries):
        ranked[i, :kk] = rng.choice(n_archive, size=kk, replace=False)
    return ranked


def format_table(results: dict[str, dict[str, object]], ks: Sequence[int] | None = None) -> list[list[str]]:
    """Rows ``[method, metric, value@K...]`` for printing several result sets side by side."""
    rows: list[list[str]] = []
    for method, res in results.items():
        use = list(ks or res["ks"])  # type: ignore[call-overload]
        for m in METRICS:
            vals = res[m]
            rows.append([method, METRIC_TITLES[m], *(f"{vals[k]:.4f}" for k in use)])  # type: ignore[index]
    return rows


def evaluate_index(
    index: Any,
    query_split: str = "test",
    k: int = 100,
    ks: Iterable[int] = DEFAULT_KS,
    limit: int | None = None,
    seed: int = 0,
    baseline: bool = True,
    batch: int = 4096,
) -> dict[str, Any]:
    """Retrieval metrics of a :class:`~benmm.retrieval.index.RetrievalIndex` for the items of one split.

    Queries are the index's items of ``query_split``: look-up-only items (e.g. test when the archive is
    train, as in the BigEarthNet-MM paper) or archive items (then each query's own entry is left out of
    its results). ``limit`` draws that many queries at random (seeded). With ``baseline`` a random
    ranking of the same archive is scored too. Returns ``{"model": metrics, "random": metrics, "names":
    query names, "ranked": [Q, k] archive indices, "distances": [Q, k]}``.
    """
    split = _split_name(query_split)
    names, vectors, labels, in_archive = _queries(index, split)
    if limit is not None and limit < len(names):
        pick = np.sort(np.random.default_rng(seed).choice(len(names), size=limit, replace=False))
        names, vectors, labels, in_archive = names[pick], vectors[pick], labels[pick], in_archive[pick]
    k = min(k, len(index) - (1 if in_archive.any() else 0))
    ks = sorted({x for x in ks if 1 <= x <= k} | {k})  # always report the largest K searched
    own_pos = np.array(
        [index.position(n) if a else -1 for n, a in zip(names, in_archive, strict=True)], dtype=np.int64
    )
    ranked = np.empty((len(names), k), dtype=np.int64)
    dists = np.empty((len(names), k), dtype=np.float32)
    for s in range(0, len(names), batch):
        own = in_archive[s : s + batch]
        extra = int(own.any())
        d, i = index.search_encoded(vectors[s : s + batch], k + extra)
        if extra:
            keep = i != np.where(own, own_pos[s : s + batch], -2)[:, None]
            # drop the query itself where it appears, else the last result; keeps k per row
            drop_last = keep.all(axis=1)
            keep[drop_last, -1] = False
            d, i = d[keep].reshape(len(d), k), i[keep].reshape(len(i), k)
        ranked[s : s + batch], dists[s : s + batch] = i, d
    out: dict[str, Any] = {
        "query_split": split,
        "archive_size": len(index),
        "k": k,
        "kind": index.kind,
        "model": retrieval_metrics(labels, index.labels, ranked, ks, exclude=own_pos),
        "names": names,
        "ranked": ranked,
        "distances": dists,
    }
    if baseline:
        rand = random_ranking(len(names), len(index), k + 1, seed)
        rand = (
            np.stack([row[row != p][:k] for row, p in zip(rand, own_pos, strict=True)])
            if len(rand)
            else rand[:, :k]
        )
        out["random"] = retrieval_metrics(labels, index.labels, rand, ks, exclude=own_pos)
    return out


def _split_name(name: str) -> str:
    return normalize_split(name, strict=False)


def _queries(index: Any, split: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Names, index-space vectors, multi-hot labels and an in-archive flag of the items of ``split``."""
    from benmm.retrieval.index import multi_hot

    parts = []
    arch = index.items["split"].map(_split_name) == split
    if arch.any():
        pos = np.flatnonzero(arch.to_numpy())
        vecs = np.asarray(index.faiss_index.reconstruct_n(0, len(index)))[pos]
        parts.append((index.names[pos], vecs, index.labels[pos], np.ones(len(pos), bool)))
    if index.extra_items is not None:
        ext = (index.extra_items["split"].map(_split_name) == split).to_numpy()
        if ext.any():
            items = index.extra_items[ext]
            parts.append(
                (
                    items["name"].to_numpy(dtype=object),
                    index.extra_vectors[ext],
                    multi_hot(items["labels"], index.label_names),
                    np.zeros(int(ext.sum()), bool),
                )
            )
    if not parts:
        have = sorted(
            set(index.items["split"]) | set([] if index.extra_items is None else index.extra_items["split"])
        )
        raise RetrievalError(
            f"the index holds no items of split {split!r} to use as queries (splits: {have})"
        )
    return tuple(np.concatenate([p[j] for p in parts]) for j in range(4))  # type: ignore[return-value]
