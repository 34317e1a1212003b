"""benmm: the BigEarthNet-MM toolkit (Sentinel-1 + Sentinel-2, 19/43-class multi-label, retrieval)."""

from __future__ import annotations

__version__ = "0.1.0"

from benmm.errors import (
    ArchiveError,
    BandError,
    BenmmError,
    EncodeError,
    LabelError,
    PatchNameError,
    SplitError,
    StoreError,
)

__all__ = [
    "ArchiveError",
    "BandError",
    "BenmmError",
    "EncodeError",
    "LabelError",
    "PatchNameError",
    "SplitError",
    "StoreError",
    "__version__",
]

# Public API loaded on first use, so `import benmm` (and `benmm --help`) stays light. No submodule has the
# name of a public function (the encoder package is `benmm.ingest`), so `benmm.encode` is always the function.
_LAZY = {
    "open_archive": ("benmm.archive", "open_archive"),
    "Store": ("benmm.store", "Store"),
    "encode": ("benmm.ingest", "encode"),
}
__all__ += list(_LAZY)


def __getattr__(name: str) -> object:
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        value = getattr(importlib.import_module(module), attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'benmm' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
