"""Plots for evaluation reports (matplotlib, Agg backend, PNG files): per-class F1/AP bars,
precision-recall curves, training curves from the CSV logs, and RGB / SAR renders of a pair."""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, never a window (servers, CI)
import matplotlib.pyplot as plt
import numpy as np


def _save(fig: Any, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _short(name: str, width: int = 40) -> str:
    return name if len(name) <= width else name[: width - 1] + "…"


def per_class_bars(rows: Sequence[dict[str, Any]], path: str | Path, title: str = "") -> Path:
    """Horizontal bars of F1 and AP per class (support in the labels)."""
    names = [f"{_short(str(r['class']))} ({r['support']})" for r in rows]
    f1 = [r["f1"] for r in rows]
    ap = [0.0 if math.isnan(r["ap"]) else r["ap"] for r in rows]
    y = np.arange(len(rows))
    fig, ax = plt.subplots(figsize=(9, 0.32 * len(rows) + 1.5))
    ax.barh(y - 0.2, ap, height=0.4, label="AP")
    ax.barh(y + 0.2, f1, height=0.4, label="F1")
    ax.set_yticks(y, names, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel("score (class support in brackets)")
    ax.legend(loc="lower right")
    ax.set_title(title or "per-class AP and F1")
    return _save(fig, Path(path))


def pr_curves(scores: np.ndarray, targets: np.ndarray, class_names: Sequence[str], path: str | Path,
              title: str = "") -> Path:
    """Precision-recall curve of every class with positives, plus the micro-averaged curve."""
    import torch
    from torchmetrics.functional.classification import binary_precision_recall_curve

    fig, ax = plt.subplots(figsize=(8, 6))
    s = torch.as_tensor(scores).float()
    t = torch.as_tensor(targets).long()
    cmap = plt.get_cmap("tab20")
    for i, name in enumerate(class_names):
        if int(t[:, i].sum()) == 0:
            continue
        p, r, _ = binary_precision_recall_curve(s[:, i], t[:, i])
        ax.plot(r.numpy(), p.numpy(), lw=0.9, color=cmap(i % 20), label=name[:28])
    p, r, _ = binary_precision_recall_curve(s.flatten(), t.flatten())
    ax.plot(r.numpy(), p.numpy(), lw=2.5, color="black", label="micro average")
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_title(title or "precision-recall curves")
    ax.legend(fontsize=5.5, ncol=2, loc="lower left")
    return _save(fig, Path(path))


def read_csv_log(path: str | Path) -> dict[str, list[tuple[float, float]]]:
    """Lightning CSV log -> metric -> [(epoch, value)] (step rows of ``*_step`` metrics are dropped)."""
    out: dict[str, list[tuple[float, float]]] = {}
    with open(path, newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            epoch = float(row.get("epoch") or 0)
            for key, value in row.items():
                if key in ("epoch", "step") or not value or key.endswith("_step"):
                    continue
                out.setdefault(key, []).append((epoch, float(value)))
    return out


def training_curves(log_csv: str | Path, path: str | Path, title: str = "") -> Path | None:
    """Loss (train/val) and val macro/micro AP per epoch; None when the log has no epoch rows."""
    log = read_csv_log(log_csv)
    loss_keys: list[str] = [k for k in ("train/loss_epoch", "train/loss", "val/loss") if k in log]
    ap_keys: list[str] = [k for k in ("val/ap_macro", "val/ap_micro", "val/f1_micro") if k in log]
    if not loss_keys and not ap_keys:
        return None
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4))
    for key in loss_keys:
        e, v = zip(*log[key], strict=True)
        a1.plot(np.array(e) + 1, v, marker="o", label=key)
    a1.set_xlabel("epoch")
    a1.set_ylabel("BCE loss")
    a1.legend()
    for key in ap_keys:
        e, v = zip(*log[key], strict=True)
        a2.plot(np.array(e) + 1, v, marker="o", label=key)
    a2.set_xlabel("epoch")
    a2.set_ylim(0, 1)
    a2.legend()
    fig.suptitle(title or "training curves")
    return _save(fig, Path(path))


def summary_bars(rows: Sequence[dict[str, Any]], path: str | Path,
                 keys: Sequence[str] = ("ap_macro", "ap_micro", "f1_micro"), title: str = "") -> Path:
    """Grouped bars comparing runs (``rows``: dicts with ``name`` and metric values)."""
    x = np.arange(len(rows))
    width = 0.8 / len(keys)
    fig, ax = plt.subplots(figsize=(1.6 * len(rows) + 2, 4))
    for j, key in enumerate(keys):
        ax.bar(x + (j - (len(keys) - 1) / 2) * width, [float(r.get(key, 0) or 0) for r in rows], width,
               label=key)
    ax.set_xticks(x, [str(r["name"]) for r in rows])
    ax.set_ylim(0, 1)
    ax.legend()
    ax.set_title(title or "test metrics")
    return _save(fig, Path(path))


def render_pair(bands: dict[str, np.ndarray], path: str | Path, title: str = "") -> Path:
    """True-colour (B04/B03/B02) and SAR (VV, VH, VV-VH) renders of one pair, side by side, on the fixed
    scales of :mod:`benmm.render` (the service's thumbnails), so that two pairs' images compare."""
    from benmm.render import S2_RGB, false_colour_s1, true_colour

    panels = []
    if all(b in bands for b in S2_RGB):
        panels.append(("S2 RGB", true_colour(bands)))
    if "VV" in bands and "VH" in bands:
        panels.append(("S1 VV/VH/VV-VH", false_colour_s1(bands)))
    fig, axes = plt.subplots(1, max(1, len(panels)), figsize=(3.2 * max(1, len(panels)), 3.4))
    axes = np.atleast_1d(axes)
    for ax, (name, img) in zip(axes, panels, strict=False):
        ax.imshow(img)
        ax.set_title(name, fontsize=8)
        ax.axis("off")
    fig.suptitle(title, fontsize=7)
    return _save(fig, Path(path))
