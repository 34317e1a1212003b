"""The embeddings directory that ``benmm embed`` writes and ``benmm index`` / ``evaluate-retrieval`` read::

    embeddings.npy    float32 [N, D] (memory-mappable), row i = items row i
    codes.npy         uint8 [N, code_bits / 8] packed binary codes (``embedding > 0``), only for models
                      that make codes (``model.code_bits`` not None)
    items.parquet     name, labels (list of label names), split
    embeddings.json   format, version, count, dim, modality (the side embedded: s1, s2 or s1s2), code_bits,
                      embedder ("checkpoint" or "band-stats"), checkpoint path, store path and content hash,
                      split, label set, model info
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np
import pandas as pd

from benmm import __version__
from benmm.atomic import atomic_open, atomic_write
from benmm.errors import RetrievalError

FORMAT: Final = "benmm-embeddings"
VERSION: Final = 1
VECTORS: Final = "embeddings.npy"
CODES: Final = "codes.npy"
ITEMS: Final = "items.parquet"
INFO: Final = "embeddings.json"


@dataclass
class EmbeddingSet:
    """Float embeddings (and packed codes, if the model makes codes) with their items and a description."""

    vectors: np.ndarray
    items: pd.DataFrame
    info: dict[str, Any]
    codes: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.items)

    @property
    def modality(self) -> str:
        """The side these embeddings are of (``s1``, ``s2`` or ``s1s2``; older sets: the model's)."""
        return str(self.info.get("modality") or (self.info.get("model") or {}).get("modality") or "s1s2")

    @classmethod
    def load(cls, path: str | Path, mmap: bool = True) -> EmbeddingSet:
        root = Path(path)
        if not (root / INFO).is_file():
            raise RetrievalError(
                f"{root}: not an embeddings directory (no {INFO}); make one with `benmm embed`"
            )
        try:
            info = json.loads((root / INFO).read_text())
        except json.JSONDecodeError as exc:
            raise RetrievalError(f"{root / INFO}: corrupt ({exc})") from None
        if info.get("format") != FORMAT or info.get("version") != VERSION:
            raise RetrievalError(
                f"{root}: unsupported embeddings format {info.get('format')} v{info.get('version')}"
            )
        if not info.get("complete", False) or not (root / VECTORS).is_file():
            raise RetrievalError(
                f"{root}: embedding did not finish; run the same `benmm embed` again to resume"
            )
        try:
            vectors = np.load(root / VECTORS, mmap_mode="r" if mmap else None, allow_pickle=False)
            items = pd.read_parquet(root / ITEMS)
            codes = np.load(root / CODES, allow_pickle=False) if (root / CODES).is_file() else None
        except (OSError, ValueError) as exc:
            raise RetrievalError(f"{root}: cannot read the embeddings ({exc})") from None
        if vectors.ndim != 2 or len(vectors) != len(items) or len(items) != info.get("count"):
            raise RetrievalError(
                f"{root}: {len(items)} items but embeddings of shape {vectors.shape} "
                f"(manifest count {info.get('count')}): the directory is inconsistent"
            )
        if codes is not None and len(codes) != len(items):
            raise RetrievalError(
                f"{root}: {len(items)} items but {len(codes)} codes: the directory is inconsistent"
            )
        return cls(vectors, items, info, codes)


def write_embeddings(
    path: str | Path,
    vectors: np.ndarray,
    items: pd.DataFrame,
    info: dict[str, Any],
    overwrite: bool = False,
    codes: np.ndarray | None = None,
) -> Path:
    """Write an embeddings directory in one go (for embeddings computed elsewhere, tests, synthetic data)."""
    root = Path(path)
    if root.exists() and not overwrite and (root / INFO).exists():
        raise RetrievalError(f"{root} already holds embeddings: choose another output or pass --overwrite")
    root.mkdir(parents=True, exist_ok=True)
    vectors = np.asarray(vectors, dtype=np.float32)
    if vectors.ndim != 2 or len(vectors) != len(items):
        raise RetrievalError(f"embeddings {vectors.shape} do not match {len(items)} items")
    atomic_npy(root / VECTORS, vectors)
    if codes is not None:
        atomic_npy(root / CODES, np.asarray(codes, dtype=np.uint8))
    items.reset_index(drop=True).to_parquet(root / ITEMS, index=False)
    full = {
        "format": FORMAT,
        "version": VERSION,
        "benmm": __version__,
        **info,
        "count": len(items),
        "dim": int(vectors.shape[1]),
        "complete": True,
    }
    atomic_write(root / INFO, json.dumps(full, indent=2, default=str))
    return root


def atomic_npy(path: Path, arr: np.ndarray) -> None:
    with atomic_open(path, "wb") as fh:
        np.save(fh, arr, allow_pickle=False)
