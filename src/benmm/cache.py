"""Where benmm keeps what it can rebuild (the parsed official lists, the demo's archive and store):
``$BENMM_CACHE_DIR``, else ``$XDG_CACHE_HOME/benmm``, else ``~/.cache/benmm``. ``BENMM_CACHE_DIR=off``
(or ``0``, ``none``, empty) switches caching off. The one cache variable of benmm."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Final

ENV: Final = "BENMM_CACHE_DIR"
_OFF: Final = ("", "0", "off", "none")


def cache_dir() -> Path | None:
    """The cache folder, or None when caching is switched off."""
    env = os.environ.get(ENV)
    if env is not None:
        return None if env.strip().lower() in _OFF else Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "benmm"
