"""Embeddings of store patches (``benmm embed``) and of single query patches (search, service uploads).

The directory format is :mod:`benmm.retrieval.embset` (re-exported here). One run embeds one *side*
(``modality``: ``s1``, ``s2`` or ``s1s2``) of every pair of a split; a model that makes binary codes
(``model.code_bits`` not None) also gets ``codes.npy`` (``embedding > 0``, packed).

The store is embedded through Lightning's predict loop (:mod:`benmm.retrieval.predict`): ``devices``,
``num_nodes`` and ``strategy`` spread it over GPUs and nodes. It is resumable: parts of ``chunk`` rows are
written atomically to ``parts/``; a restarted run (any number of ranks) embeds only the rows no part
holds, and the global rank 0 assembles the final files once every row is there, exactly once each.

Two embedders: a trained checkpoint (``model.embed(batch, modality)`` where the model offers it, else
``model.features(batch)`` for its own modality, after the checkpoint's own batch transform: bands,
resampling, normalisation) and ``band-stats``, a training-free baseline of per-band statistics (mean,
std, 10/50/90th percentiles of each normalised band) of the side's bands, that needs no model at all.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Final

import numpy as np
import pandas as pd

from benmm import __version__
from benmm.atomic import atomic_write
from benmm.bands import ALL_BANDS, MODALITIES, split_by_modality, stats_v1
from benmm.errors import BenmmError, RetrievalError
from benmm.retrieval.embset import (
    FORMAT,
    INFO,
    ITEMS,
    VECTORS,
    VERSION,
    EmbeddingSet,
    write_embeddings,
)

__all__ = [
    "FORMAT",
    "INFO",
    "ITEMS",
    "VECTORS",
    "VERSION",
    "BandStatsEmbedder",
    "CheckpointEmbedder",
    "EmbeddingSet",
    "embed_store",
    "make_embedder",
    "side_bands",
    "write_embeddings",
]

PARTS: Final = "parts"
CHUNK: Final = 8192
BAND_STATS: Final = "band-stats"


def side_bands(bands: tuple[str, ...], modality: str) -> tuple[str, ...]:
    """The bands of ``bands`` that belong to one side (``s1``: VV/VH, ``s2``: the S2 bands, ``s1s2``: all)."""
    s2, s1 = split_by_modality(bands)
    return {"s1": s1, "s2": s2, "s1s2": s2 + s1}[modality]


def _check_side(modality: str | None, have: tuple[str, ...], what: str) -> None:
    if modality is not None and modality not in MODALITIES:
        raise RetrievalError(f"unknown modality {modality!r}; valid: {', '.join(MODALITIES)}")
    if modality is not None and modality not in have:
        raise RetrievalError(
            f"{what} embeds modalities {', '.join(have)}, not {modality!r}: choose --modality "
            f"{' or '.join(have)}, or a model trained for {modality}"
        )


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
    """Training-free baseline: mean, std and 10/50/90th percentiles of every normalised band of a side."""

    name = BAND_STATS
    STATS: Final = 5
    modalities: tuple[str, ...] = MODALITIES
    code_bits: int | None = None

    def __init__(self, bands: tuple[str, ...] = ALL_BANDS, modality: str | None = None) -> None:
        from benmm.bands import resolve_bands

        _check_side(modality, self.modalities, "band-stats")
        chosen = resolve_bands(bands)
        self.bands = side_bands(chosen, modality) if modality else chosen
        if not self.bands:
            raise RetrievalError(f"band-stats: none of the bands {list(chosen)} is of modality {modality!r}")
        s2, s1 = split_by_modality(self.bands)
        self.modality = modality or ("s1s2" if s1 and s2 else "s1" if s1 else "s2")
        self.dim = self.STATS * len(self.bands)
        self.info: dict[str, Any] = {
            "name": BAND_STATS,
            "bands": list(self.bands),
            "labels": 19,
            "order": "official",
            "modality": self.modality,
            "modalities": list(self.modalities),
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

    def embed_batch(self, batch: Mapping[str, Any]) -> np.ndarray:
        import torch

        return self.features({k: (v.cpu() if isinstance(v, torch.Tensor) else v) for k, v in batch.items()})

    def __call__(self, bands: Mapping[str, np.ndarray]) -> np.ndarray:
        return self.features(_batch_from_bands(bands, self.bands))


class CheckpointEmbedder:
    """``model.embed(batch, modality)`` (a classifier's: its features, own modality only) of a
    ``benmm train`` checkpoint, after the checkpoint's own batch transform."""

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
        self.modalities = tuple(self.model.modalities)
        _check_side(modality, self.modalities, f"model {self.path.name} ({self.info.get('name')})")
        own = str(self.info.get("modality") or self.modalities[-1])
        self.modality = modality or (own if own in self.modalities else self.modalities[-1])
        bits = self.model.code_bits
        self.code_bits: int | None = None if bits is None else int(bits)
        self.device = torch.device(device)
        self.model.to(self.device).eval()
        self.bands = side_bands(tuple(self.info.get("bands") or ()), self.modality)
        self.name = str(self.info.get("name"))
        self.transform = BatchTransform(
            bands=self.bands,
            resample=self.info.get("resample") or "bilinear",
            stats=self.info.get("stats") or "v1",
            keep_native=bool(self.info.get("keep_native", getattr(self.model, "native_groups", False))),
        )
        self.dim = int(self.features(_batch_from_bands(_zeros(self.bands), self.bands)).shape[1])

    def embed_batch(self, batch: Mapping[str, Any]) -> Any:
        """``[B, D]`` tensor on the model's device (the batch is moved there; Lightning already did)."""
        import torch

        dev = next(self.model.parameters()).device
        moved = {k: (v.to(dev, non_blocking=True) if isinstance(v, torch.Tensor) else v)
                 for k, v in batch.items()}
        x = self.transform(moved)
        return self.model.embed(x, self.modality)

    def features(self, batch: Mapping[str, Any]) -> np.ndarray:
        import torch

        with torch.inference_mode():
            out = self.embed_batch(batch)
        return out.float().cpu().numpy()

    def __call__(self, bands: Mapping[str, np.ndarray]) -> np.ndarray:
        return self.features(_batch_from_bands(bands, self.bands))


def _zeros(bands: tuple[str, ...]) -> dict[str, np.ndarray]:
    from benmm.bands import BAND_SIZE

    return {b: np.zeros((BAND_SIZE[b], BAND_SIZE[b]), np.float32) for b in bands}


def make_embedder(model: str | Path, device: str = "cpu", modality: str | None = None
                  ) -> BandStatsEmbedder | CheckpointEmbedder:
    """``"band-stats"`` or a checkpoint path; ``modality`` picks the side (default: the model's own)."""
    if str(model) == BAND_STATS:
        return BandStatsEmbedder(modality=modality)
    if not Path(model).is_file() and not Path(model).is_dir():  # a folder: a reBEN/ConfigILM hub model
        raise RetrievalError(
            f"checkpoint {model} not found (give a `benmm train` checkpoint or '{BAND_STATS}')"
        )
    return CheckpointEmbedder(model, device=device, modality=modality)


# ---------------------------------------------------------------------------------------- a whole store
def _names_digest(names: list[str]) -> str:
    return hashlib.sha256("\n".join(names).encode()).hexdigest()


def _trainer_args(device: str, accelerator: str | None, devices: Any) -> tuple[str, Any]:
    """``device="cuda:1"`` (the single-device spelling) -> Lightning's ``("gpu", [1])``."""
    if accelerator is not None or devices is not None:
        return accelerator or "auto", 1 if devices is None else devices
    if device.startswith("cuda"):
        return "gpu", [int(device.split(":")[1])] if ":" in device else 1
    return device, 1


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
    limit: int | None = None,
    on_progress: Callable[[int, int], None] | None = None,
    modality: str | None = None,
    accelerator: str | None = None,
    devices: Any = None,
    num_nodes: int = 1,
    strategy: str = "auto",
) -> EmbeddingSet | None:
    """Embed one side (``modality``) of the patches of ``store`` (one split, or all) into ``out`` through
    ``Trainer.predict``; resumes an interrupted run.

    Returns the finished :class:`EmbeddingSet` on the global rank 0, ``None`` on the other ranks.
    ``on_progress(done, total)`` is called after every batch in single-process runs.
    """
    from benmm.data.dataset import BigEarthNetDataset
    from benmm.data.loading import batched_loader
    from benmm.retrieval.predict import done_rows, run_predict
    from benmm.store import Store

    st = store if isinstance(store, Store) else Store.open(store)
    emb = make_embedder(model, device="cpu", modality=modality)
    n_labels = int(emb.info.get("labels") or 19)
    order = str(emb.info.get("order") or "official")
    ds = BigEarthNetDataset(st, modality=emb.modality, bands=emb.bands, split=split, labels=n_labels,
                            order=order, recommended=recommended)
    names = ds.names[:limit] if limit else ds.names
    if not names:
        raise RetrievalError(f"no patches to embed in {st.path} (split={split!r}, recommended={recommended})")
    root = Path(out)
    parts = root / PARTS
    parts.mkdir(parents=True, exist_ok=True)
    is_stats = isinstance(emb, BandStatsEmbedder)
    info = {
        "format": FORMAT,
        "version": VERSION,
        "benmm": __version__,
        "complete": False,
        "embedder": BAND_STATS if is_stats else "checkpoint",
        "checkpoint": None if is_stats else str(Path(model).resolve()),
        "modality": emb.modality,
        "code_bits": emb.code_bits,
        "store": str(Path(st.path).resolve()),
        "store_hash": st.content_hash,
        "split": split,
        "recommended": recommended,
        "labels": n_labels,
        "order": order,
        "model": emb.info,
        "names_sha256": _names_digest(names),
        "count": len(names),
    }
    if (root / INFO).is_file():
        old = json.loads((root / INFO).read_text())
        if old.get("complete"):
            raise RetrievalError(f"{root} already holds finished embeddings: choose another output")
        keys = ("names_sha256", "checkpoint", "embedder", "modality")
        if not all(old.get(k) == info[k] for k in keys):
            raise RetrievalError(
                f"{root} holds an unfinished run of a different model, side or split; "
                "remove it or choose another output"
            )
    else:
        atomic_write(root / INFO, json.dumps(info, indent=2, default=str))

    done = done_rows(parts)
    todo = np.setdiff1d(np.arange(len(names)), done).tolist()
    progress = [len(names) - len(todo)]

    def step(n: int) -> None:
        progress[0] += n
        if on_progress:
            on_progress(progress[0], len(names))

    if on_progress:
        on_progress(progress[0], len(names))
    if todo:
        loader = batched_loader(ds, batch_size=batch_size, num_workers=num_workers, sampler=todo)
        acc, devs = _trainer_args(device, accelerator, devices)
        if not run_predict(emb, loader, parts, chunk, emb.code_bits is not None, accelerator=acc,
                           devices=devs, num_nodes=num_nodes, strategy=strategy, on_progress=step):
            return None
    return _assemble(root, ds, names, info)


def _assemble(root: Path, ds: Any, names: list[str], info: dict[str, Any]) -> EmbeddingSet:
    """The final files from the parts: every row exactly once (else a one-line error), then ``parts/``
    goes. Runs on one process only (the global rank 0, after the writers' barrier)."""
    from benmm.labels import decode
    from benmm.retrieval.predict import read_parts

    n = len(names)
    vectors: np.ndarray | None = None
    codes: np.ndarray | None = None
    seen = np.zeros(n, dtype=np.int64)
    per_rank: dict[str, int] = {}
    for rank, part in read_parts(root / PARTS):
        rows = part["rows"]
        per_rank[rank] = per_rank.get(rank, 0) + len(rows)
        if vectors is None:
            vectors = np.zeros((n, part["embeddings"].shape[1]), np.float32)
            if "codes" in part:
                codes = np.zeros((n, part["codes"].shape[1]), np.uint8)
        np.add.at(seen, rows, 1)
        vectors[rows] = part["embeddings"]
        if codes is not None:
            codes[rows] = part["codes"]
    if vectors is None or (seen != 1).any():
        missing, twice = int((seen == 0).sum()), int((seen > 1).sum())
        raise RetrievalError(
            f"{root / PARTS}: {missing} of {n} patches have no embedding and {twice} have several; "
            f"remove {root} and embed again"
        )
    meta = ds.store.metadata.set_index("patch_id")
    labels = ds.labels()[:n]
    items = pd.DataFrame(
        {
            "name": names,
            "labels": [decode(v, info["labels"], info["order"]) for v in labels],
            "split": [str(s) for s in meta.loc[names, "split"]] if "split" in meta else "",
        }
    )
    write_embeddings(root, vectors, items,
                     {**info, "assembled": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                      "rows_per_rank": dict(sorted(per_rank.items()))},
                     overwrite=True, codes=codes)
    shutil.rmtree(root / PARTS, ignore_errors=True)
    return EmbeddingSet.load(root)
