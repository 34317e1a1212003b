"""The retrieval losses: values by hand, and gradients that move codes the way the objective says."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from benmm.train.losses import (
    bit_balance_loss,
    info_nce,
    label_overlap,
    multilabel_contrastive,
    quantization_loss,
)


def _step(x: torch.Tensor, loss_fn, lr: float = 0.1) -> torch.Tensor:  # type: ignore[no-untyped-def]
    x = x.clone().requires_grad_(True)
    loss_fn(x).backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    return (x - lr * x.grad).detach()


def _cos(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(F.cosine_similarity(a[None], b[None])[0])


def test_label_overlap_is_jaccard() -> None:
    y = torch.tensor([[1, 1, 0, 0], [1, 0, 1, 0], [0, 0, 0, 1], [0, 0, 0, 0]], dtype=torch.float32)
    w = label_overlap(y)
    assert w[0, 1] == pytest.approx(1 / 3) and w[0, 0] == 1 and w[0, 2] == 0
    assert w[3, 3] == 0 and w[2, 3] == 0  # no labels: no similarity, no NaN


def test_contrastive_pulls_items_sharing_labels_and_pushes_the_others() -> None:
    torch.manual_seed(0)
    y = torch.tensor([[1, 1, 0], [1, 1, 0], [0, 0, 1], [0, 0, 1]], dtype=torch.float32)
    x = torch.randn(4, 8)
    after = _step(x, lambda c: multilabel_contrastive(c, y, temperature=0.5))
    assert _cos(after[0], after[1]) > _cos(x[0], x[1])  # same labels: pulled together
    assert _cos(after[2], after[3]) > _cos(x[2], x[3])
    assert _cos(after[0], after[2]) < _cos(x[0], x[2])  # no label shared: pushed apart


def test_contrastive_weights_by_shared_labels() -> None:
    """An anchor between an item with its label set and an item sharing one of its two labels, both
    equally far: its gradient turns it towards the one sharing more."""
    y = torch.tensor([[1, 1, 0, 0], [1, 1, 0, 0], [1, 0, 0, 1], [0, 0, 1, 0]], dtype=torch.float32)
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, -1.0], [-1.0, 0.0]], requires_grad=True)
    multilabel_contrastive(x, y, temperature=0.5).backward()
    assert x.grad is not None
    anchor = (x[0] - 0.1 * x.grad[0]).detach()
    assert _cos(anchor, x[1].detach()) > _cos(anchor, x[2].detach())  # full match: pulled harder
    # no anchor with any positive: zero, and still differentiable
    lonely = torch.eye(3).requires_grad_(True)
    loss = multilabel_contrastive(lonely, torch.eye(3))
    loss.backward()
    assert float(loss) == 0.0


def test_info_nce_pulls_partners_together() -> None:
    torch.manual_seed(1)
    a, b = torch.randn(5, 8), torch.randn(5, 8)
    joint = torch.cat([a, b])
    after = _step(joint, lambda z: info_nce(z[:5], z[5:], temperature=0.5))
    for i in range(5):
        assert _cos(after[i], after[5 + i]) > _cos(a[i], b[i])
    aligned = info_nce(a, a + 0.01 * torch.randn(5, 8))
    assert aligned < info_nce(a, b)  # partners alike: lower loss than strangers


def test_quantization_pushes_outputs_to_plus_minus_one() -> None:
    u = torch.tensor([[0.5, -0.3, 1.4, -1.6]])
    after = _step(u, quantization_loss, lr=0.5)
    assert (after[0, :2].abs() > u[0, :2].abs()).all()  # inside (-1, 1): outwards
    assert (after[0, 2:].abs() < u[0, 2:].abs()).all()  # beyond: back towards +-1
    assert float(quantization_loss(torch.tensor([[1.0, -1.0]]))) == 0.0


def test_bit_balance_pushes_each_bit_to_zero_mean() -> None:
    u = torch.tensor([[0.9, 0.5], [0.7, -0.5], [0.8, 0.5]])
    after = _step(u, bit_balance_loss, lr=1.0)
    assert abs(float(after[:, 0].mean())) < abs(float(u[:, 0].mean()))
    assert float(bit_balance_loss(torch.tensor([[1.0, -1.0], [-1.0, 1.0]]))) == 0.0
