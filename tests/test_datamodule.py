"""BigEarthNetDataModule: transformed batches, workers, seeds, and sharding under DDP (2 CPU ranks)."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import lightning as L
import pytest
import torch

from benmm.data import BigEarthNetDataModule
from benmm.data.transforms import TransformError
from benmm.errors import BandError, LabelError
from benmm.store import Store


@pytest.fixture(scope="module")
def reben(reben_sample_root: Path) -> Store:
    return Store.open(reben_sample_root)


def test_loaders_yield_transformed_batches(reben: Store) -> None:
    dm = BigEarthNetDataModule(reben, batch_size=4, num_workers=0, resample="bicubic", augment=True)
    assert dm.num_classes == 19 and dm.in_channels == {"s2": 12, "s1": 2}
    assert dm.bands[-2:] == ("VV", "VH") and len(dm.bands) == 14
    dm.setup("fit")
    raw = next(iter(dm.val_dataloader()))
    assert raw["s2_20m"].shape == (4, 6, 60, 60)  # native groups stay apart until the transform
    batch = dm.on_after_batch_transfer(raw, 0)  # no trainer: evaluation transform (no augmentation)
    assert set(batch) == {"s2", "s1", "label", "name"}
    assert batch["s2"].shape == (4, 12, 120, 120) and batch["s1"].shape == (4, 2, 120, 120)
    assert torch.equal(batch["s2"], dm.eval_transform(raw)["s2"])
    assert abs(float(batch["s1"].mean())) < 3  # normalised
    for split, loader in (("test", dm.test_dataloader()), ("test", dm.predict_dataloader())):
        names = [n for b in loader for n in b["name"]]
        assert names == dm.dataset(split).names
    native = BigEarthNetDataModule(reben, modality="s2", bands="s2-10m20m", num_workers=0, keep_native=True)
    out = native.transform(next(iter(native.loader("train"))))
    assert out["s2"].shape[1] == 10 and out["s2_20m"].shape[1] == 6 and "s1" not in out


def test_options_are_checked_up_front(reben: Store) -> None:
    with pytest.raises(BandError, match="s1, s2, s1s2"):
        BigEarthNetDataModule(reben, modality="sar")
    with pytest.raises(LabelError, match="19, 43"):
        BigEarthNetDataModule(reben, labels=10)
    with pytest.raises(TransformError, match="nearest, bilinear, bicubic"):
        BigEarthNetDataModule(reben, resample="area")
    with pytest.raises(BandError, match="v1"):
        BigEarthNetDataModule(reben, stats="no-such-stats")


def _epoch(dm: BigEarthNetDataModule, loader: Any) -> tuple[list[str], torch.Tensor]:
    names, images = [], []
    for raw in loader:
        # device mode: the module transforms after transfer (training: with augmentation)
        b = raw if dm._in_worker else dm.transform(raw, train=True)
        names += b["name"]
        images.append(b["s2"])
    return names, torch.cat(images)


def test_reproducible_with_a_seed_and_workers(reben: Store) -> None:
    def make(seed: int, workers: int, on: str = "auto") -> BigEarthNetDataModule:
        return BigEarthNetDataModule(reben, batch_size=2, num_workers=workers, seed=seed, augment=True,
                                     recommended=False, persistent_workers=False, transform_on=on)

    a, a2, c = make(1, 0), make(1, 0), make(2, 0)
    na, xa = _epoch(a, a.train_dataloader())
    na2, xa2 = _epoch(a2, a2.train_dataloader())
    nc, _ = _epoch(c, c.train_dataloader())
    assert na == na2 and torch.equal(xa, xa2)  # same seed: same order and augmentation
    assert sorted(na) == sorted(nc) == sorted(a.dataset("train").names)
    assert na != nc
    # CPU run with workers: the workers transform (and augment) reproducibly, same order as in-process
    w1, w2 = make(1, 2), make(1, 2)
    assert w1.transform_in_workers()
    loader = w1.train_dataloader()
    n1, x1 = _epoch(w1, loader)
    n2, x2 = _epoch(w2, w2.train_dataloader())
    assert n1 == n2 == na and torch.equal(x1, x2)
    n1b, x1b = _epoch(w1, loader)  # the next epoch of the same run: new order, new augmentation
    assert sorted(n1b) == sorted(n1) and n1b != n1 and not torch.equal(x1b, x1)


def test_worker_and_device_transforms_give_the_same_batches(reben: Store) -> None:
    worker = BigEarthNetDataModule(reben, batch_size=4, num_workers=2, transform_on="worker",
                                   persistent_workers=False, resample="bicubic")
    device = BigEarthNetDataModule(reben, batch_size=4, num_workers=2, transform_on="device",
                                   persistent_workers=False, resample="bicubic")
    assert not device.transform_in_workers()
    for wb, raw in zip(worker.val_dataloader(), device.val_dataloader(), strict=True):
        assert "s2_20m" in raw and "s2_20m" not in wb
        db = device.on_after_batch_transfer(raw, 0)
        assert worker.on_after_batch_transfer(wb, 0) is wb
        assert wb["name"] == db["name"]
        torch.testing.assert_close(wb["s2"], db["s2"])
        torch.testing.assert_close(wb["s1"], db["s1"])
    with pytest.raises(TransformError, match="device, worker"):
        BigEarthNetDataModule(reben, transform_on="gpu")


def test_samplers_shard_each_split_exactly_once(reben: Store) -> None:
    dm = BigEarthNetDataModule(reben, batch_size=2, num_workers=0, recommended=False, predict_split=None)
    seen: dict[str, list[str]] = {"train": [], "val": [], "predict": []}
    for rank in (0, 1):
        dm.trainer = SimpleNamespace(world_size=2, global_rank=rank)  # type: ignore[assignment]
        seen["train"] += [n for b in dm.train_dataloader() for n in b["name"]]
        seen["val"] += [n for b in dm.val_dataloader() for n in b["name"]]
        seen["predict"] += [n for b in dm.predict_dataloader() for n in b["name"]]
    dm.trainer = None  # type: ignore[assignment]
    assert sorted(seen["train"]) == sorted(dm.dataset("train").names)
    assert sorted(seen["val"]) == sorted(dm.dataset("val").names)
    assert len(dm.dataset(None)) == 24
    assert sorted(seen["predict"]) == sorted(dm.dataset(None).names)  # 24 pairs, uneven shards ok


class _Recorder(L.LightningModule):
    """Records the pair names each rank sees; one dummy parameter so DDP has something to sync."""

    def __init__(self, out: str) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.out = out
        self.seen: dict[str, list[list[str]]] = {"train": [[]], "val": []}

    def training_step(self, batch: dict[str, Any], _: int) -> torch.Tensor:
        assert batch["s2"].shape[1:] == (12, 120, 120)  # the transform ran after transfer
        self.seen["train"][-1] += batch["name"]
        return (self.w * batch["s2"].mean()).sum()

    def on_train_epoch_end(self) -> None:
        self.seen["train"].append([])

    def on_validation_epoch_start(self) -> None:
        self.seen["val"].append([])

    def validation_step(self, batch: dict[str, Any], _: int) -> None:
        self.seen["val"][-1] += batch["name"]

    def on_fit_end(self) -> None:
        Path(self.out, f"rank{self.global_rank}.json").write_text(json.dumps(self.seen))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.0)


@pytest.mark.slow
def test_ddp_two_cpu_ranks_see_each_pair_once_per_epoch(reben_sample_root: Path, tmp_path: Path) -> None:
    dm = BigEarthNetDataModule(reben_sample_root, batch_size=2, num_workers=0, seed=5)
    trainer = L.Trainer(accelerator="cpu", devices=2, strategy="ddp_spawn", max_epochs=2, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        num_sanity_val_steps=0)
    trainer.fit(_Recorder(str(tmp_path)), datamodule=dm)
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    train_names = sorted(BigEarthNetDataModule(reben_sample_root, num_workers=0).dataset("train").names)
    val_names = sorted(BigEarthNetDataModule(reben_sample_root, num_workers=0).dataset("val").names)
    for epoch in range(2):
        per_rank = [r["train"][epoch] for r in ranks]
        assert all(per_rank), "each rank trains on its shard"
        assert not set(per_rank[0]) & set(per_rank[1])
        assert sorted(per_rank[0] + per_rank[1]) == train_names
        vals = [r["val"][epoch] for r in ranks]
        assert sorted(vals[0] + vals[1]) == val_names
    assert ranks[0]["train"][0] != ranks[0]["train"][1]  # reshuffled per epoch (set_epoch)


def test_worker_output_ring_reuses_only_released_slots(reben: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    """The worker side of the output ring, driven in this process with a fake worker: it writes into a
    slot only while the flags say the main process released it, else into fresh memory; the batches
    always equal the plain transform's, and a reused slot leaves the other batches intact."""
    import benmm.data.loading as loading

    monkeypatch.setattr(loading, "get_worker_info", lambda: SimpleNamespace(id=0, seed=123))
    dm = BigEarthNetDataModule(reben, batch_size=3, num_workers=1, recommended=False)
    ds = dm.dataset(None)
    view = loading.RecyclingView(ds, dm.eval_transform, slots=2)
    view.new_generation(1)
    flags = view.flags.numpy()  # type: ignore[union-attr]

    def check(batch: dict[str, Any], idx: list[int]) -> None:
        ref = dm.eval_transform(ds.get_batch(idx, shared=False))
        assert batch["name"] == ref["name"]
        for key in ("s2", "s1", "label"):
            assert torch.equal(batch[key], ref[key]), key

    b1, b2 = view.__getitems__([0, 1, 2]), view.__getitems__([3, 4, 5])
    assert (b1.pop(loading._SLOT_KEY), b2.pop(loading._SLOT_KEY)) == ((0, 0), (0, 1))
    assert flags.tolist() == [[1, 1]] and b1["s2"].is_shared()
    fresh = view.__getitems__([6, 7])  # both slots held: fresh shared memory, untagged
    assert loading._SLOT_KEY not in fresh and fresh["s2"].is_shared()
    check(fresh, [6, 7])
    check(b1, [0, 1, 2])
    flags[0, 0] = 0  # the main process released slot 0
    b3 = view.__getitems__([8, 9])
    assert b3.pop(loading._SLOT_KEY) == (0, 0) and b3["s2"].data_ptr() == b1["s2"].data_ptr()
    check(b3, [8, 9])  # the smaller last batch: the first rows of the slot
    check(b2, [3, 4, 5])


def test_main_side_releases_a_slot_once_all_its_tensors_are_freed(reben: Store) -> None:
    import benmm.data.loading as loading

    dm = BigEarthNetDataModule(reben, num_workers=1)
    view = loading.RecyclingView(dm.dataset("val"), dm.eval_transform, slots=3)
    view.new_generation(2)
    flags = view.flags.numpy()  # type: ignore[union-attr]
    flags[:] = 1
    def sent() -> Any:  # what the workers send (each batch built on the fly: nothing else holds it)
        yield {"s2": torch.zeros(2, 3), "label": torch.ones(2), "name": ["a", "b"], loading._SLOT_KEY: (1, 2)}
        yield {"s2": torch.zeros(2, 3), "name": ["c", "d"]}  # an untagged (fresh memory) batch

    main = loading.Recycler(sent(), view)
    batch = next(main)
    assert loading._SLOT_KEY not in batch and batch["name"] == ["a", "b"]
    label = batch["label"][:1]  # a view of one of its tensors keeps the slot busy
    del batch
    main.release()
    assert flags.tolist() == [[1, 1, 1], [1, 1, 1]]
    del label
    assert next(main)["name"] == ["c", "d"]  # next() releases first
    assert flags.tolist() == [[1, 1, 1], [1, 1, 0]]
    assert (main.recycled, main.fresh) == (1, 1)


def test_worker_loader_keeps_kept_batches_intact(reben: Store) -> None:
    """Keeping every batch of a worker-transform loader (``list(loader)``) never lets a worker
    overwrite one: the kept batches equal those of the device-transform path."""
    kw = dict(batch_size=2, num_workers=2, recommended=False, persistent_workers=True, predict_split=None)
    worker = BigEarthNetDataModule(reben, transform_on="worker", **kw)  # type: ignore[arg-type]
    device = BigEarthNetDataModule(reben, transform_on="device", **kw)  # type: ignore[arg-type]
    loader = worker.predict_dataloader()  # all 24 pairs: 12 batches
    for _ in range(2):  # persistent workers: the second epoch reuses the rings of the first
        it = iter(loader)
        for _ in it:  # dropping each batch: the workers recycle their slots
            pass
        assert (it.recycled, it.fresh) == (12, 0)
        it = iter(loader)
        kept = list(it)
        assert it.recycled >= 2 and it.fresh >= 2  # kept batches pin their slots: fresh memory
        ref = [device.transform(b) for b in device.predict_dataloader()]
        assert len(kept) == len(ref) > 2 * 4  # more batches than both workers' rings hold
        for a, b in zip(kept, ref, strict=True):
            assert a["name"] == b["name"] and set(a) == set(b)
            torch.testing.assert_close(a["s2"], b["s2"])
            torch.testing.assert_close(a["s1"], b["s1"])
        del kept, a, b  # the next epoch's iterator releases the slots these pinned
