"""PyTorch loading: Dataset over a store, collate, on-device batch transforms, Lightning DataModule."""

from __future__ import annotations

from benmm.data.dataset import BigEarthNetDataset, DatasetError
from benmm.data.loading import collate
from benmm.data.stats import compute_stats
from benmm.data.transforms import BatchTransform, TransformError, resample

__all__ = [
    "BatchTransform",
    "BigEarthNetDataModule",
    "BigEarthNetDataset",
    "DatasetError",
    "TransformError",
    "collate",
    "compute_stats",
    "resample",
]


def __getattr__(name: str) -> object:
    # lightning is imported only when the DataModule is asked for (keeps `import benmm.data` light)
    if name == "BigEarthNetDataModule":
        from benmm.data.datamodule import BigEarthNetDataModule

        return BigEarthNetDataModule
    raise AttributeError(f"module 'benmm.data' has no attribute {name!r}")
