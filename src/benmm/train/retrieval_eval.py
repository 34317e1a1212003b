"""Retrieval metrics of learned codes: Hamming ranking in FAISS, scored by ``retrieval_metrics``.

Used by the retrieval task's validation (its checkpoint monitor, mAP@K) and by the benchmark. Codes are
the signs of the models' float outputs (``x > 0``), packed as FAISS binary indexes store them.
"""

from __future__ import annotations

from typing import Any

import faiss
import numpy as np

from benmm.retrieval.evaluate import retrieval_metrics


def pack_codes(x: np.ndarray) -> np.ndarray:
    """``uint8 [N, bits / 8]`` codes of float outputs ``[N, bits]`` (bit = output > 0)."""
    return np.packbits(np.asarray(x) > 0, axis=1)


def rank_codes(query: np.ndarray, archive: np.ndarray, k: int, own: np.ndarray | None = None
               ) -> np.ndarray:
    """``[Q, k]`` archive rows nearest each query in Hamming distance (exact, ``IndexBinaryFlat``).

    ``own``: the archive row of each query (its own entry, left out of its results), or None when the
    queries are not in the archive (another modality or split)."""
    bits = int(archive.shape[1])
    index = faiss.IndexBinaryFlat(bits)
    index.add(pack_codes(archive))
    extra = 0 if own is None else 1
    _, idx = index.search(pack_codes(query), k + extra)
    if own is None:
        return idx
    keep = idx != own[:, None]
    keep[keep.all(axis=1), -1] = False  # the query was not among its results: drop the last one
    return idx[keep].reshape(len(idx), k)


def code_metrics(query: np.ndarray, query_labels: np.ndarray, archive: np.ndarray,
                 archive_labels: np.ndarray, k: int, own: np.ndarray | None = None) -> dict[str, Any]:
    """``retrieval_metrics`` at ``k`` (clamped to what the archive holds) of a Hamming ranking."""
    k = max(1, min(k, len(archive) - (0 if own is None else 1)))
    ranked = rank_codes(query, archive, k, own)
    return retrieval_metrics(query_labels, archive_labels, ranked, ks=(k,),
                             exclude=None if own is None else own)


def direction_metrics(codes: dict[str, np.ndarray], labels: np.ndarray, directions: list[tuple[str, str]],
                      k: int, queries: int, seed: int = 0) -> dict[str, dict[str, float]]:
    """``{"s1->s2": {"map": ., "ndcg": ., "precision": .}}`` for items that have a code in every modality
    (row i of each array = the same pair): ``queries`` rows drawn (seeded) search all rows of the other
    side; within one modality a query's own row is left out."""
    n = len(labels)
    pick = np.arange(n) if queries >= n else np.sort(np.random.default_rng(seed).choice(n, queries, False))
    out: dict[str, dict[str, float]] = {}
    for q_mod, a_mod in directions:
        same = q_mod == a_mod
        if n < (2 if same else 1):
            continue
        res = code_metrics(codes[q_mod][pick], labels[pick], codes[a_mod], labels, k,
                           own=pick if same else None)
        kk = res["ks"][-1]
        out[f"{q_mod}->{a_mod}"] = {m: float(res[m][kk]) for m in ("map", "ndcg", "precision")}
    return out
