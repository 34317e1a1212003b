"""Building a :class:`~benmm.retrieval.index.RetrievalIndex` from float embeddings and their items, or
from an embeddings folder written by ``benmm embed`` (kinds and files: :mod:`benmm.retrieval.index`)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import pandas as pd

from benmm.archive.splits import normalize_split
from benmm.errors import RetrievalError
from benmm.labels import label_names
from benmm.retrieval.codes import fit_itq
from benmm.retrieval.index import DEFAULT_BITS, HNSW_DEFAULTS, KINDS, RetrievalIndex, _items_frame, _normalize


def _resolve_labels(n_labels: int | Sequence[str]) -> tuple[str, ...]:
    if isinstance(n_labels, int):
        return label_names(n_labels)
    return tuple(n_labels)


def build_index(
    embeddings: np.ndarray,
    items: pd.DataFrame,
    kind: str = "binary",
    bits: int = DEFAULT_BITS,
    archive_split: str | Sequence[str] | None = None,
    labels: int | Sequence[str] = 19,
    hnsw: dict[str, int] | None = None,
    source: dict[str, Any] | None = None,
    seed: int = 0,
) -> RetrievalIndex:
    """Build an index from float embeddings ``[N, D]`` and their items (``name``, ``labels``, ``split``).

    ``archive_split`` restricts the searchable archive to those splits (e.g. ``"train"``); the other
    items are kept as look-up-only query items. ``labels`` is 19, 43 or an explicit list of label names.
    """
    if kind not in KINDS:
        raise RetrievalError(f"unknown index kind {kind!r}: choose one of {', '.join(KINDS)}")
    x = np.asarray(embeddings, dtype=np.float32)
    frame = _items_frame(items)
    if x.ndim != 2 or len(x) != len(frame):
        raise RetrievalError(f"embeddings {x.shape} do not match {len(frame)} items (one row per item)")
    label_set = _resolve_labels(labels)
    is_archive = np.ones(len(frame), dtype=bool)
    if archive_split is not None:
        given = [archive_split] if isinstance(archive_split, str) else archive_split
        wanted = {normalize_split(s, strict=False) for s in given}
        is_archive = np.array([normalize_split(str(s), strict=False) in wanted for s in frame["split"]],
                              dtype=bool)
        if not is_archive.any():
            have = sorted(set(frame["split"]))
            raise RetrievalError(
                f"no item belongs to the archive split(s) {sorted(wanted)}; the items' splits are {have}"
            )
    arch_x, arch_items = x[is_archive], frame[is_archive].reset_index(drop=True)
    encoder = None
    params = dict(HNSW_DEFAULTS) | dict(hnsw or {})
    if kind == "binary":
        encoder = fit_itq(arch_x, bits=bits, seed=seed)
        index: Any = faiss.IndexBinaryFlat(bits)
        index.add(encoder.encode(arch_x))
    else:
        vecs = _normalize(arch_x)
        if kind == "flat":
            index = faiss.IndexFlatIP(vecs.shape[1])
        else:
            index = faiss.IndexHNSWFlat(vecs.shape[1], int(params["m"]), faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efConstruction = int(params["ef_construction"])
            index.hnsw.efSearch = int(params["ef_search"])
        index.add(vecs)
    extra_items = extra_vectors = None
    if (~is_archive).any():
        extra_items = frame[~is_archive].reset_index(drop=True)
        extra_x = x[~is_archive]
        extra_vectors = encoder.encode(extra_x) if encoder is not None else _normalize(extra_x)
    manifest: dict[str, Any] = {
        "source": dict(source or {}),
        "archive_split": archive_split
        if archive_split is None or isinstance(archive_split, str)
        else list(archive_split),
        "metric": {"binary": "hamming", "flat": "cosine", "hnsw": "cosine"}[kind],
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    if kind == "hnsw":
        manifest["hnsw"] = params
    return RetrievalIndex(kind, index, arch_items, label_set, encoder, extra_items, extra_vectors, manifest)


def index_from_embeddings(
    embeddings: str | Path | Any,
    kind: str = "binary",
    bits: int = DEFAULT_BITS,
    archive_split: str | Sequence[str] | None = None,
    hnsw: dict[str, int] | None = None,
    seed: int = 0,
) -> RetrievalIndex:
    """Build an index from an embeddings directory (``benmm embed``), recording in the manifest the store,
    the checkpoint (or built-in embedder) and the model description that the service needs."""
    from benmm.retrieval.embset import EmbeddingSet

    emb = embeddings if isinstance(embeddings, EmbeddingSet) else EmbeddingSet.load(embeddings)
    info = emb.info
    source = {
        "embeddings": str(Path(embeddings).resolve()) if isinstance(embeddings, str | Path) else None,
        "store": info.get("store"),
        "checkpoint": info.get("checkpoint"),
        "embedder": info.get("embedder"),
        "model": info.get("model"),
        "split": info.get("split"),
        "modality": emb.modality,
        "code_bits": info.get("code_bits"),
        "store_hash": info.get("store_hash"),
        "labels": info.get("labels"),
        "order": info.get("order"),
    }
    return build_index(
        np.asarray(emb.vectors),
        emb.items,
        kind=kind,
        bits=bits,
        archive_split=archive_split,
        labels=int(info.get("labels") or 19),
        hnsw=hnsw,
        source=source,
        seed=seed,
    )
