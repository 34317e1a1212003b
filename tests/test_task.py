"""Training task, recipes, checkpoints, resume, evaluate/predict, DDP, and their CLI."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from benmm.cli.app import app
from benmm.train.fit import TrainError, check_splits, train
from benmm.train.recipes import RecipeError, list_recipes, load_recipe
from benmm.train.task import load_checkpoint, name_hash

if TYPE_CHECKING:
    from conftest import Synthetic

TINY = ["model.width=4", "model.embed=16", "batch_size=16", "epochs=1", "log_every_n_steps=1"]


@pytest.fixture(scope="module")
def store(synthetic: Synthetic) -> Path:
    """A synthetic reBEN-layout archive (a store as published): 150 pairs, seeded (shared: read only)."""
    return synthetic.archive(pairs=150, seed=1, layout="reben")


@pytest.fixture(scope="module")
def trained(store: Path, tmp_path_factory: pytest.TempPathFactory) -> Any:
    out = tmp_path_factory.mktemp("run") / "s1s2"
    return train(store, out, recipe="demo", overrides=TINY, workers=0, progress=False)


def test_recipes_load_and_override() -> None:
    assert {"paper-v1", "reben", "demo"} <= set(list_recipes())
    paper = load_recipe("paper-v1")
    assert paper["optim"]["optimizer"] == "adam" and paper["optim"]["lr"] == pytest.approx(1e-3)
    assert paper["data"]["resample"] == "bicubic" and paper["trainer"]["epochs"] == 100
    reben = load_recipe("reben", ["lr=3e-4", "trainer.epochs=2", 'model.bands="s2-rgb"', "model.width=8"])
    assert reben["optim"] == {"optimizer": "adamw", "lr": 3e-4, "weight_decay": 0.01, "scheduler": "cosine",
                              "warmup_steps": 1000}
    assert reben["data"]["batch_size"] == 512 and reben["data"]["resample"] == "nearest"
    assert reben["data"]["augment"] is True and reben["model"]["drop_path_rate"] == pytest.approx(0.15)
    assert reben["trainer"]["epochs"] == 2 and reben["model"]["bands"] == "s2-rgb"
    with pytest.raises(RecipeError, match=r"unknown recipe 'rebem'.*did you mean 'reben'"):
        load_recipe("rebem")
    with pytest.raises(RecipeError, match=r"unknown recipe setting 'optim.lrr'"):
        load_recipe("reben", ["optim.lrr=1"])
    with pytest.raises(RecipeError, match="not key=value"):
        load_recipe("reben", ["lr"])


def test_train_writes_checkpoints_logs_and_export(trained: Any, store: Path) -> None:
    out = trained.out
    assert trained.best == out / "checkpoints" / "best.ckpt" and trained.best.is_file()
    assert (out / "checkpoints" / "last.ckpt").is_file()
    assert (out / "model.safetensors").is_file()
    header = (out / "metrics.csv").read_text().splitlines()[0].split(",")
    for col in ("val/ap_macro", "val/loss", "train/loss_epoch", "val/one_error", "val/n_samples"):
        assert col in header
    assert json.loads((out / "recipe.json").read_text())["model"]["width"] == 4
    # the logged validation AP is the one an evaluation of the best checkpoint on val recomputes
    from benmm.train.evaluate import evaluate

    again = evaluate(trained.best, store, split="val",
                     workers=0, progress=False, plots=False)
    assert trained.val["ap_macro"] == pytest.approx(again.metrics["ap_macro"], rel=1e-4)
    model, info = load_checkpoint(trained.best)
    assert info["name"] == "kbranch" and info["modality"] == "s1s2" and info["labels"] == 19
    assert info["resample"] == "nearest" and len(info["class_names"]) == 19
    export, info2 = load_checkpoint(out / "model.safetensors")
    assert info2["bands"] == info["bands"]
    assert model.spec.bands == ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B11",
                                "B12", "VV", "VH")  # the demo recipe's all 12 S2 bands + S1
    batch = {"s2": torch.randn(2, 12, 120, 120), "s1": torch.randn(2, 2, 120, 120)}
    with torch.no_grad():
        torch.testing.assert_close(model(batch), export(batch))


def test_resume_and_refuse_overwrite(trained: Any, store: Path) -> None:
    with pytest.raises(TrainError, match="already holds checkpoints"):
        train(store, trained.out, recipe="demo", overrides=TINY, workers=0, progress=False)
    again = train(store, trained.out, recipe="demo", overrides=[*TINY[:-2], "epochs=2"],
                  resume=trained.out / "checkpoints" / "last.ckpt", workers=0, progress=False, export=False)
    assert again.epochs == 2
    epochs = {line.split(",")[0] for line in (trained.out / "metrics.csv").read_text().splitlines()[1:]}
    assert epochs == {"0", "1"}  # the resumed run kept the first epoch's log rows
    with pytest.raises(TrainError, match="checkpoint of another model"):
        train(store, trained.out, recipe="demo", overrides=[*TINY, "modality=s2"],
              resume=trained.out / "checkpoints" / "last.ckpt", workers=0, progress=False)


def test_ctrl_c_saves_a_resumable_checkpoint(store: Path, tmp_path: Path) -> None:
    import lightning as L

    from benmm.train.fit import TrainInterrupted

    class CtrlC(L.Callback):
        def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
            if trainer.global_step == 2:
                raise KeyboardInterrupt

    out = tmp_path / "run"
    with pytest.raises(TrainInterrupted, match=r"resume with --resume .*interrupted\.ckpt"):
        train(store, out, recipe="demo", overrides=TINY, workers=0, progress=False,
              extra_callbacks=[CtrlC()])
    saved = out / "checkpoints" / "interrupted.ckpt"
    assert saved.is_file()
    assert torch.load(saved, map_location="cpu", weights_only=True)["global_step"] == 2
    done = train(store, out, recipe="demo", overrides=TINY, resume=saved, workers=0, progress=False)
    assert done.epochs == 1 and done.best is not None


def test_empty_split_is_an_error_before_work() -> None:
    class FakeDM:
        hparams: ClassVar[dict[str, str]] = {"store": "x.store"}

        def dataset(self, split: str) -> list[int]:
            return [] if split == "val" else [1]

    with pytest.raises(TrainError, match="the val split has no samples"):
        check_splits(FakeDM(), ("train", "val"))


def test_name_hash_is_stable() -> None:
    a = name_hash(["S2A_MSIL2A_20170613T101031_34_81", "x"])
    b = name_hash(["S2A_MSIL2A_20170613T101031_34_81", "x"])
    assert torch.equal(a, b) and a[0] != a[1] and a.dtype == torch.int64


def test_evaluate_and_predict(trained: Any, store: Path, tmp_path: Path, v1_sample_root: Path,
                              reben_sample_root: Path) -> None:
    from benmm.data import BigEarthNetDataset
    from benmm.train.evaluate import evaluate, predict
    from benmm.train.metrics import compute_metrics

    res = evaluate(trained.best, store, split="test", out=tmp_path / "ev", workers=0, progress=False)
    test = BigEarthNetDataset(store, split="test")
    assert res.metrics["n_samples"] == len(test)
    for name in ("metrics.json", "per_class.csv", "per_class.png", "pr_curves.png", "training_curves.png"):
        assert (tmp_path / "ev" / name).is_file(), name
    # predictions over the whole store agree with the evaluation of the test split
    preds = {p.name: p for p in predict(trained.best, store)}
    names = test.names
    assert set(names) <= set(preds)
    scores = np.array([[preds[n].probs[c] for c in preds[n].probs] for n in names])
    truth = test.labels()
    again = compute_metrics(scores, truth)
    assert again["ap_macro"] == pytest.approx(res.metrics["ap_macro"], abs=1e-5)
    # the real v1 example pairs: an archive and one patch folder
    real = predict(trained.best, v1_sample_root)
    assert len(real) == 6 and all(0 <= v <= 1 for p in real for v in p.probs.values())
    assert all(p.true_labels for p in real)
    reben = predict(trained.best, reben_sample_root)
    assert len(reben) == 24 and all(p.true_labels is not None for p in reben)
    folder = next((v1_sample_root / "BigEarthNet-S2-Example").iterdir())
    one = predict(trained.best, folder)
    assert [p.name for p in one] == [folder.name]


def test_cli_train_evaluate_predict(store: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    out = tmp_path / "cli-run"
    res = runner.invoke(app, ["train", str(store), "--out", str(out), "--recipe", "demo", "--modality", "s2",
                              "--epochs", "1", "--batch-size", "16", "--workers", "0",
                              "--set", "model.width=4", "--set", "model.embed=16"])
    assert res.exit_code == 0, res.output
    assert "best checkpoint" in res.output and (out / "checkpoints" / "best.ckpt").is_file()
    res = runner.invoke(app, ["evaluate", str(out / "checkpoints" / "best.ckpt"), str(store),
                              "--split", "val", "--workers", "0", "--out", str(tmp_path / "ev")])
    assert res.exit_code == 0, res.output
    assert "ap_macro" in res.output and (tmp_path / "ev" / "metrics.json").is_file()
    res = runner.invoke(app, ["predict", str(out / "model.safetensors"), str(store),
                              "--out", str(tmp_path / "p.csv")])
    assert res.exit_code == 0, res.output
    assert len((tmp_path / "p.csv").read_text().splitlines()) == 151
    res = runner.invoke(app, ["models"])
    assert res.exit_code == 0 and "kbranch" in res.output and "paper-v1" in res.output


@pytest.mark.parametrize(("args", "message"), [
    (["--recipe", "nope"], "unknown recipe"),
    (["--model", "resnet5"], "unknown model"),
    (["--bands", "B10"], "unknown band"),
    (["--set", "optim.lrr=1"], "unknown recipe setting"),
])
def test_cli_bad_input_is_a_clean_error(store: Path, tmp_path: Path, args: list[str], message: str) -> None:
    res = CliRunner().invoke(app, ["train", str(store), "--out", str(tmp_path / "x"), "--workers", "0",
                                   *args])
    assert res.exit_code == 2, res.output
    assert message in res.output and "Traceback" not in res.output


@pytest.mark.slow
def test_ddp_two_cpu_processes_cover_val_once(store: Path, tmp_path: Path) -> None:
    """One short epoch with 2 CPU processes (gloo): val metrics are over every val pair exactly once,
    and equal a single-process validation of the same final weights."""
    import lightning as L

    from benmm.data import BigEarthNetDataset
    from benmm.train.fit import datamodule_for, model_from_recipe
    from benmm.train.task import ClassificationTask

    rec = load_recipe("demo", TINY)
    model = model_from_recipe(rec, 19)
    dm = datamodule_for(store, model, rec, workers=0)
    n_val = len(BigEarthNetDataset(store, split="val"))
    assert n_val > 2
    task = ClassificationTask(model, optim=dict(rec["optim"]))
    trainer = L.Trainer(accelerator="cpu", devices=2, strategy="ddp_spawn", max_epochs=1, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, num_sanity_val_steps=0,
                        enable_model_summary=False)
    trainer.fit(task, datamodule=dm)
    ddp = {k: float(v) for k, v in trainer.callback_metrics.items()}
    assert ddp["val/n_samples"] == n_val
    single = L.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                       enable_model_summary=False)
    dm1 = datamodule_for(store, model, rec, workers=0)
    task1 = ClassificationTask(task.model, optim=dict(rec["optim"]))
    single.validate(task1, datamodule=dm1, verbose=False)
    ref = {k: float(v) for k, v in single.callback_metrics.items()}
    assert ref["val/n_samples"] == n_val
    for key in ("val/ap_macro", "val/ap_micro", "val/f1_micro", "val/hamming_loss", "val/one_error"):
        assert ddp[key] == pytest.approx(ref[key], abs=1e-5), key
