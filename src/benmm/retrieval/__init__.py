"""Content-based retrieval: embed -> (binary codes) -> FAISS index -> search / evaluate / serve.

```python
from benmm.retrieval import embed_store, index_from_embeddings, RetrievalIndex, evaluate_index

embed_store("runs/r50/model.safetensors", "ben.store", "ben.emb")        # or "band-stats"
ix = index_from_embeddings("ben.emb", kind="binary", bits=128, archive_split="train")
ix.save("ben.index")
dist, idx = RetrievalIndex.load("ben.index").search_name("S2A_MSIL2A_20170613T101031_34_81", k=20)
report = evaluate_index(ix, query_split="test", k=100)                   # P/R/mAP/wmAP/ACG/NDCG @K
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
    "evaluate_index": "benmm.retrieval.evaluate",
    "random_ranking": "benmm.retrieval.evaluate",
    "create_app": "benmm.retrieval.service.app",
}

__all__ = sorted(_EXPORTS)


__getattr__ = lazy_getattr(__name__, _EXPORTS)
