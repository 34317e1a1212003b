"""Resume is exact: K epochs + resume to N give the weights of N uninterrupted epochs; a resume with other
data settings is refused; checkpoints carry their statistics' values, not a file path."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import lightning as L
import pytest
import torch
from torch.utils.data import RandomSampler

from benmm.data.datamodule import EpochRandomSampler
from benmm.train.fit import TrainError, train
from benmm.train.task import load_checkpoint

if TYPE_CHECKING:
    from conftest import Synthetic

TINY = ["model.width=4", "model.embed=16", "batch_size=16", "log_every_n_steps=1"]


@pytest.fixture(scope="module")
def store(synthetic: Synthetic) -> Path:
    return synthetic.archive(pairs=150, seed=1, layout="reben")


def test_epoch_sampler_gives_one_samplers_orders_and_jumps_to_an_epoch() -> None:
    kept = RandomSampler(range(500), generator=torch.Generator().manual_seed(7))
    orders = [list(kept) for _ in range(4)]
    sampler = EpochRandomSampler(500, 7)
    assert [list(sampler) for _ in range(4)] == orders  # an uninterrupted run: unchanged orders
    resumed = EpochRandomSampler(500, 7)
    resumed.set_epoch(2)  # what Lightning does when a fit resumes at epoch 2
    assert list(resumed) == orders[2] and list(resumed) == orders[3]
    assert orders[0] != orders[1]


class _StopAfterFirstEpoch(L.Callback):
    def on_train_epoch_end(self, trainer: L.Trainer, *args: Any) -> None:
        trainer.should_stop = True  # as a run stopped after epoch 0 (then resumed with the same recipe)


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["state_dict"]


def test_k_epochs_then_resume_equals_n_uninterrupted_epochs(store: Path, tmp_path: Path) -> None:
    recipe = [*TINY, "epochs=3"]
    full = train(store, tmp_path / "full", recipe="demo", overrides=recipe, workers=0, progress=False,
                 export=False)
    assert full.epochs == 3
    part = tmp_path / "part"
    first = train(store, part, recipe="demo", overrides=recipe, workers=0, progress=False, export=False,
                  extra_callbacks=[_StopAfterFirstEpoch()])
    assert first.epochs == 1
    resumed = train(store, part, recipe="demo", overrides=recipe, resume=part / "checkpoints" / "last.ckpt",
                    workers=0, progress=False, export=False)
    assert resumed.epochs == 3
    a, b = _weights(tmp_path / "full"), _weights(part)
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, f"resumed weights differ from the uninterrupted run's: {different[:5]}"


def test_resume_with_other_data_settings_is_refused(store: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    train(store, out, recipe="demo", overrides=[*TINY, "epochs=1"], workers=0, progress=False,
          export=False)
    with pytest.raises(TrainError, match=r"other data settings \(order=official, class_names=\[19 names, "
                       r"first 'Urban fabric'\]; this run: order=alphabetical"):
        train(store, out, recipe="demo", overrides=[*TINY, "epochs=2", "data.order=alphabetical"],
              resume=out / "checkpoints" / "last.ckpt", workers=0, progress=False)
    with pytest.raises(TrainError, match=r"other data settings \(resample=nearest; this run: "
                       r"resample=bilinear"):
        train(store, out, recipe="demo", overrides=[*TINY, "epochs=2", "data.resample=bilinear"],
              resume=out / "checkpoints" / "last.ckpt", workers=0, progress=False)


def test_checkpoints_carry_their_statistics_values(store: Path, tmp_path: Path) -> None:
    from benmm.bands import stats_v1

    stats = tmp_path / "stats.json"
    values = stats_v1().to_json() | {"name": "mine", "mean": {**stats_v1().mean, "B02": 400.0}}
    stats.write_text(json.dumps(values))
    run = train(store, tmp_path / "run", recipe="demo", overrides=[*TINY, "epochs=1", f"data.stats={stats}"],
                workers=0, progress=False)
    stats.unlink()  # the file is gone (another machine): the checkpoint still knows its statistics
    for path in (run.out / "checkpoints" / "best.ckpt", run.out / "model.safetensors"):
        _, info = load_checkpoint(path)
        assert info["stats"]["name"] == "mine" and info["stats"]["mean"]["B02"] == 400.0, path
