"""Fault injection for the encoder's kill tests: a callback for ``encode_summary(on_event=...)``."""

from __future__ import annotations

import os
import signal


class KillAt:
    """SIGKILL the calling process when the run reaches ``point`` (e.g. ``commit:1``, ``in-txn:1``,
    ``worker:1``, ``final``); picklable, so workers started by spawn get it too."""

    def __init__(self, point: str) -> None:
        self.point = point

    def __call__(self, point: str) -> None:
        if point == self.point:
            os.kill(os.getpid(), signal.SIGKILL)
