"""Getting whole batches out of a :class:`~benmm.data.dataset.BigEarthNetDataset` fast: shared-memory
batch tensors, :func:`collate`, the batched-fetch view the DataLoader calls (:class:`BatchedView`), and
the ring of reused shared-memory buffers that CPU-training workers write into (:class:`RecyclingView`,
:class:`Recycler`, :class:`RecyclingLoader`; used by :mod:`benmm.data.datamodule`).
"""

from __future__ import annotations

import gc
import multiprocessing
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import torch
from torch.multiprocessing.reductions import StorageWeakRef
from torch.utils.data import DataLoader, Dataset, default_collate, get_worker_info

if TYPE_CHECKING:
    from benmm.data.dataset import BigEarthNetDataset
    from benmm.data.transforms import BatchTransform

_SLOT_KEY = "_benmm_slot"  # (worker id, ring slot) of a batch, popped by Recycler in the main process


def shared_empty(shape: tuple[int, ...]) -> torch.Tensor:
    """An uninitialised float32 CPU tensor in shared memory: what ``default_collate`` allocates inside
    DataLoader workers, so the batch crosses to the main process without a copy."""
    numel = 1
    for n in shape:
        numel *= int(n)
    proto = torch.empty(0, dtype=torch.float32)
    storage = proto._typed_storage()._new_shared(numel, device="cpu")
    return proto.new(storage).view(shape)


def collate(samples: Sequence[dict[str, Any]] | dict[str, Any]) -> dict[str, Any]:
    """Stack samples into a batch: each image key (``s2``, ``s2_20m``, ``s2_60m``, ``s1``) stays its own
    tensor at its native size, ``label`` stacks, ``name`` becomes a list of str.

    A batch already collated by :meth:`BigEarthNetDataset.get_batch` passes through unchanged. Uses
    :func:`torch.utils.data.default_collate`, which stacks into shared memory inside DataLoader workers.
    """
    if isinstance(samples, dict):
        return samples
    if not samples:
        raise ValueError("collate() needs at least one sample")
    keys = set(samples[0])
    for s in samples[1:]:
        if set(s) != keys:
            raise ValueError(f"samples have different keys: {sorted(keys)} vs {sorted(s)} "
                             "(mixed datasets with different bands or modalities?)")
    return default_collate(list(samples))


class BatchedView(Dataset[dict[str, Any]]):
    """``dataset`` seen through the DataLoader's batched-fetch hook: ``__getitems__`` returns a whole
    collated batch from :meth:`BigEarthNetDataset.get_batch` (filled in place, in shared memory inside
    workers), which :func:`collate` passes through. Samplers (random, distributed) work on it unchanged."""

    def __init__(self, dataset: BigEarthNetDataset, transform: Callable[[dict[str, Any]], dict[str, Any]]
                 | None = None) -> None:
        self.dataset = dataset
        self.transform = transform  # a BatchTransform to run in the worker (CPU training), or None
        self._worker_seed: int | None = None

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.dataset[index]

    def __getitems__(self, indices: Sequence[int]) -> dict[str, Any]:
        if self.transform is None:
            return self.dataset.get_batch(indices)
        info = get_worker_info()
        # the native batch stays in this worker; the transform writes its outputs to shared memory
        batch = self.dataset.get_batch(indices, shared=False)
        if info is not None:
            self.seed_worker(info)
            if hasattr(self.transform, "share_outputs"):
                self.transform.share_outputs = True
        return self.transform(batch)

    def seed_worker(self, info: Any) -> None:
        """Each worker gets its own augmentation stream, derived from the DataLoader's seeded base
        seed (a new one per epoch unless the workers persist): reproducible, not repeated."""
        if self._worker_seed != info.seed:
            generator = getattr(self.transform, "generator", None)
            if generator is not None:
                generator.manual_seed(info.seed % (1 << 63))
            self._worker_seed = info.seed
            # Everything the worker inherited (torch, numpy, the dataset's tables) lives as long as
            # the worker: take it out of the cyclic garbage collector's reach, which otherwise walks
            # those ~10^5 objects on every full collection (~6% of a worker's time, measured with perf).
            gc.freeze()


def batched_loader(dataset: BigEarthNetDataset, batch_size: int = 64, shuffle: bool = False,
                   num_workers: int = 0, **kwargs: Any) -> DataLoader[dict[str, Any]]:
    """A DataLoader yielding collated batches of ``dataset`` via the batched fetch path."""
    return DataLoader(BatchedView(dataset), batch_size=batch_size, shuffle=shuffle, num_workers=num_workers,
                      collate_fn=collate, **kwargs)


class RecyclingView(BatchedView):
    """A :class:`BatchedView` whose workers run the transform into a small ring of reused buffers.

    Why: on CPU the batch transform is memory-bound, and writing *fresh* memory costs several times
    the write itself (every new 4 KiB page is a fault plus a zeroed page; ~52 MB per batch of 64 for
    S1+S2 at 120x120). Each worker therefore keeps its native-size scratch batch and ``slots`` output
    batches (shared memory, sent to the main process without a copy) and reuses them.

    Safety contract: a slot is reused only after the main process has dropped every reference to the
    tensors it received from it. ``flags[worker, slot]`` (shared memory) is set to 1 by the worker when
    it hands the slot out and back to 0 by :class:`Recycler` in the main process once all the storages
    of that batch are freed there (checked with weak storage references at each ``next``). If no slot
    is free (the caller keeps batches), the worker allocates fresh shared memory as usual, so keeping
    batches (``list(loader)``) is always safe, only slower.

    With forked workers (Linux default) the main process allocates the buffers once per loader
    (:meth:`preallocate`; shared memory, so the children write to the same pages, no copy-on-write) and
    every set of workers inherits them: non-persistent workers then reuse warm pages from one epoch to
    the next, and the flags outlive the workers. Otherwise each worker allocates its own on first use.
    """

    def __init__(self, dataset: BigEarthNetDataset, transform: BatchTransform, slots: int) -> None:
        super().__init__(dataset, transform)
        self.slots = int(slots)
        self.flags: torch.Tensor | None = None  # [num_workers, slots] int32 in shared memory
        #: main process: (worker, slot) -> weak refs to the storages of the batch that slot carried
        #: (kept here, not per iterator: persistent workers keep their rings across epochs)
        self.held: dict[tuple[int, int], list[StorageWeakRef]] = {}
        self._ring: list[dict[str, torch.Tensor]] = []
        self._scratch: dict[str, torch.Tensor] = {}
        #: per worker (scratch, ring), allocated in the main process for forked workers
        self.pre: list[tuple[dict[str, torch.Tensor], list[dict[str, torch.Tensor]]]] | None = None

    def new_generation(self, num_workers: int) -> None:
        """Fresh flags for a new set of worker processes (called in the main process before they start)."""
        self.flags = torch.zeros((max(num_workers, 1), self.slots), dtype=torch.int32).share_memory_()
        self.held = {}

    def preallocate(self, num_workers: int, rows: int) -> None:
        """Scratch and ring buffers for ``num_workers`` forked workers, in shared memory (pages are
        only backed once a worker writes them)."""
        transform = cast("BatchTransform", self.transform)
        shapes = {**transform.output_shapes(rows), "label": (rows, self.dataset.num_classes)}
        self.pre = [({k: shared_empty((rows, *shape)) for k, shape in self.dataset.shapes().items()},
                     [{k: shared_empty(shape) for k, shape in shapes.items()} for _ in range(self.slots)])
                    for _ in range(max(num_workers, 1))]

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_ring"], state["_scratch"], state["held"] = [], {}, {}  # per process
        return state

    def __getitems__(self, indices: Sequence[int]) -> dict[str, Any]:
        info = get_worker_info()
        if info is None or self.flags is None or self.transform is None:
            return super().__getitems__(indices)
        self.seed_worker(info)
        tf = cast("BatchTransform", self.transform)  # set by the DataModule, never user input
        n = len(indices)
        if self.pre is not None and n <= next(iter(self.pre[info.id][0].values())).shape[0]:
            scratch, ring = self.pre[info.id]
        else:  # buffers of this worker, allocated on first use
            rows = max(n, self._rows())
            if not self._scratch or self._rows() < rows:
                self._scratch = {k: torch.empty((rows, *shape), dtype=torch.float32)
                                 for k, shape in self.dataset.shapes().items()}
                self._ring = []
            scratch, ring = self._scratch, self._ring
        slot = self._free_slot(info.id)
        if slot < 0:  # every buffer is still held by the main process: fresh memory, as usual
            tf.share_outputs = True
            return tf(self.dataset.get_batch(indices, shared=False, out=scratch))
        while len(ring) <= slot:
            rows = self._rows()
            shapes = {**tf.output_shapes(rows), "label": (rows, self.dataset.num_classes)}
            ring.append({k: shared_empty(shape) for k, shape in shapes.items()})
        buffers = ring[slot]
        flags = self.flags.numpy()
        flags[info.id, slot] = 1
        batch = self.dataset.get_batch(indices, shared=False, out={**scratch, "label": buffers["label"]})
        out = tf(batch, out=buffers)
        out[_SLOT_KEY] = (info.id, slot)
        return out

    def _rows(self) -> int:
        return next(iter(self._scratch.values())).shape[0] if self._scratch else 0

    def _free_slot(self, worker: int) -> int:
        assert self.flags is not None
        flags = self.flags.numpy()[worker]
        free = np.flatnonzero(flags == 0)  # the lowest free slot: its pages are the most likely warm,
        return int(free[0]) if len(free) else -1  # and slots past the steady state stay unallocated


class Recycler:
    """The main-process side of :class:`RecyclingView`: yields the loader's batches (without the slot
    tag) and frees a worker's slot once every storage of the batch it carried has been freed."""

    def __init__(self, iterator: Any, view: RecyclingView) -> None:
        self._it = iterator
        self._view = view
        self.recycled = 0  # batches that came in a ring slot
        self.fresh = 0  # batches a worker wrote to fresh memory (all its slots were still held)

    def __iter__(self) -> Recycler:
        return self

    def __len__(self) -> int:
        return len(self._it)

    def __next__(self) -> Any:
        self.release()
        batch = next(self._it)
        tag = batch.pop(_SLOT_KEY, None) if isinstance(batch, dict) else None
        if tag is None:
            self.fresh += 1
        else:
            self.recycled += 1
            tensors = [v for v in batch.values() if isinstance(v, torch.Tensor)]
            refs = [StorageWeakRef(t.untyped_storage()) for t in tensors]
            self._view.held[(int(tag[0]), int(tag[1]))] = refs
        return batch

    def release(self) -> None:
        flags = self._view.flags
        if flags is None:
            return
        view, held = flags.numpy(), self._view.held
        for key in [k for k, refs in held.items() if all(r.expired() for r in refs)]:
            view[key] = 0
            del held[key]


class RecyclingLoader(DataLoader):
    """A DataLoader over a :class:`RecyclingView`: forked workers get buffers and flags made once per
    loader; otherwise each new set of workers gets fresh flags (and allocates its own buffers)."""

    def __iter__(self) -> Any:
        view = self.dataset
        if not isinstance(view, RecyclingView) or self.num_workers == 0:
            return super().__iter__()
        ctx = self.multiprocessing_context
        method = ctx.get_start_method() if ctx is not None else multiprocessing.get_start_method()
        if method == "fork":  # buffers made here are inherited by every set of workers (see the view)
            if view.pre is None:
                view.new_generation(self.num_workers)
                view.preallocate(self.num_workers, int(self.batch_size or 1))
        elif not (self.persistent_workers and self._iterator is not None):
            view.new_generation(self.num_workers)  # before the workers start (spawn copies it)
        return Recycler(super().__iter__(), view)
