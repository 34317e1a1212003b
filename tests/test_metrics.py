"""Multi-label metrics: hand-computed cases and scikit-learn on random data."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn import metrics as skm

from benmm.errors import BenmmError
from benmm.train.metrics import (
    METRIC_NAMES,
    compute_metrics,
    label_frequency_scores,
    one_error,
    per_class_metrics,
)

# 3 samples, 3 classes, computed by hand below
SCORES = np.array([[0.9, 0.2, 0.6], [0.1, 0.8, 0.4], [0.3, 0.7, 0.2]], dtype=np.float32)
TARGET = np.array([[1, 0, 0], [0, 1, 1], [1, 0, 0]], dtype=np.float32)


def test_hand_computed_case() -> None:
    m = compute_metrics(SCORES, TARGET)
    # predictions at 0.5: [1,0,1], [0,1,0], [0,1,0]
    # tp=2 (s0c0, s1c1) fp=2 (s0c2, s2c1) fn=2 (s1c2, s2c0)
    assert m["precision_micro"] == pytest.approx(0.5)
    assert m["recall_micro"] == pytest.approx(0.5)
    assert m["f1_micro"] == pytest.approx(0.5)
    assert m["hamming_loss"] == pytest.approx(4 / 9)
    # per-sample precision 1/2, 1, 0; recall 1, 1/2, 0
    assert m["precision_sample"] == pytest.approx((0.5 + 1 + 0) / 3)
    assert m["recall_sample"] == pytest.approx((1 + 0.5 + 0) / 3)
    assert m["f1_sample"] == pytest.approx((2 / 3 + 2 / 3 + 0) / 3)
    # F2 of sample 0: 5*1/(5*1 + 4*0 + 1) = 5/6; sample 1: 5/(5+4+0) = 5/9
    assert m["f2_sample"] == pytest.approx((5 / 6 + 5 / 9) / 3)
    # top labels: c0 (true), c1 (true), c1 (false)
    assert m["one_error"] == pytest.approx(1 / 3)
    # coverage: s0 needs rank 1; s1 needs c1,c2 -> rank 2; s2 needs c0 at rank 2
    assert m["coverage"] == pytest.approx((1 + 2 + 2) / 3)
    # ranking loss: s0 0 pairs wrong of 2; s1 0 of 2; s2 (c0 < c1) 1 of 2
    assert m["ranking_loss"] == pytest.approx((0 + 0 + 0.5) / 3)
    # per class AP: c0 scores .9(+) .3(+) .1 -> 1; c1 .8(+) .7 .2 -> 1; c2 .6 .4(+) .2 -> 1/2
    assert m["ap_macro"] == pytest.approx((1 + 1 + 0.5) / 3)
    assert m["n_samples"] == 3
    assert set(METRIC_NAMES) <= set(m)


def test_one_error_direct() -> None:
    import torch

    s = torch.tensor([[0.1, 0.9], [0.8, 0.2]])
    t = torch.tensor([[0, 1], [0, 1]])
    assert one_error(s, t) == pytest.approx(0.5)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_against_sklearn(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n, c = 200, 7
    target = (rng.random((n, c)) < 0.3).astype(np.float32)
    target[: c, :] = np.eye(c)  # every class has positives
    scores = np.clip(target * 0.35 + rng.random((n, c)) * 0.65, 0, 1).astype(np.float32)
    pred = (scores >= 0.5).astype(int)
    m = compute_metrics(scores, target)
    for avg in ("micro", "macro", "samples"):
        key = "sample" if avg == "samples" else avg
        assert m[f"precision_{key}"] == pytest.approx(
            skm.precision_score(target, pred, average=avg, zero_division=0), abs=1e-6)
        assert m[f"recall_{key}"] == pytest.approx(
            skm.recall_score(target, pred, average=avg, zero_division=0), abs=1e-6)
        assert m[f"f1_{key}"] == pytest.approx(skm.f1_score(target, pred, average=avg, zero_division=0),
                                               abs=1e-6)
        assert m[f"f2_{key}"] == pytest.approx(
            skm.fbeta_score(target, pred, beta=2, average=avg, zero_division=0), abs=1e-6)
    assert m["hamming_loss"] == pytest.approx(skm.hamming_loss(target, pred), abs=1e-6)
    assert m["coverage"] == pytest.approx(skm.coverage_error(target, scores), abs=1e-5)
    assert m["ranking_loss"] == pytest.approx(skm.label_ranking_loss(target, scores), abs=1e-5)
    assert m["lrap"] == pytest.approx(skm.label_ranking_average_precision_score(target, scores), abs=1e-5)
    assert m["ap_macro"] == pytest.approx(skm.average_precision_score(target, scores, average="macro"),
                                          abs=1e-5)
    assert m["ap_micro"] == pytest.approx(skm.average_precision_score(target, scores, average="micro"),
                                          abs=1e-5)
    top = scores.argmax(1)
    assert m["one_error"] == pytest.approx(float(np.mean(target[np.arange(n), top] == 0)))


def test_per_class_against_sklearn() -> None:
    rng = np.random.default_rng(5)
    n, c = 150, 4
    target = (rng.random((n, c)) < 0.4).astype(np.float32)
    target[:, 3] = 0  # a class without positives: AP undefined (NaN), support 0
    scores = rng.random((n, c)).astype(np.float32)
    rows = per_class_metrics(scores, target, ["a", "b", "c", "d"])
    pred = (scores >= 0.5).astype(int)
    f1 = skm.f1_score(target, pred, average=None, zero_division=0)
    for i, row in enumerate(rows[:3]):
        assert row["f1"] == pytest.approx(f1[i], abs=1e-6)
        assert row["ap"] == pytest.approx(skm.average_precision_score(target[:, i], scores[:, i]), abs=1e-5)
        assert row["support"] == int(target[:, i].sum())
    assert rows[3]["support"] == 0 and math.isnan(rows[3]["ap"])
    # macro AP ignores the class without positives
    m = compute_metrics(scores, target)
    assert m["ap_macro"] == pytest.approx(np.mean([r["ap"] for r in rows[:3]]), abs=1e-6)


def test_perfect_and_baseline() -> None:
    rng = np.random.default_rng(3)
    target = (rng.random((100, 5)) < 0.3).astype(np.float32)
    target[:5] = np.eye(5)
    perfect = compute_metrics(target * 0.9 + 0.05, target)
    assert perfect["ap_macro"] == pytest.approx(1.0)
    assert perfect["f1_micro"] == pytest.approx(1.0)
    # a sample without labels always has a wrong top-1 label: one-error = the share of such samples
    assert perfect["one_error"] == pytest.approx(float(np.mean(target.sum(1) == 0)))
    base = label_frequency_scores(target, 100)
    assert base.shape == (100, 5)
    m = compute_metrics(base, target)
    # a constant score per class has AP = prevalence of the class
    assert m["ap_macro"] == pytest.approx(float(target.mean(0).mean()), abs=1e-6)


def test_bad_shapes() -> None:
    with pytest.raises(BenmmError, match="must both be"):
        compute_metrics(np.zeros((3, 2)), np.zeros((3, 3)))
    with pytest.raises(BenmmError, match="no samples"):
        compute_metrics(np.zeros((0, 2)), np.zeros((0, 2)))


def test_macro_conventions_with_a_class_absent_from_targets_and_predictions() -> None:
    """Macro P/R/F: every class counts, an absent one as 0 (scikit-learn's zero_division=0); macro AP:
    only classes with a positive."""
    from sklearn.metrics import average_precision_score, precision_recall_fscore_support

    from benmm.train.metrics import compute_metrics as cm

    targets = np.array([[1, 0, 0], [0, 1, 0], [1, 1, 0], [0, 0, 0]])
    probs = np.array([[0.9, 0.2, 0.1], [0.3, 0.8, 0.2], [0.7, 0.4, 0.3], [0.2, 0.1, 0.05]])
    got = cm(probs, targets, threshold=0.5)
    p, r, f, _ = precision_recall_fscore_support(targets, probs >= 0.5, average="macro", zero_division=0)
    assert got["precision_macro"] == pytest.approx(p) and got["recall_macro"] == pytest.approx(r)
    assert got["f1_macro"] == pytest.approx(f)
    assert got["recall_macro"] == pytest.approx((1.0 + 0.5 + 0.0) / 3)  # class 2 absent: counts as 0
    ap = [average_precision_score(targets[:, c], probs[:, c]) for c in (0, 1)]
    assert got["ap_macro"] == pytest.approx(np.mean(ap))  # class 2 has no positive: left out
