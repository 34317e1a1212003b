"""Checkpoints written atomically: Lightning's ``TorchCheckpointIO`` writes ``best.ckpt`` in place, so a
full disk or a kill mid-write leaves a truncated checkpoint that a later ``--resume`` trusts. This one
serialises into a temporary file beside it and renames it over the old one only when complete
(:mod:`benmm.atomic`); a failed write raises and leaves the previous checkpoint intact."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from benmm.atomic import atomic_path


class AtomicCheckpointIO(TorchCheckpointIO):
    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | os.PathLike[str],
                        storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError("benmm's checkpoint writer takes no storage_options")
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(target) as tmp:
            torch.save(checkpoint, tmp)
