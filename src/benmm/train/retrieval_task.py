"""The LightningModule of the retrieval recipes: learned hashing and cross-modal S1 <-> S2 codes.

It is the classification task's machinery (optimiser and schedule, checkpoints, resume, DDP gathering
with the de-duplication by pair name) with another step and another epoch metric:

* training: :mod:`benmm.train.losses` — the label-weighted multi-label contrastive loss (``hashing``;
  ``cross-modal`` with ``supervision = "labels"``: over the S1 and the S2 codes of the batch together, so
  within and across modalities) or the symmetric InfoNCE of the S1/S2 partners (``supervision =
  "pairs"``: no labels), plus ``quantization`` x the quantisation term and ``balance`` x the bit-balance
  term on every code, and (labels only; off by default) ``classification`` x the BCE of a linear label
  classifier on the codes, shared by both sides of a cross-modal model (a training-only layer: not in
  the checkpoint's model);
* validation / test: every rank keeps its codes, labels and pair-name hashes; at epoch end they are
  gathered and de-duplicated, ``val_queries`` drawn queries (seeded) rank the whole split by Hamming
  distance, and mAP / NDCG / precision @K are logged per direction (``val/s1->s2/map@100``, ...).
  ``val/map@K`` is the monitor: the mAP@K of the hashing model's own modality, or the mean of S1->S2 and
  S2->S1 for a cross-modal model.

Under DDP the contrastive losses see the negatives of their own rank's batch (no gradient all-gather).
"""

from __future__ import annotations

from typing import Any, Final

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from benmm.models.registry import BenModel
from benmm.train.losses import bit_balance_loss, info_nce, multilabel_contrastive, quantization_loss
from benmm.train.retrieval_eval import direction_metrics
from benmm.train.task import ClassificationTask, name_hash

#: the [retrieval] settings a recipe may leave out
DEFAULTS: Final = {"supervision": "labels", "temperature": 0.2, "quantization": 0.1, "balance": 0.1,
                   "classification": 0.0, "k": 100, "val_queries": 2000}
CROSS: Final = (("s1", "s2"), ("s2", "s1"))


def monitor_key(k: int) -> str:
    return f"val/map@{int(k)}"


class RetrievalTask(ClassificationTask):
    """Training of a :class:`~benmm.models.retrieval.HashModel` or
    :class:`~benmm.models.retrieval.CrossModalModel` (see the module docstring)."""

    def __init__(self, model: BenModel, optim: dict[str, Any] | None = None,
                 data: dict[str, Any] | None = None, retrieval: dict[str, Any] | None = None) -> None:
        super().__init__(model, optim=optim, data=data)
        self.objective = {**DEFAULTS, **(retrieval or {})}
        self.description = model.description()  # type: ignore[operator]
        self.kind = str(self.description["kind"])
        self.sides = ("s1", "s2") if self.kind == "cross-modal" else (model.spec.modality,)
        self.monitor = monitor_key(int(self.objective["k"]))
        labelled = not (self.kind == "cross-modal" and self.objective["supervision"] == "pairs")
        self.weight_cls = float(self.objective["classification"]) if labelled else 0.0
        self.classifier = (nn.Linear(int(model.code_bits or 0), int(model.spec.num_classes))
                           if self.weight_cls > 0 else None)
        self.save_hyperparameters({"model_spec": model.spec.to_dict(), "optim": self.optim,
                                   "data": self.data_info, "threshold": self.threshold,
                                   "retrieval": self.description, "objective": self.objective})
        self._codes: dict[str, list[tuple[list[torch.Tensor], torch.Tensor, torch.Tensor]]] = {}

    def forward(self, batch: dict[str, Any]) -> torch.Tensor:
        return self.model.embed(batch)

    def _step(self, batch: dict[str, Any], stage: str) -> torch.Tensor:
        o = self.objective
        codes = [self.model.embed(batch, side) for side in self.sides]
        target = batch["label"].float()
        tau = float(o["temperature"])
        if self.kind == "cross-modal" and o["supervision"] == "pairs":
            similarity = info_nce(codes[0], codes[1], tau)
        else:
            similarity = multilabel_contrastive(torch.cat(codes), target.repeat(len(codes), 1), tau)
        quant = torch.stack([quantization_loss(c) for c in codes]).mean()
        balance = torch.stack([bit_balance_loss(c) for c in codes]).mean()
        loss = similarity + float(o["quantization"]) * quant + float(o["balance"]) * balance
        if self.classifier is not None:
            cls = torch.stack([F.binary_cross_entropy_with_logits(self.classifier(c.float()), target)
                               for c in codes]).mean()
            loss = loss + self.weight_cls * cls
            self.log(f"{stage}/classification", cls, on_step=False, on_epoch=True, batch_size=len(target),
                     sync_dist=stage != "train")
        n = int(target.shape[0])
        train = stage == "train"
        self.log(f"{stage}/loss", loss, on_step=train, on_epoch=True, prog_bar=True, batch_size=n,
                 sync_dist=not train)
        for key, value in (("similarity", similarity), ("quantization", quant), ("balance", balance)):
            self.log(f"{stage}/{key}", value, on_step=False, on_epoch=True, batch_size=n, sync_dist=not train)
        if not train:
            ids = name_hash(list(batch["name"])).to(target.device)
            self._codes.setdefault(stage, []).append(([c.detach().float() for c in codes], target, ids))
        return loss

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Any]:
        return {"name": list(batch["name"]), "embedding": self.model.embed(batch).float().cpu(),
                "label": batch["label"].cpu() if "label" in batch else None}

    def on_validation_epoch_start(self) -> None:
        self._codes["val"] = []

    def on_test_epoch_start(self) -> None:
        self._codes["test"] = []

    def _epoch_end(self, stage: str) -> None:
        outs = self._codes.pop(stage, [])
        if not outs:
            return
        c = int(self.model.spec.num_classes)
        codes = [self._gather(torch.cat([o[0][j] for o in outs])) for j in range(len(self.sides))]
        target = self._gather(torch.cat([o[1] for o in outs]) if outs else torch.zeros((0, c)))
        ids = self._gather(torch.cat([o[2] for o in outs])).cpu().numpy()
        _, first = np.unique(ids, return_index=True)  # padding duplicates of DistributedSampler out
        keep = np.sort(first)
        by_side = {s: x.cpu().numpy()[keep] for s, x in zip(self.sides, codes, strict=True)}
        labels = target.cpu().numpy()[keep]
        k, queries = int(self.objective["k"]), int(self.objective["val_queries"])
        directions = ([(s, s) for s in self.sides] + list(CROSS) if self.kind == "cross-modal"
                      else [(self.sides[0], self.sides[0])])
        per = direction_metrics(by_side, labels, directions, k, queries)
        metrics: dict[str, float] = {"n_samples": float(len(keep))}
        for direction, values in per.items():
            for m, v in values.items():
                metrics[f"{direction}/{m}@{k}"] = v
        main = [per[f"{a}->{b}"]["map"] for a, b in (CROSS if self.kind == "cross-modal" else directions)
                if f"{a}->{b}" in per]
        if main:
            metrics[f"map@{k}"] = float(np.mean(main))
        if self.kind == "hashing" and per:
            only = next(iter(per.values()))
            metrics.update({f"ndcg@{k}": only["ndcg"], f"precision@{k}": only["precision"]})
        self.epoch_metrics[stage] = metrics
        for key, value in metrics.items():  # identical on every rank after the gather: no sync needed
            self.log(f"{stage}/{key}", value, prog_bar=key == f"map@{k}", sync_dist=False,
                     rank_zero_only=False)
