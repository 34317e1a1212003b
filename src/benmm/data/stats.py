"""Per-band statistics of a dataset (``benmm stats``), streamed over batches."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from benmm.bands import BandStats
from benmm.data.loading import batched_loader
from benmm.data.transforms import TransformError


def compute_stats(dataset: Any, name: str = "custom", source: str | None = None, batch_size: int = 64,
                  num_workers: int = 0, progress: Callable[[int], None] | None = None) -> BandStats:
    """Per-band mean and std over every pixel of every sample of ``dataset`` (a
    :class:`~benmm.data.BigEarthNetDataset`), at native size, streamed batch by batch.

    Batches are combined with Chan et al.'s parallel update in float64 (no catastrophic cancellation of
    the sum-of-squares shortcut). The std is the population std. ``progress(n)`` is called with the
    number of pairs done after each batch.
    """
    from torch.utils.data import DataLoader

    count: dict[str, float] = {}
    mean: dict[str, float] = {}
    m2: dict[str, float] = {}
    loader: Iterable[dict[str, Any]] | DataLoader[Any] = batched_loader(
        dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    for batch in loader:
        for key, (group, _) in dataset.layout.items():
            x = batch[key].double()
            n_b = float(x.shape[0] * x.shape[2] * x.shape[3])
            m_b = x.mean(dim=(0, 2, 3))
            q_b = ((x - m_b.view(1, -1, 1, 1)) ** 2).sum(dim=(0, 2, 3))
            for ch, band in enumerate(group):
                n_a, m_a, q_a = count.get(band, 0.0), mean.get(band, 0.0), m2.get(band, 0.0)
                n = n_a + n_b
                delta = float(m_b[ch]) - m_a
                mean[band] = m_a + delta * n_b / n
                m2[band] = q_a + float(q_b[ch]) + delta * delta * n_a * n_b / n
                count[band] = n
        if progress is not None:
            progress(len(batch["name"]))
    if not count:
        raise TransformError("cannot compute band statistics over an empty dataset (no pairs selected)")
    order = [b for b in dataset.bands if b in count]  # canonical band order
    src = source or f"benmm stats over {len(dataset)} pairs"
    return BandStats(name=name, source=src, mean={b: mean[b] for b in order},
                     std={b: float(np.sqrt(m2[b] / count[b])) for b in order})
