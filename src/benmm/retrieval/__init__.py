"""Content-based retrieval: embed -> (binary codes) -> FAISS index -> search / evaluate / serve.

```python
from benmm.retrieval import embed_store, index_from_embeddings, RetrievalIndex, evaluate_index
from benmm.retrieval import EmbeddingSet, evaluate_queries

embed_store("runs/r50/model.safetensors", "ben.store", "ben.emb")        # or "band-stats"
ix = index_from_embeddings("ben.emb", kind="binary", bits=128, archive_split="train")
ix.save("ben.index")
dist, idx = RetrievalIndex.load("ben.index").search_name("S2A_MSIL2A_20170613T101031_34_81", k=20)
report = evaluate_index(ix, query_split="test", k=100)                   # P/R/mAP/wmAP/ACG/NDCG/F1 @K

# cross-modal: S1 queries against an S2 index of the same model (protocols "default", "csmae")
for side in ("s1", "s2"):
    embed_store(ckpt, "ben.store", f"{side}.emb", modality=side)
res = evaluate_queries(index_from_embeddings("s2.emb", kind="flat", archive_split="test"),
                       EmbeddingSet.load("s1.emb"), protocol="csmae", k=10)
```

Names are imported lazily (FAISS, torch and FastAPI load only when used).
"""

from __future__ import annotations

from benmm.lazy import lazy_getattr

_EXPORTS = {
    "BinaryEncoder": "benmm.retrieval.codes",
    "fit_itq": "benmm.retrieval.codes",
    "EmbeddingSet": "benmm.retrieval.embed",
    "BandStatsEmbedder": "benmm.retrieval.embed",
    "CheckpointEmbedder": "benmm.retrieval.embed",
    "embed_store": "benmm.retrieval.embed",
    "write_embeddings": "benmm.retrieval.embed",
    "RetrievalIndex": "benmm.retrieval.index",
    "build_index": "benmm.retrieval.build",
    "index_from_embeddings": "benmm.retrieval.build",
    "retrieval_metrics": "benmm.retrieval.evaluate",
    "evaluate_queries": "benmm.retrieval.crossmodal",
    "PROTOCOLS": "benmm.retrieval.crossmodal",
    "report_rows": "benmm.retrieval.report",
    "find_metrics": "benmm.retrieval.report",
    "reported_figures": "benmm.retrieval.report",
    "evaluate_index": "benmm.retrieval.evaluate",
    "random_ranking": "benmm.retrieval.evaluate",
    "create_app": "benmm.retrieval.service.app",
}

__all__ = sorted(_EXPORTS)


__getattr__ = lazy_getattr(__name__, _EXPORTS)
