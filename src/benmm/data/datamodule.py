"""Lightning DataModule: datasets per split, DataLoaders, the batch transform after device transfer.

* Loaders fetch whole batches (:class:`~benmm.data.dataset.BatchedView`): workers fill batch tensors in
  shared memory, the main process only receives them; ``pin_memory`` defaults to "a GPU is present",
  ``persistent_workers`` to "there are workers".
* The :class:`~benmm.data.transforms.BatchTransform` (resampling, normalisation, training-only
  augmentation) runs in :meth:`on_after_batch_transfer`, i.e. on the batch's device, when training on
  an accelerator. On a CPU-only run (``transform_on="auto"``, or ``"worker"``) the loader workers run
  it instead, in parallel, right after filling the batch: the main process is then free for the model
  (on CPU the transform is memory-bound and would otherwise serialise with the training step). The
  result is the same batch; each worker's augmentation stream is seeded from the DataLoader's seeded
  base seed, so runs are reproducible for a given ``num_workers``. Such workers write each batch into
  a small ring of reused shared-memory buffers (:class:`RecyclingView`): fresh memory costs more
  than the transform itself on CPU. A buffer is rewritten only after the main process has freed every
  tensor it received from it, so kept batches (``list(loader)``) stay intact (see the class).
* Sharding: under DDP (``trainer.world_size > 1``) the module builds the samplers itself, seeded with
  ``seed``: training uses :class:`torch.utils.data.DistributedSampler` (shuffled per epoch via
  ``set_epoch``, which Lightning calls; it pads the last few indices so every rank runs the same number
  of steps, as DDP training must); validation, test and predict use Lightning's
  ``UnrepeatedDistributedSampler``, so every pair is evaluated exactly once across ranks. Lightning
  leaves a DataLoader that already has a ``DistributedSampler`` alone.
* Reproducible: the training order comes from a generator seeded with ``seed``; the augmentation from
  the transform's own seeded generator.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import lightning as L
import torch
from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler
from torch.utils.data import (
    DataLoader,
    DistributedSampler,
    Sampler,
    SequentialSampler,
)

from benmm.archive.splits import normalize_split
from benmm.bands import BandStats, choose_bands, split_by_modality
from benmm.data.dataset import BigEarthNetDataset
from benmm.data.loading import BatchedView, RecyclingLoader, RecyclingView, collate
from benmm.data.transforms import BatchTransform, TransformError, check_resample
from benmm.labels import label_names

if TYPE_CHECKING:
    from benmm.store import Store

TRANSFORM_ON = ("auto", "device", "worker")


class EpochRandomSampler(Sampler[int]):
    """The training order as a function of (seed, epoch) alone, so that a resumed run sees the orders an
    uninterrupted one would. Epoch ``e`` is the ``e``-th pass of a :class:`RandomSampler` over a generator
    seeded with ``seed`` (exactly the orders of one sampler kept across epochs: a RandomSampler pass draws
    two permutations, the second cut to nothing, as torch's does); Lightning calls :meth:`set_epoch`
    before each epoch (a resumed fit starts at the checkpoint's epoch), and without it each pass moves
    to the next epoch. Replaying the earlier draws costs ~5 ms per 500k pairs and epoch."""

    def __init__(self, n: int, seed: int) -> None:
        self.n, self.seed, self.epoch = int(n), int(seed), 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.n

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed)
        for _ in range(2 * self.epoch):  # the earlier epochs' draws, to reach this epoch's state
            torch.randperm(self.n, generator=generator)
        self.epoch += 1
        yield from torch.randperm(self.n, generator=generator).tolist()


class BigEarthNetDataModule(L.LightningDataModule):
    """Train/val/test/predict loaders over one store (see the module docstring for the details).

    The dataset options (``modality``, ``bands``, ``labels``, ``order``, ``recommended``, ``countries``,
    ``seasons``, ``bbox``, ``reference_maps``) are those of :class:`~benmm.data.BigEarthNetDataset`; the
    transform options (``resample``, ``stats``, ``augment``, ``keep_native``, ``align_corners``) those of
    :class:`~benmm.data.BatchTransform`. ``train_fraction`` keeps a seeded random fraction of the
    training split (``fraction_seed``; validation and test stay whole). ``predict_split`` picks the
    pairs ``predict_dataloader`` serves (``None``: every pair of the store, recommended filter applied).
    """

    def __init__(self, store: Store | str | Path, modality: str = "s1s2",
                 bands: str | Iterable[str] | None = None, batch_size: int = 64, num_workers: int = 2,
                 resample: str = "bilinear", labels: int = 19, order: str = "official",
                 stats: str | Path | BandStats | Mapping[str, Any] | None = "v1", augment: bool = False,
                 seed: int = 0,
                 keep_native: bool = False, recommended: bool = True,
                 countries: Iterable[str] | str | None = None, seasons: Iterable[str] | str | None = None,
                 pin_memory: bool | None = None, persistent_workers: bool | None = None,
                 align_corners: bool = False, drop_last: bool = False,
                 predict_split: str | None = "test", transform_on: str = "auto",
                 reference_maps: bool = False, bbox: Sequence[float] | None = None,
                 train_fraction: float = 1.0, fraction_seed: int = 0) -> None:
        super().__init__()
        if isinstance(store, str | Path):
            from benmm.store import Store

            store = Store.open(store)
        self.store = store
        self.modality = modality
        self.bands = choose_bands(modality, bands)  # validates modality and band names early
        label_names(labels, order)  # validates the label set and order early
        self.num_classes = int(labels)
        self.order = order
        self.batch_size = int(batch_size)
        self.num_workers = int(num_workers)
        self.resample = check_resample(resample)
        self.seed = int(seed)
        self.recommended = recommended
        self.countries = countries
        self.seasons = seasons
        self.bbox = None if bbox is None else tuple(float(v) for v in bbox)
        self.reference_maps = bool(reference_maps)  # batches carry "reference_map" (see the Dataset)
        self.train_fraction = float(train_fraction)
        self.fraction_seed = int(fraction_seed)
        self.pin_memory = torch.cuda.is_available() if pin_memory is None else bool(pin_memory)
        self.persistent_workers = (self.num_workers > 0 if persistent_workers is None
                                   else bool(persistent_workers) and self.num_workers > 0)
        self.drop_last = drop_last
        self.predict_split = normalize_split(predict_split)
        if transform_on not in TRANSFORM_ON:
            raise TransformError(f"unknown transform_on {transform_on!r}; valid: {', '.join(TRANSFORM_ON)}")
        self.transform_on = transform_on
        self._in_worker = False
        s2, s1 = split_by_modality(self.bands)
        self.in_channels = {k: v for k, v in (("s2", len(s2)), ("s1", len(s1))) if v}
        common = dict(bands=self.bands, resample=resample, stats=stats, keep_native=keep_native,
                      align_corners=align_corners, seed=seed)
        self.train_transform = BatchTransform(augment=augment, **common)  # type: ignore[arg-type]
        self.eval_transform = BatchTransform(augment=False, **common)  # type: ignore[arg-type]
        self.datasets: dict[str, BigEarthNetDataset] = {}
        self.save_hyperparameters(ignore=["store"])
        self.hparams["store"] = str(getattr(store, "path", store))

    def __repr__(self) -> str:
        return (f"BigEarthNetDataModule(store={self.hparams['store']!r}, modality={self.modality!r}, "
                f"bands={self.bands}, batch_size={self.batch_size}, num_workers={self.num_workers}, "
                f"transform={self.train_transform!r})")

    # ---- datasets ---------------------------------------------------------------------------
    def dataset(self, split: str | None) -> BigEarthNetDataset:
        """The dataset of ``split`` (``None``: all pairs), built once."""
        key = str(normalize_split(split))
        if key not in self.datasets:
            self.datasets[key] = BigEarthNetDataset(
                self.store, modality=self.modality, bands=self.bands, split=split,
                labels=self.num_classes, order=self.order, recommended=self.recommended,
                countries=self.countries, seasons=self.seasons, bbox=self.bbox,
                reference_maps=self.reference_maps,
                fraction=self.train_fraction if key == "train" else 1.0, fraction_seed=self.fraction_seed)
        return self.datasets[key]

    def setup(self, stage: str | None = None) -> None:
        wanted = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",),
                  "predict": (self.predict_split,)}.get(stage or "", ("train", "val", "test"))
        for split in wanted:
            self.dataset(split)

    # ---- loaders ----------------------------------------------------------------------------
    def _world(self) -> tuple[int, int]:
        trainer = getattr(self, "trainer", None)
        if trainer is None:
            return 1, 0
        return int(getattr(trainer, "world_size", 1)), int(getattr(trainer, "global_rank", 0))

    def sampler(self, dataset: BigEarthNetDataset, train: bool) -> Sampler[int]:
        """The sampler a loader uses (distributed when the trainer runs on several ranks)."""
        world, rank = self._world()
        if world > 1:
            if train:
                return DistributedSampler(dataset, num_replicas=world, rank=rank, shuffle=True,
                                          seed=self.seed, drop_last=self.drop_last)
            return UnrepeatedDistributedSampler(dataset, num_replicas=world, rank=rank, shuffle=False)
        if train:
            return EpochRandomSampler(len(dataset), self.seed)
        return SequentialSampler(dataset)

    def transform_in_workers(self) -> bool:
        """Whether the loaders' workers run the batch transform (CPU) instead of the device (GPU)."""
        if self.num_workers == 0 or self.transform_on == "device":
            return False
        if self.transform_on == "worker":
            return True
        trainer = getattr(self, "trainer", None)
        strategy = getattr(trainer, "strategy", None)
        if strategy is not None and hasattr(strategy, "root_device"):
            return bool(strategy.root_device.type == "cpu")
        return not torch.cuda.is_available()

    def loader(self, split: str | None, train: bool = False) -> DataLoader[dict[str, Any]]:
        ds = self.dataset(split)
        self._in_worker = self.transform_in_workers()
        # a batch larger than the split only costs memory (buffers are sized by it): clamp to the data
        batch_size = max(1, min(self.batch_size, len(ds)))
        common = dict(batch_size=batch_size, sampler=self.sampler(ds, train),
                      num_workers=self.num_workers, pin_memory=self.pin_memory,
                      persistent_workers=self.persistent_workers, collate_fn=collate,
                      drop_last=self.drop_last and train,
                      generator=torch.Generator().manual_seed(self.seed + 1))  # workers' base seeds
        if not self._in_worker:
            return DataLoader(BatchedView(ds), **common)  # type: ignore[arg-type]
        tf = self.train_transform if train else self.eval_transform
        # ring: the prefetched batches (prefetch_factor, default 2) + the one in use + one spare
        view = RecyclingView(ds, tf, slots=2 + 2)
        return RecyclingLoader(view, **common)  # type: ignore[arg-type]

    def train_dataloader(self) -> DataLoader[dict[str, Any]]:
        return self.loader("train", train=True)

    def val_dataloader(self) -> DataLoader[dict[str, Any]]:
        return self.loader("val")

    def test_dataloader(self) -> DataLoader[dict[str, Any]]:
        return self.loader("test")

    def predict_dataloader(self) -> DataLoader[dict[str, Any]]:
        return self.loader(self.predict_split)

    # ---- transform --------------------------------------------------------------------------
    def transform(self, batch: dict[str, Any], train: bool = False) -> dict[str, Any]:
        """The batch transform (augmenting only when ``train``)."""
        return (self.train_transform if train else self.eval_transform)(batch)

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        if self._in_worker:  # the loader's workers already transformed it (CPU run)
            return batch
        trainer = getattr(self, "trainer", None)
        training = bool(trainer is not None and trainer.training)
        return self.transform(batch, train=training)

    @property
    def label_names(self) -> tuple[str, ...]:
        return label_names(self.num_classes, self.order)
