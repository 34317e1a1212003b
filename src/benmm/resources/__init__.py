"""Package data: official lists, the nomenclature and band statistics (see ATTRIBUTION.md)."""

from __future__ import annotations

import os
import shutil
import tarfile
from importlib import resources
from pathlib import Path

#: the 6 real BigEarthNet v1 example pairs, as the published S2 and S1 folders, bzip2-compressed
EXAMPLE_TARBALLS = ("examples/BigEarthNet-S2-Example.tar.bz2", "examples/BigEarthNet-S1-Example.tar.bz2")


def resource_path(name: str) -> Path:
    """Path of a file shipped in ``benmm/resources``."""
    return Path(str(resources.files(__name__).joinpath(name)))


def extract_examples(dst: str | os.PathLike[str]) -> Path:
    """Extract the shipped example pairs into ``dst`` (``dst/BigEarthNet-S2-Example/`` +
    ``dst/BigEarthNet-S1-Example/``, a v1 archive root) unless already there; returns ``dst``.
    Extracted beside ``dst`` first and renamed, so an interrupted run never leaves half the files."""
    root = Path(dst)
    if (root / "BigEarthNet-S2-Example").is_dir() and (root / "BigEarthNet-S1-Example").is_dir():
        return root
    tmp = root.with_name(root.name + ".partial")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    for name in EXAMPLE_TARBALLS:
        with tarfile.open(resource_path(name), "r:bz2") as tar:
            tar.extractall(tmp, filter="data")
    if root.exists():
        shutil.rmtree(root) if any(root.iterdir()) else root.rmdir()
    tmp.rename(root)
    return root
