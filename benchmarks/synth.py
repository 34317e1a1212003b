"""Synthetic archive: generation rate and learnability (macro AP, 19 classes) of S1, S2 and S1+S2.

    python benchmarks/synth.py --pairs 1500 --epochs 12 --workers 2

Prints two tables: pairs/s of ``synthesize`` (v1 and reben layouts), then test macro AP of the
label-frequency baseline, a logistic regression on per-band statistics, and a tiny CNN trained from
scratch on CPU, for each modality. The class signal is good when S1+S2 > S2 > S1 > frequency.
"""

from __future__ import annotations

import argparse
import os
import resource
import tempfile
import time

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import average_precision_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from torch import nn

from benmm.bands import S1_BANDS, S2_BANDS
from benmm.labels import LABELS_19, to_19
from benmm.synth import archive as synth


def _cpu() -> float:
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def rate(pairs: int, workers: int) -> list[tuple[str, float, float]]:
    """(layout, wall-clock pairs/s, CPU ms per pair); the CPU figure does not depend on machine load."""
    synth.pair_specs(1, seed=1)  # load the official tables outside the timing
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        for layout in synth.LAYOUTS:
            cpu = _cpu()
            summary = synth.synthesize(os.path.join(tmp, layout), pairs=pairs, seed=1, layout=layout,  # type: ignore[arg-type]
                                       workers=workers)
            out.append((layout, summary.rate, (_cpu() - cpu) / pairs * 1e3))
    return out


def arrays(pairs: list[synth.SynthPair]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """S2 (12 bands on a 60x60 grid, log DN), S1 (2 bands 60x60, dB/10), labels [N, 19]."""
    s2, s1 = [], []
    for p in pairs:
        bands = []
        for b in S2_BANDS:
            x = np.log1p(p.bands[b].astype(np.float32))
            if x.shape[0] == 120:
                x = x.reshape(60, 2, 60, 2).mean(axis=(1, 3))
            elif x.shape[0] == 20:
                x = np.kron(x, np.ones((3, 3), np.float32))
            bands.append(x)
        s2.append(np.stack(bands))
        s1.append(np.stack([p.bands[b].reshape(60, 2, 60, 2).mean(axis=(1, 3)) / 10 for b in S1_BANDS]))
    y = np.array([[n in to_19(p.labels43) for n in LABELS_19] for p in pairs], dtype=np.float32)
    return np.stack(s2).astype(np.float32), np.stack(s1).astype(np.float32), y


def macro_ap(y: np.ndarray, score: np.ndarray) -> float:
    cols = [c for c in range(y.shape[1]) if 0 < y[:, c].sum() < len(y)]
    return float(np.mean([average_precision_score(y[:, c], score[:, c]) for c in cols]))


def tiny_cnn(x_tr: np.ndarray, y_tr: np.ndarray, x_te: np.ndarray, epochs: int) -> np.ndarray:
    torch.manual_seed(0)
    mean = x_tr.mean(axis=(0, 2, 3), keepdims=True)
    std = x_tr.std(axis=(0, 2, 3), keepdims=True) + 1e-6
    xt, xe = torch.from_numpy((x_tr - mean) / std), torch.from_numpy((x_te - mean) / std)
    yt = torch.from_numpy(y_tr)
    net = nn.Sequential(
        nn.Conv2d(xt.shape[1], 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(64, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(),
        nn.AdaptiveMaxPool2d(1), nn.Flatten(), nn.Linear(64, y_tr.shape[1]),
    )
    opt = torch.optim.AdamW(net.parameters(), lr=3e-3, weight_decay=1e-4)
    loss_fn = nn.BCEWithLogitsLoss()
    for _ in range(epochs):
        net.train()
        for idx in torch.randperm(len(xt)).split(64):
            opt.zero_grad()
            loss_fn(net(xt[idx]), yt[idx]).backward()
            opt.step()
    net.eval()
    with torch.no_grad():
        return torch.sigmoid(torch.cat([net(b) for b in xe.split(256)])).numpy()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--pairs", type=int, default=1500)
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--rate-pairs", type=int, default=2000)
    args = ap.parse_args()
    torch.set_num_threads(args.workers)

    print("| layout | pairs | workers | pairs/s (wall) | CPU ms/pair | pairs/s if the cores were idle |")
    print("| --- | --- | --- | --- | --- | --- |")
    for layout, r, ms in rate(args.rate_pairs, args.workers) if args.rate_pairs else []:
        print(f"| {layout} | {args.rate_pairs} | {args.workers} | {r:,.0f} | {ms:.1f} | "
              f"{args.workers * 1e3 / ms:,.0f} |")

    start = time.perf_counter()
    pairs = [synth.render(s, seed=5) for s in synth.pair_specs(args.pairs, seed=5)]
    s2, s1, y = arrays(pairs)
    test = np.arange(len(y)) % 4 == 0
    print(f"\nrendered {len(pairs)} pairs in {time.perf_counter() - start:.1f} s; "
          f"{y.sum(1).mean():.2f} labels (19-class) per patch; test = {test.sum()} patches")
    base = np.tile(y[~test].mean(0), (test.sum(), 1))
    print("\n| modality | frequency | logistic regression (band stats) | tiny CNN |")
    print("| --- | --- | --- | --- |")
    for name, x in (("S1", s1), ("S2", s2), ("S1+S2", np.concatenate([s2, s1], axis=1))):
        feats = np.concatenate([x.mean((2, 3)), x.std((2, 3)), np.percentile(x, 10, (2, 3)),
                                np.percentile(x, 90, (2, 3))], axis=1)
        lr = np.zeros_like(base)
        for c in range(y.shape[1]):
            if 0 < y[~test, c].sum() < (~test).sum():
                model = make_pipeline(StandardScaler(), LogisticRegression(C=0.5, max_iter=2000))
                lr[:, c] = model.fit(feats[~test], y[~test, c]).predict_proba(feats[test])[:, 1]
        cnn = tiny_cnn(x[~test], y[~test], x[test], args.epochs)
        print(f"| {name} | {macro_ap(y[test], base):.3f} | {macro_ap(y[test], lr):.3f} | "
              f"{macro_ap(y[test], cnn):.3f} |")


if __name__ == "__main__":
    main()
