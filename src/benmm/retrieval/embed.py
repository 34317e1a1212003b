"""Embeddings of store patches (``benmm embed``) and of single query patches (search, service uploads).

An embeddings directory holds::

    embeddings.npy    float32 [N, D] (memory-mappable), row i = items row i
    items.parquet     name, labels (list of label names), split
    embeddings.json   format, version, count, dim, embedder ("checkpoint" or "band-stats"), checkpoint path,
                      store path, split, label set, model info

Embedding is batched (the data package's batched loader, optional worker processes), shows progress,
and is resumable: work is cut into chunks that are each written atomically to ``parts/`` and skipped
when a run is restarted; the final files are assembled from the parts at the end. ``shard=(i, n)``
embeds every n-th chunk only, so n processes (one per GPU or node) can share one store and one output
directory; the last one to finish (or a run with ``--merge``) assembles the result.

Two embedders: a trained checkpoint (``model.features(batch)`` after the checkpoint's own batch
transform: bands, resampling, normalisation) and ``band-stats``, a training-free baseline of per-band
statistics (mean, std, 10/50/90th percentiles of each normalised band) that needs no model at all.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np
import pandas as pd

from benmm import __version__
from benmm.atomic import atomic_open, atomic_path, atomic_write
from benmm.bands import ALL_BANDS, MODALITY_OF, check_modality, stats_v1
from benmm.errors import BenmmError, RetrievalError

FORMAT: Final = "benmm-embeddings"
VERSION: Final = 1
VECTORS: Final = "embeddings.npy"
ITEMS: Final = "items.parquet"
INFO: Final = "embeddings.json"
PARTS: Final = "parts"
CHUNK: Final = 8192
BAND_STATS: Final = "band-stats"


@dataclass
class EmbeddingSet:
    """Float embeddings with their items (name, labels, split) and a description."""

    vectors: np.ndarray
    items: pd.DataFrame
    info: dict[str, Any]

    def __len__(self) -> int:
        return len(self.items)

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
        except (OSError, ValueError) as exc:
            raise RetrievalError(f"{root}: cannot read the embeddings ({exc})") from None
        if vectors.ndim != 2 or len(vectors) != len(items) or len(items) != info.get("count"):
            raise RetrievalError(
                f"{root}: {len(items)} items but embeddings of shape {vectors.shape} "
                f"(manifest count {info.get('count')}): the directory is inconsistent"
            )
        return cls(vectors, items, info)


def write_embeddings(
    path: str | Path, vectors: np.ndarray, items: pd.DataFrame, info: dict[str, Any], overwrite: bool = False
) -> Path:
    """Write an embeddings directory in one go (for embeddings computed elsewhere, tests, synthetic data)."""
    root = Path(path)
    if root.exists() and not overwrite and (root / INFO).exists():
        raise RetrievalError(f"{root} already holds embeddings: choose another output or pass --overwrite")
    root.mkdir(parents=True, exist_ok=True)
    vectors = np.asarray(vectors, dtype=np.float32)
    if vectors.ndim != 2 or len(vectors) != len(items):
        raise RetrievalError(f"embeddings {vectors.shape} do not match {len(items)} items")
    _atomic_npy(root / VECTORS, vectors)
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
    _atomic_text(root / INFO, json.dumps(full, indent=2, default=str))
    return root


def _atomic_text(path: Path, text: str) -> None:
    atomic_write(path, text)


def _atomic_npy(path: Path, arr: np.ndarray) -> None:
    with atomic_open(path, "wb") as fh:
        np.save(fh, arr, allow_pickle=False)


# ---------------------------------------------------------------------------------------- embedders
def _batch_from_bands(bands: Mapping[str, np.ndarray], wanted: tuple[str, ...]) -> dict[str, Any]:
    """A one-patch batch (DESIGN §4 keys, native sizes) from band arrays checked by ``upload.check_bands``."""
    import torch

    from benmm.data.dataset import sample_layout

    batch: dict[str, Any] = {}
    for key, (group, _side) in sample_layout(wanted).items():
        batch[key] = torch.from_numpy(np.stack([np.asarray(bands[b], np.float32) for b in group]))[None]
    batch["name"] = ["query"]
    return batch


class BandStatsEmbedder:
    """Training-free baseline: mean, std and 10/50/90th percentiles of every normalised band."""

    name = BAND_STATS
    STATS: Final = 5

    def __init__(self, bands: tuple[str, ...] = ALL_BANDS) -> None:
        from benmm.bands import resolve_bands

        self.bands = resolve_bands(bands)
        self.dim = self.STATS * len(self.bands)
        self.info: dict[str, Any] = {
            "name": BAND_STATS,
            "bands": list(self.bands),
            "labels": 19,
            "order": "official",
            "modality": "s1s2",
        }

    def features(self, batch: Mapping[str, Any]) -> np.ndarray:
        """``[B, 5 * bands]`` from a raw (untransformed) batch, bands in canonical order per key."""
        from benmm.data.dataset import sample_layout

        cols = []
        for key, (group, _side) in sample_layout(self.bands).items():
            x = np.asarray(batch[key], dtype=np.float32)  # [B, k, H, W]
            mean, std = stats_v1().arrays(group)
            x = (x - mean[None, :, None, None]) / std[None, :, None, None]
            flat = x.reshape(x.shape[0], x.shape[1], -1)
            q = np.percentile(flat, (10, 50, 90), axis=2)  # [3, B, k]
            cols.append(
                np.concatenate(
                    [flat.mean(2)[..., None], flat.std(2)[..., None], np.moveaxis(q, 0, -1)], axis=2
                )
            )  # [B, k, 5]
        out = np.concatenate(cols, axis=1)
        return out.reshape(out.shape[0], -1).astype(np.float32)

    def __call__(self, bands: Mapping[str, np.ndarray]) -> np.ndarray:
        return self.features(_batch_from_bands(bands, self.bands))


class CheckpointEmbedder:
    """``model.embed(batch, modality)`` of a ``benmm train`` checkpoint, after the checkpoint's own batch
    transform; ``modality`` (one of ``model.modalities``; None: the model's own) picks the side a
    cross-modal model embeds, and the bands read to ``info["bands"]`` of that side."""

    def __init__(self, checkpoint: str | Path, device: str = "cpu", modality: str | None = None) -> None:
        import torch

        from benmm.data.transforms import BatchTransform
        from benmm.train.task import load_checkpoint

        self.path = Path(checkpoint)
        try:
            self.model, self.info = load_checkpoint(self.path)
        except BenmmError:
            raise
        except Exception as exc:  # a damaged file surfaces as the reader library's own error type
            raise RetrievalError(f"{self.path}: cannot load the checkpoint ({exc})") from None
        self.device = torch.device(device)
        self.model.to(self.device).eval()
        self.modality = self.model.check_modality(modality)
        self.bands = _side_bands(tuple(self.info.get("bands") or ()), self.modality)
        self.info = {**self.info, "modality": self.modality, "bands": list(self.bands),
                     "code_bits": self.model.code_bits}
        self.name = str(self.info.get("name"))
        self.transform = BatchTransform(
            bands=self.bands,
            resample=self.info.get("resample") or "bilinear",
            stats=self.info.get("stats") or "v1",
            keep_native=bool(self.info.get("keep_native", getattr(self.model, "native_groups", False))),
        )
        self.dim = int(self.features(_batch_from_bands(_zeros(self.bands), self.bands)).shape[1])

    def features(self, batch: Mapping[str, Any]) -> np.ndarray:
        import torch

        moved = {
            k: (v.to(self.device, non_blocking=True) if isinstance(v, torch.Tensor) else v)
            for k, v in batch.items()
        }
        with torch.inference_mode():
            out = self.model.embed(self.transform(moved), self.modality)
        return out.float().cpu().numpy()

    def __call__(self, bands: Mapping[str, np.ndarray]) -> np.ndarray:
        return self.features(_batch_from_bands(bands, self.bands))


def _zeros(bands: tuple[str, ...]) -> dict[str, np.ndarray]:
    from benmm.bands import BAND_SIZE

    return {b: np.zeros((BAND_SIZE[b], BAND_SIZE[b]), np.float32) for b in bands}


def _side_bands(bands: tuple[str, ...], modality: str) -> tuple[str, ...]:
    """The bands of ``bands`` that belong to ``modality`` (all of them for s1s2)."""
    return bands if modality == "s1s2" else tuple(b for b in bands if MODALITY_OF[b] == modality)


def make_embedder(model: str | Path, device: str = "cpu", modality: str | None = None
                  ) -> BandStatsEmbedder | CheckpointEmbedder:
    """``"band-stats"`` (of ``modality``'s bands; default all) or a checkpoint path."""
    if str(model) == BAND_STATS:
        if modality is None:
            return BandStatsEmbedder()
        emb = BandStatsEmbedder(_side_bands(ALL_BANDS, check_modality(modality)))
        emb.info["modality"] = modality
        return emb
    if not Path(model).is_file():
        raise RetrievalError(
            f"checkpoint {model} not found (give a `benmm train` checkpoint or '{BAND_STATS}')"
        )
    return CheckpointEmbedder(model, device=device, modality=modality)


# ---------------------------------------------------------------------------------------- a whole store
def _names_digest(names: list[str]) -> str:
    return hashlib.sha256("\n".join(names).encode()).hexdigest()


def embed_store(
    model: str | Path,
    store: Any,
    out: str | Path,
    split: str | None = None,
    batch_size: int = 64,
    num_workers: int = 0,
    device: str = "cpu",
    recommended: bool = True,
    chunk: int = CHUNK,
    shard: tuple[int, int] = (0, 1),
    limit: int | None = None,
    on_progress: Callable[[int, int], None] | None = None,
    modality: str | None = None,
) -> EmbeddingSet | None:
    """Embed the patches of ``store`` (one split, or all) into ``out``; resumes an interrupted run.

    Returns the finished :class:`EmbeddingSet`, or ``None`` when other shards still have chunks to do.
    ``on_progress(done, total)`` is called after every batch (the CLI draws a progress bar with it).
    """
    from benmm.data.dataset import BigEarthNetDataset
    from benmm.data.loading import batched_loader
    from benmm.store import Store

    idx_shard, n_shards = shard
    if not 0 <= idx_shard < n_shards:
        raise RetrievalError(f"shard must be i/n with 0 <= i < n, got {idx_shard}/{n_shards}")
    st = store if isinstance(store, Store) else Store.open(store)
    emb = make_embedder(model, device=device, modality=modality)
    n_labels = int(emb.info.get("labels") or 19)
    order = str(emb.info.get("order") or "official")
    ds = BigEarthNetDataset(
        st,
        modality=str(emb.info.get("modality") or "s1s2"),
        bands=emb.bands,
        split=split,
        labels=n_labels,
        order=order,
        recommended=recommended,
    )
    names = ds.names[:limit] if limit else ds.names
    if not names:
        raise RetrievalError(f"no patches to embed in {st.path} (split={split!r}, recommended={recommended})")
    root = Path(out)
    parts = root / PARTS
    parts.mkdir(parents=True, exist_ok=True)
    digest = _names_digest(names)
    info = {
        "format": FORMAT,
        "version": VERSION,
        "benmm": __version__,
        "complete": False,
        "embedder": BAND_STATS if isinstance(emb, BandStatsEmbedder) else "checkpoint",
        "checkpoint": None if isinstance(emb, BandStatsEmbedder) else str(Path(model).resolve()),
        "store": str(Path(st.path).resolve()),
        "split": split,
        "recommended": recommended,
        "labels": n_labels,
        "order": order,
        "model": emb.info,
        "modality": emb.info.get("modality"),
        "names_sha256": digest,
        "count": len(names),
        "chunk": chunk,
    }
    if (root / INFO).is_file():
        old = json.loads((root / INFO).read_text())
        if old.get("complete"):
            raise RetrievalError(f"{root} already holds finished embeddings: choose another output")
        same = all(old.get(k) == info[k] for k in ("names_sha256", "checkpoint", "embedder", "chunk"))
        same = same and old.get("modality", info["modality"]) == info["modality"]
        if not same:
            raise RetrievalError(
                f"{root} holds an unfinished run of a different model, split or chunk size; "
                "remove it or choose another output"
            )
    else:
        _atomic_text(root / INFO, json.dumps(info, indent=2, default=str))

    from safetensors.numpy import save_file

    n_chunks = (len(names) + chunk - 1) // chunk
    mine = [c for c in range(n_chunks) if c % n_shards == idx_shard]
    done = sum(min(chunk, len(names) - c * chunk) for c in mine if (parts / f"{c:06d}.safetensors").is_file())
    total = sum(min(chunk, len(names) - c * chunk) for c in mine)
    if on_progress:
        on_progress(done, total)
    for c in mine:
        target = parts / f"{c:06d}.safetensors"
        if target.is_file():
            continue
        rows = list(range(c * chunk, min((c + 1) * chunk, len(names))))
        loader = batched_loader(ds, batch_size=batch_size, num_workers=num_workers, sampler=rows)
        vecs = []
        for batch in loader:
            vecs.append(emb.features(batch))
            done += len(batch["name"])
            if on_progress:
                on_progress(done, total)
        with atomic_path(target) as tmp:
            save_file(
                {"embeddings": np.concatenate(vecs).astype(np.float32)},
                str(tmp),
                metadata={"first": names[rows[0]], "last": names[rows[-1]]},
            )
    return _assemble_once(root, ds, names, info, n_chunks)


def _assemble_once(root: Path, ds: Any, names: list[str], info: dict[str, Any], n_chunks: int
                   ) -> EmbeddingSet | None:
    """Assemble the parts when all are there, exactly once: shards finishing together take a lock on
    the folder, and whoever comes second finds the embeddings complete (and ``parts/`` gone)."""
    import fcntl

    with open(root / ".assemble.lock", "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, also if this process dies
        if (root / INFO).is_file() and json.loads((root / INFO).read_text()).get("complete"):
            return EmbeddingSet.load(root)  # another shard assembled them meanwhile
        if not all((root / PARTS / f"{c:06d}.safetensors").is_file() for c in range(n_chunks)):
            return None
        return _assemble(root, ds, names, info, n_chunks)


def _assemble(root: Path, ds: Any, names: list[str], info: dict[str, Any], n_chunks: int) -> EmbeddingSet:
    from safetensors.numpy import load_file

    from benmm.labels import decode

    vectors = np.concatenate(
        [load_file(str(root / PARTS / f"{c:06d}.safetensors"))["embeddings"] for c in range(n_chunks)]
    )
    if len(vectors) != len(names):
        raise RetrievalError(
            f"{root}: parts hold {len(vectors)} embeddings for {len(names)} patches; "
            f"remove {root / PARTS} and embed again"
        )
    meta = ds.store.metadata.set_index("patch_id")
    labels = ds.labels()[: len(names)]
    items = pd.DataFrame(
        {
            "name": names,
            "labels": [decode(v, info["labels"], info["order"]) for v in labels],
            "split": [str(s) for s in meta.loc[names, "split"]] if "split" in meta else "",
        }
    )
    write_embeddings(
        root,
        vectors,
        items,
        {**info, "assembled": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())},
        overwrite=True,
    )
    shutil.rmtree(root / PARTS, ignore_errors=True)
    return EmbeddingSet.load(root)
