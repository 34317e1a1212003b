"""The grid runner: runs are ordinary train + evaluate folders, a failing run is reported and the rest go
on, resume skips finished runs (and retries failed ones), 43-class runs are also scored on 19."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benmm.train.experiment import GridError, load_grid, plan, run_experiment, summarize
from benmm.train.experiment.runner import stand_in_file


def grid_file(tmp_path: Path, store: Path) -> Path:
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"not a weights file")
    path = tmp_path / "grid.toml"
    path.write_text(f"""\
recipe = "demo"
store = "{store}"
set = ["trainer.epochs=1", "data.batch_size=32", "optim.warmup_steps=0", "trainer.log_every_n_steps=1"]

[axes]
model = ["timm:test_resnet"]
modality = ["s2"]
labels = [43]
init = ["scratch", "broken"]
fraction = [0.5]
seed = [0]

[init]
broken = "{broken}"
""", encoding="utf-8")
    return path


def test_failing_runs_are_reported_and_resume_skips_finished_runs(synthetic, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    store = synthetic.store(pairs=60, seed=0, layout="v1")
    grid = load_grid(grid_file(tmp_path, store.path))
    out = tmp_path / "exp"
    first = run_experiment(grid, out, workers=0, trainer_kwargs={"accelerator": "cpu"})
    status = {o.run.run_id: o.status for o in first}
    assert status == {"timm-test-resnet_s2_L43_scratch_f0.5_s0": "done",
                      "timm-test-resnet_s2_L43_broken_f0.5_s0": "failed"}
    failed = next(o for o in first if o.status == "failed")
    assert "broken.safetensors" in (failed.error or "") and (failed.folder / "error.txt").is_file()
    # a finished run is an ordinary `benmm train` + `benmm evaluate` folder
    run43 = out / "runs" / "timm-test-resnet_s2_L43_scratch_f0.5_s0"
    assert (run43 / "checkpoints" / "best.ckpt").is_file()
    assert (run43 / "eval-test" / "metrics.json").is_file()
    recipe = json.loads((run43 / "recipe.json").read_text())
    assert recipe["data"]["fraction"] == 0.5 and recipe["model"]["name"] == "timm:test_resnet"
    train_pairs = len(__import__("benmm.data", fromlist=["x"]).BigEarthNetDataset(store, split="train"))
    result = json.loads((run43 / "result.json").read_text())
    assert result["train_samples"] == round(0.5 * train_pairs)
    # the 43-class run is also scored on 19 classes, on the same test pairs
    r43 = result
    assert set(r43["scores"]) == {"43", "19"}
    assert len(r43["scores"]["19"]["per_class"]) == 19 and "maximum" in r43["scores"]["19"]["rule"]
    assert r43["scores"]["19"]["metrics"]["n_samples"] == r43["scores"]["43"]["metrics"]["n_samples"]

    with pytest.raises(GridError, match="already holds runs: add --resume"):
        run_experiment(grid, out, workers=0)
    stamp = (run43 / "result.json").stat().st_mtime_ns
    second = run_experiment(grid, out, resume=True, workers=0, trainer_kwargs={"accelerator": "cpu"})
    assert {o.run.run_id: o.status for o in second} == {
        k: "skipped" if v == "done" else "failed" for k, v in status.items()}
    assert (run43 / "result.json").stat().st_mtime_ns == stamp

    # --dry-run: the finished run is listed as such, the rest priced from its measured speed
    planned = {r.run.run_id: r for r in plan(grid, out, store.path)}
    done = planned["timm-test-resnet_s2_L43_scratch_f0.5_s0"]
    assert done.finished and done.train_pairs == round(0.5 * train_pairs) and done.epochs == 1
    todo = planned["timm-test-resnet_s2_L43_broken_f0.5_s0"]
    assert not todo.finished and todo.seconds is not None and todo.seconds > 0
    assert todo.pair_passes == result["pair_passes"]

    summarize(grid, out, plots=False)
    md = (out / "results.md").read_text()
    assert "| 43 | scratch | 0.5 | 19 (from 43) | 1 |" in md and "| 43 | scratch | 0.5 | 43 | 1 |" in md
    assert (run43 / "eval-test" / "metrics-19.json").is_file()


def test_stand_in_is_a_labelled_timm_file_that_initialises_the_model(tmp_path: Path) -> None:
    from safetensors import safe_open

    from benmm.models import create_model

    path = stand_in_file(tmp_path, "imagenet", "timm:test_resnet")
    with safe_open(str(path), framework="pt") as fh:
        assert "NOT ImageNet" in (fh.metadata() or {})["benmm_stand_in"]
        stem = fh.get_tensor("conv1.0.weight") if "conv1.0.weight" in fh.keys() else None  # noqa: SIM118
    model = create_model("timm:test_resnet", modality="s2", num_classes=19, weights=str(path))
    fresh = create_model("timm:test_resnet", modality="s2", num_classes=19)
    loaded = dict(model.named_parameters())
    other = dict(fresh.named_parameters())
    convs = [k for k in loaded if loaded[k].ndim == 4]
    same = [k for k in convs if bool((loaded[k] == other[k]).all())]
    assert convs and not same  # the file's weights, not a fresh init
    assert stem is None or stem.shape[1] == 3  # an ImageNet-like 3-band stem, adapted on load
    with pytest.raises(GridError, match="not a timm model"):
        stand_in_file(tmp_path, "imagenet", "kbranch")
