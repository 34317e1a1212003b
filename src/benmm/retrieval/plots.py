"""Retrieval figures: precision/recall vs K, and a grid of example queries with their top results."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from benmm.render import render


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    return plt


def plot_pr_vs_k(results: Mapping[str, Mapping[str, Any]], path: str | Path) -> Path:
    """P@K and R@K against K for each method (e.g. ``{"model": ..., "random": ...}``)."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6), constrained_layout=True)
    for method, res in results.items():
        ks = list(res["ks"])
        style = "--" if method == "random" else "-"
        for ax, metric in zip(axes, ("precision", "recall"), strict=True):
            ax.plot(ks, [res[metric][k] for k in ks], style, marker="o", ms=3, label=method)
    for ax, title in zip(axes, ("precision@K", "recall@K"), strict=True):
        ax.set_xscale("log")
        ax.set_xticks(ks, [str(k) for k in ks])  # the measured cut-offs, not 10^0 style ticks
        ax.minorticks_off()
        ax.set_xlabel("K")
        ax.set_title(title)
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
        ax.legend()
    out = Path(path)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


def plot_examples(
    query_names: Sequence[str],
    query_labels: Sequence[Sequence[str]],
    results: Sequence[Sequence[tuple[str, float, Sequence[str]]]],
    read_pair: Callable[[str], Mapping[str, np.ndarray]],
    path: str | Path,
    mode: str = "s2",
) -> Path:
    """Rows = queries; first column the query, then its results (name, distance, labels) as thumbnails.

    A result's title is green when it shares a label with the query (relevant), red otherwise.
    """
    plt = _pyplot()
    n_rows = len(query_names)
    n_cols = 1 + max((len(r) for r in results), default=0)
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(1.9 * n_cols, 2.6 * n_rows), squeeze=False)
    for row, (qname, qlabels, hits) in enumerate(zip(query_names, query_labels, results, strict=True)):
        entries = [(qname, None, qlabels), *hits]
        for col in range(n_cols):
            ax = axes[row, col]
            ax.axis("off")
            if col >= len(entries):
                continue
            name, dist, labels = entries[col]
            try:
                ax.imshow(render(read_pair(name), mode))
            except Exception:  # a missing patch leaves an empty tile, not a failed report
                ax.text(0.5, 0.5, "no image", ha="center", va="center", fontsize=7)
            text = "\n".join(_short(lab) for lab in list(labels)[:3]) or "(no labels)"
            if dist is None:
                ax.set_title(f"query\n{text}", fontsize=6, fontweight="bold")
            else:
                relevant = bool(set(labels) & set(qlabels))
                ax.set_title(
                    f"d={dist:.3g}\n{text}", fontsize=6, color="darkgreen" if relevant else "darkred"
                )
    fig.tight_layout()
    out = Path(path)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def _short(label: str, width: int = 26) -> str:
    return label if len(label) <= width else label[: width - 1] + "…"
