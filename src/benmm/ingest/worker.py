"""The encoder's worker side: read, validate, serialise and commit a chunk of pairs in one LMDB
transaction, in a worker process (or in the main process for one worker). See :mod:`benmm.ingest.pipeline`."""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benmm.errors import BenmmError
from benmm.ingest.sources import Source
from benmm.store.blob import BlobError, check_header, parse_header
from benmm.store.writer import Record, StoreWriter

Task = tuple[str, Any]  # (pair name, source-specific locator)


@dataclass
class Job:
    """What a worker needs (inherited on fork, pickled on spawn)."""

    source: Source
    dst: Path
    map_size: int
    skip_invalid: bool
    on_event: Callable[[str], None] | None = None  # fault injection (tests), see benmm.ingest.pipeline
    main_pid: int = 0


_JOB: Job | None = None
_WRITER: StoreWriter | None = None
_COMMITS = 0


def _die_with_parent() -> None:
    """Ask Linux to SIGKILL this worker when the encoder dies, so a killed encode leaves no orphans."""
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):  # pragma: no cover - best effort
            pass


def init_worker(job: Job) -> None:
    global _JOB, _WRITER, _COMMITS
    _COMMITS = 0
    _die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the main process's business
    _JOB = job
    # open now, at pool start: every worker maps LMDB before any of them could grow the map. An
    # error here must not escape (a Pool respawns workers whose initializer fails, forever): the
    # first task opens the writer again and reports it.
    try:
        _WRITER = StoreWriter(job.dst, job.map_size, job.on_event)
    except Exception:
        _WRITER = None


def work(tasks: Sequence[Task]) -> tuple[int, int, list[tuple[str, str]], int]:
    """Read, validate, serialise and commit a chunk of pairs in one transaction.

    Returns (pairs written, value bytes written, [(name, reason)] invalid pairs, pairs filtered out by
    the split). Invalid pairs are recorded as skipped only with ``skip_invalid``.
    """
    global _WRITER
    assert _JOB is not None
    if _WRITER is None:
        _WRITER = StoreWriter(_JOB.dst, _JOB.map_size, _JOB.on_event)
    records, bad, filtered = [], [], 0
    _JOB.source.begin_chunk()
    for name, where in tasks:
        try:
            rec = _JOB.source.record(name, where)
        except (BenmmError, BlobError, OSError) as exc:
            bad.append((name, str(exc)))
            continue
        if rec is None:
            filtered += 1
        else:
            _check_record(rec)
            records.append(rec)
    _WRITER.commit(records, bad if _JOB.skip_invalid else ())
    global _COMMITS
    _COMMITS += 1
    if _JOB.on_event is not None and os.getpid() != _JOB.main_pid:
        _JOB.on_event(f"worker:{_COMMITS}")
    return len(records), sum(len(r.s2_value) + len(r.s1_value) for r in records), bad, filtered


def close_worker_writer() -> None:
    global _WRITER
    if _WRITER is not None:
        _WRITER.close()
        _WRITER = None


def _check_record(rec: Record) -> None:
    """Last check of what is committed: both values parse and hold the right bands, sizes, dtypes."""
    for key, value, modality in ((rec.name, rec.s2_value, "s2"), (rec.s1_key, rec.s1_value, "s1")):
        try:
            check_header(parse_header(value)[0], modality)
        except BlobError as exc:  # a bug in a source, not a user error: never write such a value
            raise RuntimeError(f"{key}: refusing to write an invalid value: {exc}") from None


def init_here(job: Job) -> None:
    """One worker: the chunks run in this process."""
    global _JOB
    _JOB = job
