"""The retrieval recipes (hashing, cross-modal labels / pairs): a few training steps on a small synthetic
store, checkpoints and resume, the embed contract of every model kind, and bad input."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from benmm.cli.app import app
from benmm.errors import RetrievalError
from benmm.models import create_model
from benmm.models.retrieval import CrossModalModel, HashModel
from benmm.train.fit import TrainError, train
from benmm.train.recipes import RecipeError, load_recipe
from benmm.train.task import load_checkpoint

if TYPE_CHECKING:
    from conftest import Synthetic

TINY = ['model.name="kbranch"', "model.width=4", "model.embed=16", "model.downsample=4", "model.bits=16",
        "batch_size=16", "epochs=1", "log_every_n_steps=1", "data.augment=false"]


@pytest.fixture(scope="module")
def store(synthetic: Synthetic) -> Path:
    """The synthetic reBEN archive test_task trains on (shared: read only)."""
    return synthetic.archive(pairs=150, seed=1, layout="reben")


@pytest.fixture(scope="module")
def runs(store: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("retrieval-runs")
    return {name: train(store, root / name, recipe=recipe, overrides=[*TINY, *extra], workers=0,
                        progress=False, limit_train_batches=3)
            for name, recipe, extra in (("hashing", "hashing", ["classification=0.5"]),
                                        ("labels", "cross-modal", []),
                                        ("pairs", "cross-modal", ["supervision=pairs"]))}


def _batch(n: int = 3) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return {"s2": torch.randn(n, 12, 120, 120), "s1": torch.randn(n, 2, 120, 120)}


def test_recipes_load_with_their_keys() -> None:
    rec = load_recipe("hashing", ["model.bits=32", "temperature=0.1"])
    assert rec["task"] == "hashing" and rec["model"]["bits"] == 32
    assert rec["retrieval"]["temperature"] == pytest.approx(0.1)
    cross = load_recipe("cross-modal", ["supervision=pairs", 'model.s1_name="resnet18"'])
    assert cross["retrieval"]["supervision"] == "pairs" and cross["model"]["s1_name"] == "resnet18"
    assert load_recipe("reben")["task"] == "classification"
    with pytest.raises(RecipeError, match=r"model.bits = 12: expected .*multiple of 8"):
        load_recipe("hashing", ["model.bits=12"])
    with pytest.raises(RecipeError, match="belong to the hashing and cross-modal recipes"):
        load_recipe("reben", ["model.bits=32"])
    with pytest.raises(RecipeError, match="need two modalities: use the cross-modal recipe"):
        load_recipe("hashing", ["supervision=pairs"])
    with pytest.raises(RecipeError, match=r"retrieval.supervision = 'none': expected labels"):
        load_recipe("cross-modal", ['supervision="none"'])


def test_hashing_trains_and_monitors_validation_map(runs: dict[str, Any], store: Path) -> None:
    run = runs["hashing"]
    assert run.best == run.out / "checkpoints" / "best.ckpt" and run.best.is_file()
    header = (run.out / "metrics.csv").read_text().splitlines()[0].split(",")
    for col in ("val/map@100", "val/ndcg@100", "val/quantization", "val/balance", "val/classification",
                "train/loss_epoch"):
        assert col in header
    assert 0.0 < run.val["map@100"] <= 1.0
    model, info = load_checkpoint(run.best)
    assert isinstance(model, HashModel) and model.code_bits == 16 and model.modalities == ("s1s2",)
    assert info["retrieval"] == {"kind": "hashing", "bits": 16, "supervision": "labels"}
    # the training-only label classifier on the codes is in the training checkpoint, not in the model
    raw = torch.load(run.best, map_location="cpu", weights_only=True)["state_dict"]
    assert "classifier.weight" in raw and not any(k.startswith("classifier") for k in model.state_dict())
    batch = _batch()
    with torch.no_grad():
        codes = model.embed(batch, "s1s2")
        assert codes.shape == (3, 16) and bool((codes.abs() < 1).all())
        torch.testing.assert_close(codes, model.features(batch))
        exported, _ = load_checkpoint(run.out / "model.safetensors")
        torch.testing.assert_close(exported.embed(batch), codes)
    with pytest.raises(RetrievalError, match=r"embeds s1s2 patches, not 's1'"):
        model.embed(batch, "s1")


def test_hashing_resumes_and_refuses_another_code_length(runs: dict[str, Any], store: Path) -> None:
    out = runs["hashing"].out
    last = out / "checkpoints" / "last.ckpt"
    with pytest.raises(TrainError, match="retrieval head"):
        train(store, out, recipe="hashing", overrides=[*TINY, "model.bits=32"], resume=last, workers=0,
              progress=False)
    with pytest.raises(TrainError, match="codes must be on in both or off in both"):
        train(store, out, recipe="hashing", overrides=TINY, resume=last, workers=0, progress=False)
    again = train(store, out, recipe="hashing", overrides=[*TINY[:-3], "epochs=2", "classification=0.5"],
                  resume=last, workers=0, progress=False, export=False, limit_train_batches=3)
    assert again.epochs == 2


@pytest.mark.parametrize("name", ["labels", "pairs"])
def test_cross_modal_embeds_each_side_into_one_code_space(runs: dict[str, Any], name: str) -> None:
    run = runs[name]
    model, info = load_checkpoint(run.best)
    assert isinstance(model, CrossModalModel) and model.modalities == ("s1", "s2", "s1s2")
    assert model.code_bits == 16 and info["retrieval"]["supervision"] == name
    for key in ("s1->s2", "s2->s1", "s1->s1", "s2->s2"):
        assert 0.0 <= run.val[f"{key}/map@100"] <= 1.0
    assert run.val["map@100"] == pytest.approx(np.mean([run.val["s1->s2/map@100"],
                                                        run.val["s2->s1/map@100"]]))
    batch = _batch()
    with torch.no_grad():
        s1 = model.embed({"s1": batch["s1"]}, "s1")  # one side needs only its own bands
        s2 = model.embed(batch, "s2")
        assert s1.shape == s2.shape == (3, 16)
        torch.testing.assert_close(model.embed(batch, "s1s2"), (s1 + s2) / 2)
    with pytest.raises(RetrievalError, match=r"embeds s1, s2, s1s2 patches, not 'rgb'"):
        model.embed(batch, "rgb")


def test_classifiers_keep_features_as_their_embedding() -> None:
    model = create_model("kbranch", modality="s2", width=4, embed=16, downsample=4).eval()
    batch = _batch(2)
    assert model.modalities == ("s2",) and model.code_bits is None
    with torch.no_grad():
        torch.testing.assert_close(model.embed(batch, "s2"), model.features(batch))
        torch.testing.assert_close(model.embed(batch), model.features(batch))
    with pytest.raises(RetrievalError, match=r"model 'kbranch' embeds s2 patches, not 's1'"):
        model.embed(batch, "s1")


def test_embed_one_side_of_a_cross_modal_checkpoint(runs: dict[str, Any], store: Path,
                                                     tmp_path: Path) -> None:
    ckpt = runs["labels"].best
    res = CliRunner().invoke(app, ["embed", str(ckpt), str(store), str(tmp_path / "s1"), "--modality", "s1",
                                   "--split", "test"])
    assert res.exit_code == 0, res.output
    from benmm.retrieval.embed import EmbeddingSet

    emb = EmbeddingSet.load(tmp_path / "s1")
    assert emb.vectors.shape[1] == 16 and emb.modality == "s1" and emb.info["modality"] == "s1"
    assert emb.info["code_bits"] == 16 and emb.codes is not None and emb.codes.shape[0] == len(emb)
    # the same S1 codes as the model gives the S1 bands alone
    from benmm.retrieval.embed import make_embedder

    emb2 = make_embedder(ckpt, modality="s2")
    assert emb2.bands == ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B11", "B12")
    bad = CliRunner().invoke(app, ["embed", str(runs["hashing"].best), str(store), str(tmp_path / "x"),
                                   "--modality", "s1"])
    assert bad.exit_code == 2 and "embeds modalities s1s2, not 's1'" in bad.output
    assert "Traceback" not in bad.output and len(bad.output.strip().splitlines()) <= 3
    meta = json.loads((tmp_path / "s1" / "embeddings.json").read_text())
    assert meta["modality"] == "s1"


def test_export_keeps_the_head_and_evaluate_refuses_codes(runs: dict[str, Any], store: Path,
                                                          tmp_path: Path) -> None:
    from benmm.errors import BenmmError
    from benmm.train.evaluate import evaluate
    from benmm.train.export import export

    run = runs["pairs"]
    (path,) = export(run.out, "safetensors", tmp_path / "xm.safetensors")
    model, info = load_checkpoint(path)
    assert isinstance(model, CrossModalModel) and info["retrieval"]["supervision"] == "pairs"
    with pytest.raises(BenmmError, match="cross-modal checkpoint makes codes, not class scores"):
        evaluate(run.best, store, split="val", workers=0, progress=False, plots=False)


@pytest.mark.slow
def test_cross_modal_trains_on_two_cpu_ranks(store: Path, tmp_path: Path) -> None:
    """DDP through Lightning (2 CPU processes, gloo): the retrieval task trains, validates with its code
    metrics (codes gathered from both ranks), and leaves a checkpoint that loads as a cross-modal model."""
    res = train(store, tmp_path / "ddp", recipe="cross-modal", overrides=TINY, workers=0, progress=False,
                accelerator="cpu", devices=2, strategy="ddp_spawn", export=False, limit_train_batches=2)
    model, info = load_checkpoint(res.best)
    assert isinstance(model, CrossModalModel) and model.code_bits == 16
    assert info["retrieval"]["kind"] == "cross-modal"
    # the spawned ranks' metrics stay in them; the checkpoint keeps what the monitor saw
    state = torch.load(res.best, map_location="cpu", weights_only=False)["callbacks"]
    best = [v for k, v in state.items() if k.startswith("ModelCheckpoint")]
    assert best and best[0]["monitor"].startswith("val/map@")
    assert 0.0 <= float(best[0]["best_model_score"]) <= 1.0
