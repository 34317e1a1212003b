"""Archive -> store: parallel, validated, resumable, atomic (store layout: :mod:`benmm.store.layout`).

Worker processes read and validate a chunk of pairs, build the safetensors blobs and their SHA-256,
and commit the chunk to LMDB themselves in one transaction together with its bookkeeping
(:class:`benmm.store.writer.StoreWriter`; LMDB serialises writers across processes). Only counts and
the reasons of invalid pairs travel back to the main process: shipping the ~280 KB of blobs per pair
through pipes (pickle, pipe, unpickle) cost more CPU than reading the pair did. The main process
plans the work, shows progress and seals the store. Killed at any moment and run again with the same
arguments, it skips the committed pairs and ends with the same content hash as an uninterrupted run.
Sources: a v1 folder tree (via :mod:`benmm.archive.v1`), a reBEN folder or another benmm store
(values copied byte for byte after validation), or the two v1 tarballs, streamed in this process
(:mod:`benmm.ingest.tar_source`; one decompression thread per tarball, see :mod:`benmm.archive.tarball`).

Fault injection (for the kill-and-resume tests, never set by the command line): ``on_event(point)``
is called at named points of the run: ``commit:K`` in the main process after the K-th committed
chunk; ``metadata``, ``final``, ``dropped``, ``manifest`` between the sealing steps; ``worker:K`` in
each worker process after its K-th commit; ``in-txn:K`` in every writing process inside its K-th
transaction, its pairs written but not committed. A test's callback kills the process at one of them.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from benmm import __version__
from benmm.atomic import fsync_dir
from benmm.bands import BAND_DTYPE, BAND_RESOLUTION, BAND_SIZE, S1_BANDS, S2_BANDS
from benmm.errors import EncodeError
from benmm.ingest.sources import Source, normalize_splits, open_source
from benmm.ingest.tar_open import open_tar_source
from benmm.ingest.tar_source import StreamSource
from benmm.ingest.worker import Job, Task, close_worker_writer, init_here, init_worker, work
from benmm.store.layout import ENCODE_STATE, FORMAT, FORMAT_VERSION, MANIFEST, REPORT
from benmm.store.reader import Store
from benmm.store.writer import FINAL, StoreWriter, atomic_write

PARAMS: Final = "params.json"
LOCK: Final = "lock"
COMMIT_PAIRS: Final = 32  # pairs per worker task = per LMDB transaction (~9 MB)
BYTES_PER_PAIR: Final = 290_000  # S2 160,832 + S1 115,344 bytes + B-tree pages, for the first map size


@dataclass
class EncodeSummary:
    """What one ``encode`` call did."""

    store: Store
    source: str
    pairs: int  # pairs in the finished store
    written: int  # pairs written by this run
    resumed: int  # pairs found already committed by an interrupted run
    skipped: dict[str, str] = field(default_factory=dict)  # pair -> reason (every run)
    seconds: float = 0.0
    bytes_written: int = 0
    workers: int = 1
    already_complete: bool = False

    @property
    def pairs_per_s(self) -> float:
        return self.written / self.seconds if self.seconds > 0 else 0.0

    def to_json(self) -> dict[str, Any]:
        return {"source": self.source, "store": str(self.store.path), "pairs": self.pairs,
                "written": self.written, "resumed": self.resumed, "skipped": self.skipped,
                "seconds": round(self.seconds, 3), "pairs_per_s": round(self.pairs_per_s, 1),
                "bytes_written": self.bytes_written, "workers": self.workers,
                "content_hash": self.store.content_hash}


# ---- main side ---------------------------------------------------------------------------------
def _params(source: Source, splits: tuple[str, ...] | None) -> dict[str, Any]:
    return {"kind": source.kind, "path": source.param_path(),
            "split": list(splits) if splits else None}


def _prepare(dst: Path, params: dict[str, Any]) -> None:
    """Create ``dst`` or check that it is an unfinished encode of the same source."""
    state = dst / ENCODE_STATE
    if state.is_dir():
        try:
            old = json.loads((state / PARAMS).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            old = None
        if old is not None and old != params:
            raise EncodeError(f"{dst} holds an interrupted encode of {old['path']} (split {old['split']}); "
                              "run that command again to finish it, or choose another destination")
        if old is not None:
            return
    elif dst.exists() and (not dst.is_dir() or any(dst.iterdir())):
        raise EncodeError(f"{dst} exists and is not an unfinished benmm store; choose a new or empty "
                          "destination (encode never overwrites)")
    try:
        state.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise EncodeError(f"{dst}: cannot create the destination ({exc.strerror or exc}); choose a "
                          "writable location") from None
    atomic_write(state / PARAMS, (json.dumps(params, indent=2) + "\n").encode())


def _manifest_base(params: dict[str, Any]) -> dict[str, Any]:
    info = {b: {"size": BAND_SIZE[b], "dtype": str(BAND_DTYPE[b]), "resolution_m": BAND_RESOLUTION[b]}
            for b in S2_BANDS + S1_BANDS}
    return {
        "format": FORMAT, "format_version": FORMAT_VERSION, "created_by": f"benmm {__version__}",
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "bands": {"s2": list(S2_BANDS), "s1": list(S1_BANDS)}, "band_info": info,
        "value_format": "safetensors {band: 2-D array at native size}; key = patch name",
        "source": params,
    }


def _progress(enabled: bool, total: int, completed: int) -> Any:
    if not enabled:
        return None
    from benmm.progress import progress_bar

    bar = progress_bar(rate=True)
    bar.start()
    bar.add_task("encode", total=total, completed=completed, rate="")
    return bar


def _run(todo: list[Task], job: Job, workers: int, chunk: int) -> Iterator[Any]:
    """Each chunk's result as it completes (in order); a bounded window of chunks is in flight."""
    size = max(1, min(chunk, math.ceil(len(todo) / (workers * 4))))
    chunks = [todo[i:i + size] for i in range(0, len(todo), size)]
    if workers <= 1 or len(chunks) <= 1:
        init_here(job)
        try:
            yield from map(work, chunks)
        finally:
            close_worker_writer()
        return
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor
    from concurrent.futures.process import BrokenProcessPool

    ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
    # an executor, not a multiprocessing.Pool: a worker that dies (OOM killer, crash) breaks it loudly
    # instead of leaving its task pending forever
    pool = ProcessPoolExecutor(workers, mp_context=ctx, initializer=init_worker, initargs=(job,))
    try:
        pending: deque[Any] = deque()
        it = iter(chunks)
        for c in it:
            pending.append(pool.submit(work, c))
            if len(pending) >= 3 * workers:
                break
        while pending:
            try:
                result = pending.popleft().result()
            except BrokenProcessPool:
                raise EncodeError(f"{job.dst}: a worker process died (out of memory or killed?); every "
                                  "batch committed so far is kept: run the same command again to resume"
                                  ) from None
            nxt = next(it, None)
            if nxt is not None:
                pending.append(pool.submit(work, nxt))
            yield result
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def default_workers() -> int:
    """One worker more than cores: a worker waiting (on the disk, on a page fault of the store's map, on
    the LMDB write lock) leaves its core to another. Measured on the 2-core VM: 3 workers encode
    ~10-20% more pairs/s than 2 (``benchmarks/encode.py`` shows both)."""
    return (os.cpu_count() or 1) + 1


PathArg = str | os.PathLike[str]


def _open(src: PathArg | Sequence[PathArg], split: str | Sequence[str] | None,
          metadata: Sequence[PathArg] = ()) -> tuple[Source, tuple[str, ...] | None]:
    """The source: a folder or store (one path), or tarballs (two or more paths, or any tarball): the
    v1 ones, or reBEN's with its ``metadata`` parquet file(s)."""
    from benmm.archive.tarball import is_tarball

    paths = [Path(src)] if isinstance(src, str | os.PathLike) else [Path(p) for p in src]
    paths = [p.expanduser() for p in paths]
    if len(paths) == 1 and not is_tarball(paths[0]):
        if metadata:
            raise EncodeError(f"--metadata {metadata[0]}: only for reBEN's tarballs; the folder {paths[0]} "
                              "is read with the metadata it holds")
        return open_source(paths[0], split)
    splits = normalize_splits(split)
    return open_tar_source(paths, splits, metadata), splits


def encode_summary(src: PathArg | Sequence[PathArg], dst: str | os.PathLike[str], workers: int | None = None,
                   split: str | Sequence[str] | None = None, skip_invalid: bool = False,
                   progress: bool = True, commit_pairs: int = COMMIT_PAIRS,
                   on_event: Callable[[str], None] | None = None,
                   metadata: Sequence[PathArg] = ()) -> EncodeSummary:
    """:func:`encode`, returning an :class:`EncodeSummary` (the CLI prints it).

    ``commit_pairs``: pairs per task and LMDB transaction. ``metadata``: reBEN's ``metadata.parquet``
    (and the snow/cloud file) for its tarballs.
    """
    start = time.perf_counter()
    dst = Path(dst).expanduser()
    workers = max(1, int(workers or default_workers()))
    source, splits = _open(src, split, metadata)
    params = _params(source, splits)
    state = dst / ENCODE_STATE
    if (dst / MANIFEST).is_file() and state.is_dir() and not (state / FINAL).exists():
        _prepare(dst, params)  # killed after installing the manifest: only the marker is left to remove
        with _exclusive(dst):
            shutil.rmtree(state)
            fsync_dir(dst)
    if (dst / MANIFEST).is_file() and not state.exists():
        store = Store.open(dst)
        if store.manifest is not None and store.manifest.get("source") == params:
            return EncodeSummary(store, str(source.root), len(store), 0, len(store), _report_skipped(dst),
                                 time.perf_counter() - start, 0, workers, already_complete=True)
        raise EncodeError(f"{dst} already holds a finished store of another source; "
                          "choose another destination")
    if isinstance(source, StreamSource):
        _prepare(dst, params)
        with _exclusive(dst):
            return _encode_stream(source, params, dst, skip_invalid, progress, commit_pairs, start, on_event)
    tasks = source.tasks(splits)
    if not tasks:
        which = f" of split {', '.join(splits)}" if splits else ""
        raise EncodeError(f"{source.root} holds no pairs{which}; nothing to encode")
    _prepare(dst, params)
    with _exclusive(dst):
        return _encode(source, tasks, params, dst, workers, skip_invalid, progress, commit_pairs, start,
                       on_event)


@contextlib.contextmanager
def _exclusive(dst: Path) -> Iterator[None]:
    """Hold an advisory lock on ``dst`` so two encodes never write one store (released on any exit,
    SIGKILL included, since the kernel drops the lock with the process)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - no flock (Windows): no protection against a second encode
        yield
        return
    fd = os.open(dst / ENCODE_STATE / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise EncodeError(f"{dst}: another encode is writing this store right now; wait for it to finish "
                          "or stop it, then run this command again") from None
    try:
        yield
    finally:
        os.close(fd)


def _encode(source: Source, tasks: list[Task], params: dict[str, Any], dst: Path, workers: int,
            skip_invalid: bool, progress: bool, commit_pairs: int, start: float,
            on_event: Callable[[str], None] | None) -> EncodeSummary:
    map_size = source.size_hint(len(tasks), BYTES_PER_PAIR)
    written = resumed = nbytes = 0
    bar = None
    writer: StoreWriter | None = StoreWriter(dst, map_size, on_event)
    try:
        assert writer is not None
        if (dst / ENCODE_STATE / FINAL).is_file():  # killed while sealing: the report is already written
            skipped = _report_skipped(dst)
        else:
            skipped = writer.skipped()
            done = writer.done()
            writer.close()  # the workers (and this process, for one worker) open their own
            writer = None
            todo = [t for t in tasks if t[0] not in done]
            resumed = len(tasks) - len(todo)
            bar = _progress(progress, len(tasks), resumed)
            source.prepare()
            job = Job(source, dst, map_size, skip_invalid, on_event, os.getpid())
            for commits, (n, size, invalid, filtered) in enumerate(_run(todo, job, workers, commit_pairs), 1):
                written += n
                nbytes += size
                if invalid and not skip_invalid:
                    name, reason = invalid[0]
                    raise EncodeError(f"invalid pair {name}: {reason}. Fix or remove it, or rerun with "
                                      "--skip-invalid to skip invalid pairs (each is listed)")
                if on_event:
                    on_event(f"commit:{commits}")
                if bar is not None:
                    rate = written / max(time.perf_counter() - start, 1e-9)
                    bar.update(bar.task_ids[0], advance=n + len(invalid) + filtered,
                               rate=f"{rate:,.0f} pairs/s")
            writer = StoreWriter(dst, map_size, on_event)
            skipped = writer.skipped()  # every run's, minus pairs that were valid this time
            report = {"source": params, "skipped": skipped, "seconds": round(time.perf_counter() - start, 3),
                      "written": written, "resumed": resumed, "workers": workers}
            atomic_write(dst / REPORT, (json.dumps(report, indent=2) + "\n").encode())
        writer.finish({**_manifest_base(params), "footprints": dict(source.footprints)})
        writer = None
    finally:
        if bar is not None:
            bar.stop()
        if writer is not None:
            writer.close()
    store = Store.open(dst)
    # pairs committed by interrupted earlier runs (also right when this run only sealed the store)
    resumed = len(store) - written
    return EncodeSummary(store, str(source.root), len(store), written, resumed, skipped,
                         time.perf_counter() - start, nbytes, workers)


def _encode_stream(source: StreamSource, params: dict[str, Any], dst: Path, skip_invalid: bool,
                   progress: bool, commit_pairs: int, start: float,
                   on_event: Callable[[str], None] | None) -> EncodeSummary:
    """The tarballs' encode: streamed in this process (no worker pool), sealed like any other."""
    written = nbytes = 0
    bar = None
    writer: StoreWriter | None = StoreWriter(dst, source.size_hint(0, 0), on_event)
    try:
        assert writer is not None
        if (dst / ENCODE_STATE / FINAL).is_file():
            skipped = _report_skipped(dst)
        else:
            bar = _bytes_progress(progress, source.total_bytes)

            def show(done: int, _: int) -> None:
                if bar is not None:
                    rate = done / 1e6 / max(time.perf_counter() - start, 1e-9)
                    bar.update(bar.task_ids[0], completed=done // 1_000_000, rate=f"{rate:,.1f} MB/s")

            written, nbytes = source.stream(writer, skip_invalid, commit_pairs, show, on_event)
            skipped = writer.skipped()
            report = {"source": params, "skipped": skipped, "seconds": round(time.perf_counter() - start, 3),
                      "written": written, "workers": 1}
            atomic_write(dst / REPORT, (json.dumps(report, indent=2) + "\n").encode())
        writer.finish({**_manifest_base(params), "footprints": dict(source.footprints)})
        writer = None
    finally:
        if bar is not None:
            bar.stop()
        if writer is not None:
            writer.close()
    store = Store.open(dst)
    return EncodeSummary(store, source.label, len(store), written, len(store) - written, skipped,
                         time.perf_counter() - start, nbytes, 1)


def _bytes_progress(enabled: bool, total: int) -> Any:
    if not enabled:
        return None
    from benmm.progress import progress_bar

    bar = progress_bar(rate=True)
    bar.start()
    bar.add_task("encode (MB of tarballs read)", total=max(total // 1_000_000, 1), rate="")
    return bar


def _report_skipped(dst: Path) -> dict[str, str]:
    try:
        return dict(json.loads((dst / REPORT).read_text(encoding="utf-8")).get("skipped", {}))
    except (OSError, ValueError):
        return {}


def encode(src: str | os.PathLike[str], dst: str | os.PathLike[str], workers: int | None = None,
           split: str | Sequence[str] | None = None, skip_invalid: bool = False,
           progress: bool = True, metadata: Sequence[PathArg] = ()) -> Store:
    """Encode the archive at ``src`` (v1 folders, reBEN folder or benmm store, or a list of tarballs:
    the two v1 ones, or reBEN's with ``metadata=["metadata.parquet"]``) into a store at ``dst``.

    ``workers`` processes read and validate pairs (default: one more than the CPU cores). ``split``
    keeps only the pairs of those splits ("train", "val"/"validation", "test"). An invalid pair stops
    the run with an :class:`EncodeError` naming the file, unless ``skip_invalid`` (then each skipped
    pair is listed with its reason in ``encode-report.json``). Interrupted runs resume when called
    again with the same arguments; the result is identical (same content hash) to an uninterrupted run.
    """
    return encode_summary(src, dst, workers=workers, split=split, skip_invalid=skip_invalid,
                          progress=progress, metadata=metadata).store
