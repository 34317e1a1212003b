"""Losses of the retrieval recipes (``hashing``, ``cross-modal``): similarity objectives and code terms.

* :func:`multilabel_contrastive` — the multi-label similarity objective. A supervised contrastive loss
  (SupCon: Khosla et al., "Supervised Contrastive Learning", NeurIPS 2020, arXiv 2004.11362) whose
  positives are weighted by how much of their label set they share with the anchor, as in Multi-Label
  Supervised Contrastive learning (MulSupCon: Zhang & Wu, AAAI 2024). Here the weight of the pair
  ``(i, j)`` is the Jaccard overlap ``|y_i & y_j| / |y_i | y_j|`` of their multi-hot labels: a pair with the
  same label set is a full positive, one sharing one of three labels a third of one, one sharing none
  only a negative. For the anchor ``i``::

      L_i = - sum_{j != i} w_ij log softmax_{j != i}(z_i . z_j / tau) / sum_{j != i} w_ij

  on L2-normalised codes ``z``; anchors without any positive in the batch are left out of the mean.
* :func:`info_nce` — the symmetric InfoNCE / CLIP loss (Radford et al., arXiv 2103.00020) for unlabelled
  S1/S2 pairs: the partner of an item in the other modality is its positive, the rest of the batch its
  negatives, as in the self-supervised cross-modal retrieval of Sumbul, Müller and Demir
  (arXiv 2202.11429).
* :func:`quantization_loss` and :func:`bit_balance_loss` — the two code terms of metric-learning deep
  hashing in remote sensing (MiLaN: Roy, Sangineto, Demir, Sebe, IEEE GRSL 2020, arXiv 1904.01258): the
  head's outputs ``u = tanh(.)`` are pushed towards ``+-1`` (so that ``sign(u)`` loses little) and every
  bit towards a zero batch mean (each bit splits the archive in half, carrying the most information).

The retrieval task can add (``retrieval.classification`` > 0, off by default; labels supervision only)
the binary cross-entropy of a linear label classifier on the codes (a training-only layer), as Deep
Supervised Discrete Hashing does (DSDH: Li, Sun, He, Tan, NeurIPS 2017, papers.nips.cc/paper/6842):
codes that predict the labels keep the label semantics; a cross-modal model's sides share the classifier.

Written out here rather than taken from a metric-learning library because none that benmm installs has
the label-weighted multi-label form; each function is a few tensor lines, tested for its gradient's
direction in ``tests/test_losses.py``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def label_overlap(a: torch.Tensor, b: torch.Tensor | None = None) -> torch.Tensor:
    """Jaccard overlap ``[N, M]`` of the multi-hot label rows of ``a`` [N, C] and ``b`` [M, C] (0 where
    both label sets are empty)."""
    b = a if b is None else b
    a, b = (a > 0).float(), (b > 0).float()
    inter = a @ b.T
    union = a.sum(1, keepdim=True) + b.sum(1)[None] - inter
    return torch.where(union > 0, inter / union.clamp_min(1.0), torch.zeros_like(inter))


def multilabel_contrastive(codes: torch.Tensor, labels: torch.Tensor, temperature: float = 0.2
                           ) -> torch.Tensor:
    """The label-weighted supervised contrastive loss of ``codes`` [N, D] with multi-hot ``labels``
    [N, C] (see the module docstring). Returns 0 (with a gradient graph) when no anchor has a positive."""
    z = F.normalize(codes.float(), dim=1)
    n = z.shape[0]
    eye = torch.eye(n, dtype=torch.bool, device=z.device)
    logits = (z @ z.T / temperature).masked_fill(eye, float("-inf"))
    log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)
    weight = label_overlap(labels).to(z.device).masked_fill(eye, 0.0)
    total = weight.sum(1)
    has = total > 0
    if not bool(has.any()):
        return codes.sum() * 0.0
    per_anchor = -(weight * log_prob.masked_fill(eye, 0.0)).sum(1)[has] / total[has]
    return per_anchor.mean()


def info_nce(a: torch.Tensor, b: torch.Tensor, temperature: float = 0.1) -> torch.Tensor:
    """Symmetric InfoNCE of paired rows: ``a[i]`` and ``b[i]`` are positives, every other row of the
    other side a negative (CLIP's loss)."""
    za, zb = F.normalize(a.float(), dim=1), F.normalize(b.float(), dim=1)
    logits = za @ zb.T / temperature
    target = torch.arange(len(za), device=za.device)
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))


def quantization_loss(u: torch.Tensor) -> torch.Tensor:
    """Mean ``(|u| - 1)^2``: zero when every output is exactly +-1 (its sign then loses nothing)."""
    return ((u.float().abs() - 1.0) ** 2).mean()


def bit_balance_loss(u: torch.Tensor) -> torch.Tensor:
    """Mean over bits of the squared batch mean of each bit: zero when every bit is half +1, half -1."""
    return (u.float().mean(0) ** 2).mean()
