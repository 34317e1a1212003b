"""Embedding a store through Lightning's predict loop (``Trainer.predict``) with a prediction writer.

Lightning spreads the rows over devices and nodes (``devices``, ``num_nodes``, ``strategy``): in the
predict stage it wraps the sampler in its ``UnrepeatedDistributedSamplerWrapper``, so every row goes to
exactly one rank, with no padding duplicates. :class:`PartWriter` (a ``BasePredictionWriter``) receives
each batch's dataset row indices (``batch_indices``) and writes every ``chunk`` rows a part file
atomically to ``parts/`` (safetensors: ``rows`` int64, ``embeddings`` float32, optionally ``codes``
uint8). A restarted run predicts only the rows no part holds yet, whatever the number of ranks was
before; the caller assembles the parts once every row is there (:mod:`benmm.retrieval.embed`).

Nothing here knows the embedders: the task calls ``embedder.embed_batch(batch) -> Tensor | ndarray``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Final

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import BasePredictionWriter

from benmm.atomic import atomic_path

PART_GLOB: Final = "part-*.safetensors"


class EmbedTask(L.LightningModule):
    """``predict_step`` = the embedder on one batch; the embedder's network (if any) is a submodule, so
    Lightning moves it to the rank's device."""

    def __init__(self, embedder: Any) -> None:
        super().__init__()
        self.embedder = embedder
        net = getattr(embedder, "model", None)
        self.net = net if isinstance(net, torch.nn.Module) else None

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        out = self.embedder.embed_batch(batch)
        return out if isinstance(out, torch.Tensor) else torch.from_numpy(np.asarray(out))


class PartWriter(BasePredictionWriter):
    """Buffers each batch's rows and embeddings; writes a part atomically every ``chunk`` rows and at
    the end of the rank's share. ``codes=True`` also stores the packed signs (``embedding > 0``)."""

    def __init__(self, parts: Path, chunk: int, codes: bool,
                 on_progress: Callable[[int], None] | None = None) -> None:
        super().__init__(write_interval="batch")
        self.parts, self.chunk, self.codes = Path(parts), int(chunk), bool(codes)
        self.on_progress = on_progress
        self._rows: list[np.ndarray] = []
        self._vecs: list[np.ndarray] = []

    def write_on_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, prediction: Any,
                           batch_indices: Sequence[int] | None, batch: Any, batch_idx: int,
                           dataloader_idx: int = 0) -> None:
        if batch_indices is None:  # Lightning gives them in the predict stage; guard a future change
            raise RuntimeError("Lightning passed no batch indices to the prediction writer")
        self._rows.append(np.asarray(batch_indices, dtype=np.int64))
        self._vecs.append(prediction.detach().float().cpu().numpy())
        if self.on_progress:
            self.on_progress(len(self._rows[-1]))
        if sum(len(r) for r in self._rows) >= self.chunk:
            self.flush(trainer.global_rank)

    def on_predict_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.flush(trainer.global_rank)
        trainer.strategy.barrier("benmm-embed-parts")  # every rank's parts are on disk before assembly

    def flush(self, rank: int) -> None:
        if not self._rows:
            return
        from safetensors.numpy import save_file

        rows, vecs = np.concatenate(self._rows), np.concatenate(self._vecs).astype(np.float32)
        tensors = {"rows": rows, "embeddings": vecs}
        if self.codes:
            tensors["codes"] = np.packbits(vecs > 0, axis=1)
        target = self.parts / f"part-r{rank:04d}-{time.time_ns()}-{os.getpid()}.safetensors"
        with atomic_path(target) as tmp:
            save_file(tensors, str(tmp), metadata={"rank": str(rank)})
        self._rows, self._vecs = [], []


def done_rows(parts: Path) -> np.ndarray:
    """Row indices already held by part files (each file is complete: parts are written atomically)."""
    from safetensors import safe_open

    out = [np.zeros(0, np.int64)]
    for p in sorted(parts.glob(PART_GLOB)):
        with safe_open(str(p), "np") as fh:
            out.append(fh.get_tensor("rows"))
    return np.concatenate(out)


def read_parts(parts: Path) -> Iterator[tuple[str, dict[str, np.ndarray]]]:
    """``(rank that wrote it, arrays)`` of every part file."""
    from safetensors import safe_open

    for p in sorted(parts.glob(PART_GLOB)):
        with safe_open(str(p), "np") as fh:
            rank = (fh.metadata() or {}).get("rank", "?")
            yield rank, {k: fh.get_tensor(k) for k in fh.keys()}  # noqa: SIM118 (safe_open is no dict)


@contextlib.contextmanager
def _quiet_lightning() -> Iterator[None]:
    """Lightning's start-up lines (GPU available, TPU ...) say nothing about embedding: hide them."""
    loggers = [logging.getLogger(n) for n in ("lightning.pytorch", "lightning.fabric", "lightning")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r".*LeafSpec.*")  # Lightning vs newer torch, harmless
            warnings.filterwarnings("ignore", message=r".*does not have many workers.*")  # --workers says it
            yield
    finally:
        for lg, lvl in zip(loggers, levels, strict=True):
            lg.setLevel(lvl)


def run_predict(embedder: Any, loader: Any, parts: Path, chunk: int, codes: bool, *,
                accelerator: str = "cpu", devices: Any = 1, num_nodes: int = 1, strategy: str = "auto",
                on_progress: Callable[[int], None] | None = None) -> bool:
    """Predict every row the loader's sampler yields into part files; True on the global rank 0 (the
    process that should assemble), False on the others (``strategy="ddp"`` runs this on every rank)."""
    spawn = "spawn" in str(strategy)
    writer = PartWriter(parts, chunk, codes, None if spawn else on_progress)  # a closure does not pickle
    with _quiet_lightning():
        trainer = L.Trainer(accelerator=accelerator, devices=devices, num_nodes=num_nodes, strategy=strategy,
                            logger=False, enable_checkpointing=False, enable_progress_bar=False,
                            enable_model_summary=False, callbacks=[writer], inference_mode=True)
        trainer.predict(EmbedTask(embedder), dataloaders=loader, return_predictions=False)
    return bool(trainer.is_global_zero)
