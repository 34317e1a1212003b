"""The LightningModule: one shared step for train/val/test, BCE-with-logits, epoch metrics.

Validation and test metrics are computed once per epoch on the *whole* split: every rank keeps its
scores, targets and a 64-bit hash of each pair name; at epoch end they are gathered across ranks
(uneven shard sizes allowed) and de-duplicated by name hash, so the padding duplicates a
``DistributedSampler`` adds never count twice and each sample counts exactly once
(``<stage>/n_samples`` is logged so this can be checked).
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F

from benmm.errors import BenmmError
from benmm.models.registry import BenModel, ModelError, ModelSpec, build
from benmm.models.weights import load_state, read_file
from benmm.train.metrics import compute_metrics

#: what val metric selects the best checkpoint and drives early stopping
MONITOR = "val/ap_macro"


def name_hash(names: list[str]) -> torch.Tensor:
    """Stable signed 64-bit ids for pair names (blake2b), to de-duplicate gathered predictions."""
    return torch.tensor(
        [int.from_bytes(hashlib.blake2b(n.encode(), digest_size=8).digest(), "little", signed=True)
         for n in names], dtype=torch.int64)


class ClassificationTask(L.LightningModule):
    """Multi-label classification of BigEarthNet pairs with any registered model.

    ``optim``: ``optimizer`` ("adam" | "adamw" | "sgd"), ``lr``, ``weight_decay``, ``warmup_steps``,
    ``scheduler`` ("none" | "cosine"). ``data``: what a checkpoint must remember about the input
    (labels, order, class names, resample, stats, ...), saved as hyper-parameters.
    """

    def __init__(self, model: BenModel, optim: dict[str, Any] | None = None,
                 data: dict[str, Any] | None = None, threshold: float = 0.5) -> None:
        super().__init__()
        self.model = model
        self.optim = {"optimizer": "adamw", "lr": 1e-3, "weight_decay": 0.0, "warmup_steps": 0,
                      "scheduler": "none", **(optim or {})}
        self.data_info = dict(data or {})
        self.threshold = threshold
        self.save_hyperparameters({"model_spec": model.spec.to_dict(), "optim": self.optim,
                                   "data": self.data_info, "threshold": threshold})
        self._outputs: dict[str, list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]] = {}
        #: the last evaluated stage's gathered (scores, targets, name hashes), on every rank
        self.results: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        self.epoch_metrics: dict[str, dict[str, float]] = {}

    def forward(self, batch: dict[str, Any]) -> torch.Tensor:
        return self.model(batch)

    # ---- one shared step ----------------------------------------------------------------------
    def _step(self, batch: dict[str, Any], stage: str) -> torch.Tensor:
        logits = self.model(batch)
        target = batch["label"].to(logits.dtype)
        loss = F.binary_cross_entropy_with_logits(logits.float(), target.float())
        n = int(target.shape[0])
        train = stage == "train"
        self.log(f"{stage}/loss", loss, on_step=train, on_epoch=True, prog_bar=True, batch_size=n,
                 sync_dist=not train)
        if not train:
            ids = name_hash(list(batch["name"])).to(logits.device)
            self._outputs.setdefault(stage, []).append(
                (torch.sigmoid(logits.detach().float()), target.detach().float(), ids))
        return loss

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        return self._step(batch, "train")

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        return self._step(batch, "val")

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        return self._step(batch, "test")

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Any]:
        return {"name": list(batch["name"]), "probs": torch.sigmoid(self.model(batch).float()).cpu(),
                "label": batch["label"].cpu() if "label" in batch else None}

    # ---- epoch metrics over the whole split ----------------------------------------------------
    def on_validation_epoch_start(self) -> None:
        self._outputs["val"] = []

    def on_test_epoch_start(self) -> None:
        self._outputs["test"] = []

    def on_validation_epoch_end(self) -> None:
        self._epoch_end("val")

    def on_test_epoch_end(self) -> None:
        self._epoch_end("test")

    def _gather(self, x: torch.Tensor) -> torch.Tensor:
        """Concatenate ``x`` [n_rank, ...] from every rank; shards may differ in length."""
        if self.trainer.world_size <= 1:
            return x
        n = torch.tensor([x.shape[0]], device=x.device)
        sizes = torch.as_tensor(self.all_gather(n)).flatten().tolist()
        pad = max(sizes) - x.shape[0]
        if pad:
            x = torch.cat([x, x.new_zeros((pad, *x.shape[1:]))])
        gathered = torch.as_tensor(self.all_gather(x))  # [world, max_n, ...]
        return torch.cat([gathered[r, : sizes[r]] for r in range(len(sizes))])

    def _epoch_end(self, stage: str) -> None:
        outs = self._outputs.pop(stage, [])
        c = int(self.model.spec.num_classes)
        dev = self.device
        scores = torch.cat([o[0] for o in outs]) if outs else torch.zeros((0, c), device=dev)
        target = torch.cat([o[1] for o in outs]) if outs else torch.zeros((0, c), device=dev)
        ids = torch.cat([o[2] for o in outs]) if outs else torch.zeros((0,), dtype=torch.int64, device=dev)
        scores, target, ids = self._gather(scores), self._gather(target), self._gather(ids)
        ids_np = ids.cpu().numpy()
        _, first = np.unique(ids_np, return_index=True)  # padding duplicates of DistributedSampler out
        keep = np.sort(first)
        s_np, t_np = scores.cpu().numpy()[keep], target.cpu().numpy()[keep]
        self.results[stage] = (s_np, t_np, ids_np[keep])
        if len(keep) == 0:
            return
        metrics = compute_metrics(s_np, t_np, threshold=self.threshold)
        self.epoch_metrics[stage] = metrics
        for key, value in metrics.items():
            if math.isfinite(value):  # identical on every rank after the gather: no sync needed
                self.log(f"{stage}/{key}", value, prog_bar=key in ("ap_macro", "f1_micro"),
                         sync_dist=False, rank_zero_only=False)

    # ---- optimiser ---------------------------------------------------------------------------
    def configure_optimizers(self) -> Any:
        o = self.optim
        params = [p for p in self.parameters() if p.requires_grad]  # the model's, and any training head
        name = str(o["optimizer"]).lower()
        lr, wd = float(o["lr"]), float(o.get("weight_decay", 0.0))
        if name == "adam":
            opt: torch.optim.Optimizer = torch.optim.Adam(params, lr=lr, weight_decay=wd)
        elif name == "adamw":
            opt = torch.optim.AdamW(params, lr=lr, weight_decay=wd)
        elif name == "sgd":
            opt = torch.optim.SGD(params, lr=lr, weight_decay=wd, momentum=float(o.get("momentum", 0.9)))
        else:
            raise BenmmError(f"unknown optimizer {name!r}; valid: adam, adamw, sgd")
        warmup = int(o.get("warmup_steps", 0))
        sched = str(o.get("scheduler", "none")).lower()
        if sched not in ("none", "cosine"):
            raise BenmmError(f"unknown scheduler {sched!r}; valid: none, cosine")
        if sched == "none" and warmup <= 0:
            return opt
        total = max(1, int(self.trainer.estimated_stepping_batches))
        warmup = min(warmup, total - 1) if total > 1 else 0

        def factor(step: int) -> float:
            if step < warmup:
                return (step + 1) / warmup
            if sched == "cosine":
                progress = (step - warmup) / max(1, total - warmup)
                return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
            return 1.0

        lr_sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": lr_sched, "interval": "step"}}


def checkpoint_info(hparams: dict[str, Any]) -> dict[str, Any]:
    """The user-facing description of a checkpoint: model name, modality, bands, labels, data options."""
    spec = hparams.get("model_spec") or {}
    data = hparams.get("data") or {}
    return {"name": spec.get("name"), "modality": spec.get("modality"), "bands": list(spec.get("bands", [])),
            "fusion": spec.get("fusion"), "num_classes": spec.get("num_classes"),
            "options": spec.get("options", {}), "labels": data.get("labels", spec.get("num_classes")),
            "order": data.get("order", "official"), "resample": data.get("resample"),
            "stats": data.get("stats"), "class_names": data.get("class_names"),
            "threshold": hparams.get("threshold", 0.5),
            **({"retrieval": hparams["retrieval"]} if hparams.get("retrieval") else {}),
            **{k: v for k, v in data.items() if k not in ("labels", "order")}}


def load_checkpoint(path: str | Path, band_order: str | None = None) -> tuple[BenModel, dict[str, Any]]:
    """(model in eval mode, info) from a ``benmm train`` checkpoint (.ckpt), export (.safetensors), or a
    reBEN/ConfigILM hub folder (``band_order``: its release where the folder's name does not tell it;
    see :mod:`benmm.models.hub`). The one place every command loads a trained model from."""
    from benmm.models.hub import is_hub_folder, load_hub

    if is_hub_folder(path):
        return load_hub(path, band_order)
    state, extra = read_file(path)
    if "benmm" in extra:  # safetensors export
        meta = json.loads(extra["benmm"])
        hparams = {"model_spec": meta["model"], "data": meta.get("data", {}),
                   "threshold": meta.get("threshold", 0.5), "retrieval": meta.get("retrieval")}
    else:
        hparams = dict(extra.get("hyper_parameters") or {})
    if "model_spec" not in hparams:
        raise ModelError(f"{path}: not a benmm checkpoint (no model description inside); "
                         "timm or other weights go to create_model(..., weights=PATH)")
    spec = ModelSpec.from_dict(hparams["model_spec"])
    if hparams.get("retrieval"):  # a hashing or cross-modal model: its head is described beside the spec
        from benmm.models.retrieval import build_retrieval_model

        model = build_retrieval_model(spec, hparams["retrieval"])
    else:
        model = build(spec)
    load_state(model, state, str(path))
    model.eval()
    return model, checkpoint_info(hparams)
