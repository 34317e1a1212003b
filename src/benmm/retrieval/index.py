"""FAISS retrieval indexes with their patch names, labels and a manifest; saved without pickle.

Kinds:

* ``binary`` — PCA + ITQ binary codes (:mod:`benmm.retrieval.codes`) in ``faiss.IndexBinaryFlat``:
  exact Hamming search; 590k x 128 bit = 9.4 MB. Distance = Hamming distance (bits).
* ``flat`` — L2-normalised float embeddings in ``faiss.IndexFlatIP``: exact cosine search.
  Distance = ``1 - cosine similarity``.
* ``hnsw`` — the same vectors in ``faiss.IndexHNSWFlat`` (inner product): approximate, for large float
  sets. Distance = ``1 - cosine similarity``.

An index directory holds::

    manifest.json     format, version, kind, dim, bits, counts, label set, files + sha256, and the source
                      (store path, checkpoint path, embeddings path, model info) the service needs
    index.faiss       the FAISS index (FAISS's own binary format), row i = archive item i
    items.parquet     archive items: name, labels (list of label names), split
    encoder.safetensors  binary kind only: the PCA + ITQ encoder (mean, projection)
    extra.parquet + extra.npy   optional look-up-only items (e.g. the test split): searchable *by name*
                      as queries, never returned as results; vectors already in index space

Items outside the archive split (when one is given) become look-up-only items, so one embeddings file
of the whole store gives "queries = test, archive = train" as in the BigEarthNet-MM paper.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import faiss
import numpy as np
import pandas as pd

from benmm import __version__
from benmm.errors import RetrievalError
from benmm.labels import multi_hot as label_multi_hot
from benmm.retrieval.codes import BinaryEncoder

FORMAT: Final = "benmm-index"
VERSION: Final = 1
KINDS: Final = ("binary", "flat", "hnsw")
MANIFEST: Final = "manifest.json"
INDEX_FILE: Final = "index.faiss"
ITEMS_FILE: Final = "items.parquet"
ENCODER_FILE: Final = "encoder.safetensors"
EXTRA_ITEMS: Final = "extra.parquet"
EXTRA_VECTORS: Final = "extra.npy"
DEFAULT_BITS: Final = 128
#: HNSW32 with efSearch 64: recall@10 0.987 at ~6,300 queries/s on 590k x 512-d (benchmarks/retrieval.py)
HNSW_DEFAULTS: Final = {"m": 32, "ef_construction": 100, "ef_search": 64}


def _is_index_dir(path: Path) -> bool:
    try:
        return bool(json.loads((path / MANIFEST).read_text()).get("format") == FORMAT)
    except (OSError, ValueError, AttributeError):
        return False


def _sha256(path: Path) -> str:
    with path.open("rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def _normalize(x: np.ndarray) -> np.ndarray:
    x = np.ascontiguousarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


def multi_hot(labels: Iterable[Sequence[str]], names: Sequence[str]) -> np.ndarray:
    """``uint8 [N, len(names)]`` from lists of label names (:func:`benmm.labels.multi_hot`)."""
    return label_multi_hot(labels, names, where="retrieval items")


def _items_frame(items: pd.DataFrame) -> pd.DataFrame:
    if "name" not in items.columns:
        raise RetrievalError(f"items need a 'name' column, got columns {list(items.columns)}")
    out = pd.DataFrame({"name": items["name"].astype(str).to_numpy()})
    out["labels"] = (
        [list(x) if x is not None else [] for x in items["labels"]] if "labels" in items else [[]] * len(out)
    )
    out["split"] = items["split"].astype(str).to_numpy() if "split" in items else ""
    if out["name"].duplicated().any():
        dup = out["name"][out["name"].duplicated()].iloc[0]
        raise RetrievalError(f"item names must be unique; {dup!r} appears more than once")
    return out


@dataclass
class RetrievalIndex:
    """A searchable set of archive items (row i of the FAISS index = ``items`` row i)."""

    kind: str
    faiss_index: Any
    items: pd.DataFrame
    label_names: tuple[str, ...]
    encoder: BinaryEncoder | None = None
    extra_items: pd.DataFrame | None = None
    extra_vectors: np.ndarray | None = None
    manifest: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.names = self.items["name"].to_numpy(dtype=object)
        self.labels = multi_hot(self.items["labels"], self.label_names)
        self._pos: dict[str, int] | None = None
        self._extra_pos: dict[str, int] | None = None

    # ---------------------------------------------------------------- properties
    def __len__(self) -> int:
        return int(self.faiss_index.ntotal)

    @property
    def dim(self) -> int:
        """Dimension of the float embeddings the index expects as queries."""
        return self.encoder.dim if self.encoder is not None else int(self.faiss_index.d)

    @property
    def bits(self) -> int | None:
        return self.encoder.bits if self.encoder is not None else None

    @property
    def source(self) -> dict[str, Any]:
        return dict(self.manifest.get("source") or {})

    # ---------------------------------------------------------------- encoding and search
    def encode(self, embeddings: np.ndarray) -> np.ndarray:
        """Float embeddings ``[Q, D]`` -> index-space vectors (packed codes, or unit-norm floats)."""
        x = np.asarray(embeddings, dtype=np.float32)
        if x.ndim == 1:
            x = x[None]
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise RetrievalError(f"query embeddings must be [Q, {self.dim}], got shape {x.shape}")
        return self.encoder.encode(x) if self.encoder is not None else _normalize(x)

    def search_encoded(self, vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Search with index-space vectors; returns ``(distances float32 [Q, k], indices int64 [Q, k])``.

        ``k`` is clamped to the archive size (FAISS allocates ``[Q, k]`` results, so a huge ``k`` would only
        exhaust memory). This is a thin layer over ``faiss.Index.search`` (the benchmark holds it within a
        few percent of the raw call).
        """
        if k < 1:
            raise RetrievalError(f"k must be at least 1, got {k}")
        k = min(k, max(1, int(self.faiss_index.ntotal)))
        if self.kind == "binary":
            dist, idx = self.faiss_index.search(np.ascontiguousarray(vectors, dtype=np.uint8), k)
            return dist.astype(np.float32), idx
        sims, idx = self.faiss_index.search(np.ascontiguousarray(vectors, dtype=np.float32), k)
        return (1.0 - sims).astype(np.float32), idx

    def search(self, embeddings: np.ndarray, k: int = 20) -> tuple[np.ndarray, np.ndarray]:
        """Search with float embeddings ``[Q, D]`` (encoded as the index was)."""
        return self.search_encoded(self.encode(embeddings), k)

    def position(self, name: str) -> int | None:
        if self._pos is None:
            self._pos = {n: i for i, n in enumerate(self.names)}
        return self._pos.get(name)

    def _extra_position(self, name: str) -> int | None:
        if self.extra_items is None:
            return None
        if self._extra_pos is None:
            self._extra_pos = {n: i for i, n in enumerate(self.extra_items["name"])}
        return self._extra_pos.get(name)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and (
            self.position(name) is not None or self._extra_position(name) is not None
        )

    def vector_of(self, name: str) -> np.ndarray:
        """The index-space vector of an archive or look-up-only item (raises if unknown)."""
        pos = self.position(name)
        if pos is not None:
            return np.asarray(self.faiss_index.reconstruct(pos))[None]
        epos = self._extra_position(name)
        if epos is not None and self.extra_vectors is not None:
            return np.asarray(self.extra_vectors[epos])[None]
        raise RetrievalError(f"patch {name!r} is not in this index (neither archive nor query items)")

    def labels_of(self, name: str) -> list[str]:
        pos = self.position(name)
        if pos is not None:
            return list(self.items["labels"].iat[pos])
        epos = self._extra_position(name)
        if epos is not None and self.extra_items is not None:
            return list(self.extra_items["labels"].iat[epos])
        raise RetrievalError(f"patch {name!r} is not in this index")

    def search_name(self, name: str, k: int = 20, exclude_self: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """Search with a stored item as the query; the item itself is left out of its own results."""
        vec = self.vector_of(name)
        pos = self.position(name) if exclude_self else None
        dist, idx = self.search_encoded(vec, k + (pos is not None))
        if pos is not None:
            keep = idx[0] != pos
            dist, idx = dist[:, keep][:, :k], idx[:, keep][:, :k]
        return dist, idx

    def hits(self, dist: np.ndarray, idx: np.ndarray) -> list[dict[str, Any]]:
        """One query's results as dicts ``rank, name, distance, labels`` (missing results dropped)."""
        out = []
        for rank, (d, i) in enumerate(zip(dist.tolist(), idx.tolist(), strict=True), start=1):
            if i < 0:
                continue
            out.append(
                {
                    "rank": rank,
                    "name": str(self.names[i]),
                    "distance": float(d),
                    "labels": list(self.items["labels"].iat[i]),
                }
            )
        return out

    # ---------------------------------------------------------------- persistence
    def save(self, path: str | Path, overwrite: bool = False) -> Path:
        """Write the index directory atomically (a temporary sibling, then a rename)."""
        dst = Path(path)
        if dst.exists() and not overwrite:
            raise RetrievalError(f"{dst} already exists: choose another output or pass overwrite/--overwrite")
        if dst.exists() and not _is_index_dir(dst):  # --overwrite replaces an index, nothing else
            raise RetrievalError(f"{dst} exists and is not a benmm index (no {MANIFEST} of format {FORMAT}); "
                                 "--overwrite only replaces an index: choose another output")
        tmp = dst.with_name(f".{dst.name}.tmp-{time.time_ns()}")
        tmp.mkdir(parents=True)
        try:
            if self.kind == "binary":
                faiss.write_index_binary(self.faiss_index, str(tmp / INDEX_FILE))
                assert self.encoder is not None  # binary indexes are always built with an encoder
                self.encoder.save(tmp / ENCODER_FILE)
            else:
                faiss.write_index(self.faiss_index, str(tmp / INDEX_FILE))
            self.items.to_parquet(tmp / ITEMS_FILE, index=False)
            if self.extra_items is not None and self.extra_vectors is not None:
                self.extra_items.to_parquet(tmp / EXTRA_ITEMS, index=False)
                np.save(tmp / EXTRA_VECTORS, self.extra_vectors, allow_pickle=False)
            files = {p.name: {"bytes": p.stat().st_size, "sha256": _sha256(p)} for p in sorted(tmp.iterdir())}
            manifest = dict(self.manifest) | {
                "format": FORMAT,
                "version": VERSION,
                "kind": self.kind,
                "dim": self.dim,
                "bits": self.bits,
                "count": len(self),
                "extra": 0 if self.extra_items is None else len(self.extra_items),
                "labels": list(self.label_names),
                "files": files,
                "benmm": __version__,
            }
            (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, default=str))
            if dst.exists():
                shutil.rmtree(dst)
            tmp.rename(dst)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        self.manifest = manifest
        return dst

    @classmethod
    def load(cls, path: str | Path, verify: bool = True) -> RetrievalIndex:
        """Open an index directory; a missing, corrupt or mismatched part raises :class:`RetrievalError`."""
        root = Path(path)
        mpath = root / MANIFEST
        if not mpath.is_file():
            raise RetrievalError(f"{root}: not a benmm index (no {MANIFEST}); build one with `benmm index`")
        try:
            manifest = json.loads(mpath.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise RetrievalError(f"{mpath}: corrupt manifest ({exc})") from None
        if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
            raise RetrievalError(f"{mpath}: not a benmm index manifest")
        if manifest.get("version") != VERSION:
            raise RetrievalError(
                f"{root}: index format version {manifest.get('version')} is not supported "
                f"(this benmm reads version {VERSION}); rebuild it with `benmm index`"
            )
        kind = manifest.get("kind")
        if kind not in KINDS:
            raise RetrievalError(f"{mpath}: unknown index kind {kind!r} (expected one of {', '.join(KINDS)})")
        for fname, meta in (manifest.get("files") or {}).items():
            f = root / fname
            if not f.is_file():
                raise RetrievalError(f"{root}: {fname} is missing; the index is incomplete, rebuild it")
            if f.stat().st_size != meta.get("bytes") or (verify and _sha256(f) != meta.get("sha256")):
                raise RetrievalError(
                    f"{f}: contents do not match the manifest (corrupt or replaced); "
                    "rebuild the index with `benmm index`"
                )
        index: Any
        try:
            if kind == "binary":
                index = faiss.read_index_binary(str(root / INDEX_FILE))
            else:
                index = faiss.read_index(str(root / INDEX_FILE))
        except RuntimeError as exc:
            raise RetrievalError(
                f"{root / INDEX_FILE}: FAISS cannot read it ({str(exc).splitlines()[0]})"
            ) from None
        items = pd.read_parquet(root / ITEMS_FILE)
        if index.ntotal != len(items) or index.ntotal != manifest.get("count"):
            raise RetrievalError(
                f"{root}: index holds {index.ntotal} vectors but {len(items)} items are listed "
                f"(manifest says {manifest.get('count')}); rebuild the index"
            )
        encoder = BinaryEncoder.load(root / ENCODER_FILE) if kind == "binary" else None
        if encoder is not None and encoder.bits != index.d:
            raise RetrievalError(
                f"{root}: encoder makes {encoder.bits}-bit codes but the index holds {index.d}"
            )
        if kind == "hnsw":
            index.hnsw.efSearch = int((manifest.get("hnsw") or HNSW_DEFAULTS)["ef_search"])
        extra_items = extra_vectors = None
        if (root / EXTRA_ITEMS).is_file():
            extra_items = pd.read_parquet(root / EXTRA_ITEMS)
            extra_vectors = np.load(root / EXTRA_VECTORS, allow_pickle=False)
            if len(extra_vectors) != len(extra_items):
                raise RetrievalError(
                    f"{root}: {len(extra_items)} query items but {len(extra_vectors)} vectors"
                )
        labels = tuple(manifest.get("labels") or ())
        return cls(kind, index, items, labels, encoder, extra_items, extra_vectors, manifest)
