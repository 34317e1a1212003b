"""The committing thread of a tarball encode: hashes patch values and commits them in batches.

SHA-256 and LMDB's ``put`` release the GIL, so running them in their own thread lets them overlap the
GeoTIFF parsing of the next patches (the main thread) and the decompression (the reader thread of
:mod:`benmm.archive.tarball`). Value buffers come from a bounded pool and go back to it once their batch
is committed (LMDB copies them), so no buffer is allocated per patch.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from typing import Any, Final

from benmm.store.layout import value_digest
from benmm.store.writer import StoreWriter

_FLUSH: Final = object()
_STOP: Final = object()


class Committer:
    """``take()`` a buffer, fill it, ``submit(key, buffer, state)``; ``flush()`` waits until everything
    submitted is committed; ``close()`` ends the thread. An error of the thread (disk full, a key written
    twice) is raised by the next call."""

    def __init__(self, writer: StoreWriter, size: int, batch: int,
                 on_event: Callable[[str], None] | None = None, commits: list[int] | None = None) -> None:
        self.writer, self.size, self.batch, self.on_event = writer, size, max(1, batch), on_event
        self.commits = commits if commits is not None else [0]
        self.written = 0  # value bytes committed
        self._free: queue.SimpleQueue[bytearray] = queue.SimpleQueue()
        self._made = 0
        self._items: queue.Queue[Any] = queue.Queue(2 * self.batch)
        self._flushed = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="benmm-commit", daemon=True)
        self._thread.start()

    def take(self) -> bytearray:
        """A free value buffer (a new one while fewer than three batches' worth exist)."""
        self._check()
        try:
            return self._free.get_nowait()
        except queue.Empty:
            if self._made < 3 * self.batch + 2:
                self._made += 1
                return bytearray(self.size)
        while True:
            try:
                return self._free.get(timeout=0.1)
            except queue.Empty:
                self._check()

    def give_back(self, buf: bytearray) -> None:
        self._free.put(buf)

    def submit(self, key: str, buf: bytearray | None, state: bytes) -> None:
        """Commit ``state`` for ``key`` (and the value in ``buf``, unless None) in a coming batch."""
        self._put((key, buf, state))

    def flush(self) -> None:
        self._flushed.clear()
        self._put(_FLUSH)
        while not self._flushed.wait(0.1):
            self._check()
        self._check()

    def close(self) -> None:
        if self._thread.is_alive():
            self._items.put(_STOP)
            self._thread.join()

    def _put(self, item: Any) -> None:
        while True:
            self._check()
            try:
                self._items.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def _check(self) -> None:
        if self._error is not None:
            raise self._error

    def _run(self) -> None:
        values: list[tuple[str, bytes | memoryview, bytes]] = []
        states: list[tuple[str, bytes]] = []
        bufs: list[bytearray] = []
        while True:
            item = self._items.get()
            if self._error is not None:  # drain after an error, so the producer never blocks
                if item is _FLUSH:
                    self._flushed.set()
                if item is _STOP:
                    return
                continue
            try:
                full = len(values) >= self.batch or len(states) >= 4 * self.batch
                if item is _STOP or item is _FLUSH or full:
                    self._commit(values, states, bufs)
                if item is _STOP:
                    return
                if item is _FLUSH:
                    self._flushed.set()
                    continue
                key, buf, state = item
                if buf is not None:
                    view = memoryview(buf)
                    values.append((key, view, value_digest(view)))
                    bufs.append(buf)
                states.append((key, state))
            except BaseException as exc:
                self._error = exc
                self._flushed.set()

    def _commit(self, values: list[tuple[str, bytes | memoryview, bytes]], states: list[tuple[str, bytes]],
                bufs: list[bytearray]) -> None:
        if not values and not states:
            return
        self.writer.commit_patches(values, states)
        self.written += sum(len(v) for _, v, _ in values)
        values.clear()
        states.clear()
        for buf in bufs:
            self._free.put(buf)
        bufs.clear()
        self.commits[0] += 1
        if self.on_event is not None:
            self.on_event(f"commit:{self.commits[0]}")
