"""matplotlib figures of an experiment: the results per setting, per-class gains, score vs fraction."""

from __future__ import annotations

import textwrap
from collections import defaultdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

if TYPE_CHECKING:
    from benmm.train.experiment.rows import Row


def _save(fig: Any, path: Path) -> Path:
    from benmm.atomic import atomic_path

    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return path


def results_plot(rows: list[Row], path: Path, title: str) -> Path:
    """Macro AP (mean ± std over seeds) per setting; published figures as red diamonds."""
    from benmm.train.experiment.rows import REPORTED_LABEL, describe

    fig, ax = plt.subplots(figsize=(9, 0.45 * len(rows) + 1.6))
    y = list(range(len(rows)))
    means = [r.mean("ap_macro") for r in rows]
    errs = [r.std("ap_macro") if r.std("ap_macro") == r.std("ap_macro") else 0.0 for r in rows]
    ax.barh(y, means, xerr=errs, color="#4C72B0", alpha=0.85, capsize=3)
    shown = False
    for i, r in enumerate(rows):
        if r.reported:
            ax.plot(r.reported["metrics"]["ap_macro"], i, "D", color="#C44E52",
                    label=None if shown else REPORTED_LABEL)
            shown = True
    ax.set_yticks(y, [describe(r) for r in rows], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("macro AP (test)")
    ax.set_xlim(0, 1)
    ax.set_title(textwrap.fill(title, 70), fontsize=9)
    if shown:
        ax.legend(fontsize=8, loc="lower right")
    return _save(fig, path)


def classes_plot(compared: list[tuple[Row, Row, list[dict[str, Any]]]], path: Path) -> Path:
    """Per-class AP gain of b over a, one panel per compared pair (first four)."""
    from benmm.train.experiment.rows import describe

    shown = compared[:4]
    n_classes = max(len(d) for _, _, d in shown)
    fig, axes = plt.subplots(1, len(shown), figsize=(5.5 * len(shown), 0.28 * n_classes + 1.8), squeeze=False)
    for ax, (ra, rb, diffs) in zip(axes[0], shown, strict=True):
        gains = [d["ap_gain"] if d["ap_gain"] == d["ap_gain"] else 0.0 for d in diffs]
        ax.barh(range(len(diffs)), gains, color=["#55A868" if g >= 0 else "#C44E52" for g in gains])
        ax.set_yticks(range(len(diffs)), [d["class"][:38] for d in diffs], fontsize=7)
        ax.invert_yaxis()
        ax.axvline(0, color="black", lw=0.8)
        ax.set_xlabel("AP gain (b - a)")
        ax.set_title(f"b: {describe(rb)}\na: {describe(ra)}", fontsize=7)
    return _save(fig, path)


def fraction_plot(rows: list[Row], path: Path, title: str) -> Path:
    """Macro AP vs the fraction of the training split, one line per setting otherwise equal."""
    lines: dict[str, list[tuple[float, float, float]]] = defaultdict(list)
    for r in rows:
        s = r.setting
        key = f"{s['model']} {s['modality']} L{s['labels']} {r.init_label} (on {r.scored_on})"
        std = r.std("ap_macro")
        lines[key].append((float(s["fraction"]), r.mean("ap_macro"), std if std == std else 0.0))
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for key, pts in lines.items():
        pts.sort()
        ax.errorbar([p[0] for p in pts], [p[1] for p in pts], yerr=[p[2] for p in pts], marker="o",
                    capsize=3, label=key)
    ax.set_xscale("log")
    ax.set_xlabel("fraction of the training split")
    ax.set_ylabel("macro AP (test)")
    ax.set_title(textwrap.fill(title, 70), fontsize=9)
    ax.legend(fontsize=7)
    return _save(fig, path)
