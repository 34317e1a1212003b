"""The multi-label metrics of the BigEarthNet papers, computed on whole prediction sets.

``compute_metrics(probs, targets)`` returns precision, recall, F1 and F2 (micro, macro, sample
averaged), Hamming loss, one-error, coverage, ranking loss, label-ranking average precision (LRAP) and
micro/macro average precision; ``per_class_metrics`` gives precision/recall/F1/AP/support per class.

torchmetrics computes everything it has (P/R/F-beta micro/macro, Hamming, coverage, ranking loss,
LRAP, AP). Hand-written, because torchmetrics lacks them: the sample-averaged P/R/F-beta (scikit-learn's
``average="samples"`` with ``zero_division=0``) and one-error. Conventions (documented, tested against
scikit-learn): coverage is scikit-learn's ``coverage_error`` (the number of top-ranked labels needed to
cover all true labels, >= 1); macro P/R/F average over **all** classes, a class without positive
samples or predictions scoring 0 (scikit-learn's ``average="macro"`` with ``zero_division=0``, and
torchmetrics'); macro AP averages over the classes with at least one positive sample (a class absent
from the evaluated set has no defined AP: NaN in the per-class table, left out of the mean). On a
country or season subset where classes are absent, macro P/R/F are therefore lower than macro AP's
coverage of classes would suggest; the per-class table shows which classes are absent.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torchmetrics.functional.classification import (
    multilabel_average_precision,
    multilabel_coverage_error,
    multilabel_fbeta_score,
    multilabel_hamming_distance,
    multilabel_precision,
    multilabel_ranking_average_precision,
    multilabel_ranking_loss,
    multilabel_recall,
)

from benmm.errors import BenmmError

#: names of the scalar metrics, in the order reports print them
METRIC_NAMES = (
    "ap_macro", "ap_micro",
    "f1_macro", "f1_micro", "f1_sample",
    "f2_macro", "f2_micro", "f2_sample",
    "precision_macro", "precision_micro", "precision_sample",
    "recall_macro", "recall_micro", "recall_sample",
    "hamming_loss", "one_error", "coverage", "ranking_loss", "lrap",
)
#: metrics where lower is better
LOWER_IS_BETTER = frozenset({"hamming_loss", "one_error", "coverage", "ranking_loss"})


def _as_tensors(probs: Any, targets: Any) -> tuple[torch.Tensor, torch.Tensor]:
    p = torch.as_tensor(np.asarray(probs) if not isinstance(probs, torch.Tensor) else probs).float().cpu()
    t = torch.as_tensor(np.asarray(targets) if not isinstance(targets, torch.Tensor) else targets).cpu()
    if p.ndim != 2 or p.shape != t.shape:
        raise BenmmError(f"scores {tuple(p.shape)} and targets {tuple(t.shape)} must both be [N, C]")
    if p.shape[0] == 0:
        raise BenmmError("no samples to evaluate")
    return p, (t > 0.5).long()


def sample_prf(pred: torch.Tensor, target: torch.Tensor, beta: float = 1.0) -> tuple[float, float, float]:
    """Sample-averaged precision, recall, F-beta (scikit-learn ``average="samples"``, zero_division=0)."""
    pred, target = pred.bool(), target.bool()
    tp = (pred & target).sum(1).double()
    npred, ntrue = pred.sum(1).double(), target.sum(1).double()
    prec = torch.where(npred > 0, tp / npred.clamp(min=1), torch.zeros_like(tp))
    rec = torch.where(ntrue > 0, tp / ntrue.clamp(min=1), torch.zeros_like(tp))
    b2 = beta * beta
    denom = b2 * ntrue + npred  # = (1+b2) tp + b2 fn + fp
    f = torch.where(denom > 0, (1 + b2) * tp / denom.clamp(min=1), torch.zeros_like(tp))
    return float(prec.mean()), float(rec.mean()), float(f.mean())


def one_error(scores: torch.Tensor, target: torch.Tensor) -> float:
    """Fraction of samples whose top-scored label is not a true label (ties: the first class wins)."""
    top = scores.argmax(dim=1)
    return float((target.gather(1, top[:, None]).squeeze(1) == 0).double().mean())


def per_class_ap(scores: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """AP per class; NaN for classes without a positive sample."""
    c = scores.shape[1]
    with warnings.catch_warnings():  # classes without positives: NaN below, no warning needed
        warnings.filterwarnings("ignore", message="No positive samples")
        ap = multilabel_average_precision(scores, target, num_labels=c, average="none")
    ap = ap.double().clone()
    ap[target.sum(0) == 0] = float("nan")
    return ap


def compute_metrics(probs: Any, targets: Any, threshold: float = 0.5) -> dict[str, float]:
    """All scalar metrics of :data:`METRIC_NAMES` (+ ``n_samples``) for scores in [0, 1]."""
    p, t = _as_tensors(probs, targets)
    n, c = p.shape
    pred = (p >= threshold).long()
    kw: dict[str, Any] = {"num_labels": c, "threshold": threshold}
    out: dict[str, float] = {}
    for avg in ("micro", "macro"):
        out[f"precision_{avg}"] = float(multilabel_precision(p, t, average=avg, **kw))
        out[f"recall_{avg}"] = float(multilabel_recall(p, t, average=avg, **kw))
        out[f"f1_{avg}"] = float(multilabel_fbeta_score(p, t, beta=1.0, average=avg, **kw))
        out[f"f2_{avg}"] = float(multilabel_fbeta_score(p, t, beta=2.0, average=avg, **kw))
    out["precision_sample"], out["recall_sample"], out["f1_sample"] = sample_prf(pred, t, 1.0)
    out["f2_sample"] = sample_prf(pred, t, 2.0)[2]
    out["hamming_loss"] = float(multilabel_hamming_distance(p, t, average="micro", **kw))
    out["one_error"] = one_error(p, t)
    out["coverage"] = float(multilabel_coverage_error(p, t, num_labels=c))
    out["ranking_loss"] = float(multilabel_ranking_loss(p, t, num_labels=c))
    out["lrap"] = float(multilabel_ranking_average_precision(p, t, num_labels=c))
    ap = per_class_ap(p, t)
    out["ap_macro"] = float(np.nanmean(ap.numpy())) if bool(torch.isfinite(ap).any()) else float("nan")
    out["ap_micro"] = float(multilabel_average_precision(p, t, num_labels=c, average="micro"))
    out["n_samples"] = float(n)
    return {k: out[k] for k in (*METRIC_NAMES, "n_samples")}


def per_class_metrics(probs: Any, targets: Any, class_names: Sequence[str],
                      threshold: float = 0.5) -> list[dict[str, Any]]:
    """One row per class: name, precision, recall, F1, AP, support (positives), predicted positives."""
    p, t = _as_tensors(probs, targets)
    c = p.shape[1]
    if len(class_names) != c:
        raise BenmmError(f"{len(class_names)} class names for {c} classes")
    kw: dict[str, Any] = {"num_labels": c, "threshold": threshold, "average": "none"}
    prec = multilabel_precision(p, t, **kw)
    rec = multilabel_recall(p, t, **kw)
    f1 = multilabel_fbeta_score(p, t, beta=1.0, **kw)
    ap = per_class_ap(p, t)
    support = t.sum(0)
    npred = (p >= threshold).sum(0)
    return [
        {"class": name, "precision": float(prec[i]), "recall": float(rec[i]), "f1": float(f1[i]),
         "ap": float(ap[i]), "support": int(support[i]), "predicted": int(npred[i])}
        for i, name in enumerate(class_names)
    ]


def label_frequency_scores(train_targets: Any, n: int) -> np.ndarray:
    """The label-frequency baseline: every sample scored with the training frequency of each class."""
    freq = np.asarray(train_targets, dtype=np.float64).mean(axis=0)
    return np.broadcast_to(freq.astype(np.float32), (n, freq.shape[0])).copy()
