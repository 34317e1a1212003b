"""Experiment grids: parsing and one-line errors naming the line, the 43 -> 19 scoring by a hand-computed
example, the training-split fraction, and the results table (mean ± std over seeds, per-class gains)."""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from benmm.cli.app import app
from benmm.labels import LABELS_19, LABELS_43, label_names, scores_to_19
from benmm.train.experiment import GridError, list_grids, load_grid, summarize
from benmm.train.experiment.runner import RESULT, run_folder

GOOD = """\
description = "t"
recipe = "demo"
store = "synthetic"
set = ["trainer.epochs=1"]

[axes]
model = ["timm:test_resnet"]
modality = ["s2", "s1s2-late"]
labels = [19, 43]
init = ["scratch", "imagenet"]
fraction = [0.5, 1.0]
seed = [0, 1]

[init]
imagenet = "stand-in"

[compare]
a = { init = "scratch" }
b = { init = "imagenet" }
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "grid.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_shipped_grids_load_and_cross_their_axes() -> None:
    assert {"demo-pretraining", "demo-43-vs-19", "paper-pretraining", "paper-43-vs-19"} <= set(list_grids())
    demo = load_grid("demo-pretraining")
    assert len(demo.runs()) == 3 * 2 * 2 and demo.inits == {"imagenet": "stand-in", "bigearthnet": "pretrain"}
    paper = load_grid("paper-43-vs-19.toml")
    assert paper.recipe == "paper-v1" and paper.axes["labels"] == [19, 43]
    with pytest.raises(GridError, match=r"paper-pretraining.toml:\d+: \[init\] imagenet: .* --init imagenet"):
        load_grid("paper-pretraining")  # the ImageNet file is the user's to give
    assert len(load_grid("paper-pretraining", check_files=False).runs()) == 36


def test_a_grid_crosses_every_axis_and_names_runs(tmp_path: Path) -> None:
    grid = load_grid(write(tmp_path, GOOD))
    runs = grid.runs()
    assert len(runs) == 2 * 2 * 2 * 2 * 2
    assert len({r.run_id for r in runs}) == len(runs)
    late = next(r for r in runs if r.modality == "s1s2-late")
    assert 'model.fusion="late"' in late.overrides() and 'model.modality="s1s2"' in late.overrides()
    assert runs[0].run_id == "timm-test-resnet_s2_L19_scratch_f0.5_s0"


@pytest.mark.parametrize(("old", "new", "message"), [
    ('description = "t"', 'descripton = "t"', r"grid.toml:1: unknown key 'descripton'; did you mean "
                                              r"'description'\?"),
    ('seed = [0, 1]', 'seeds = [0, 1]', r"grid.toml:12: unknown \[axes\] key 'seeds'; did you mean 'seed'\?"),
    ('modality = ["s2", "s1s2-late"]', 'modality = ["s2", "s3"]', r"grid.toml:8: modality value 's3' is not "
                                                                  r"valid: expected one of s1, s2, s1s2"),
    ('labels = [19, 43]', 'labels = [19, 42]', r"grid.toml:9: labels value 42 .* expected 19 or 43"),
    ('fraction = [0.5, 1.0]', 'fraction = [0, 1.0]', r"grid.toml:11: fraction value 0 .* \(0, 1\]"),
    ('init = ["scratch", "imagenet"]', 'init = ["scratch", "imagnet"]', r"grid.toml:10: init value 'imagnet' "
                                                                         r".*in \[init\] \(imagenet\)"),
    ('model = ["timm:test_resnet"]', 'model = ["resnet5O"]', r"grid.toml:7: model value 'resnet5O'"),
    ('set = ["trainer.epochs=1"]', 'set = ["trainer.epoch=1"]', r"grid.toml:4: unknown recipe setting "
                                                                r"'trainer.epoch'"),
    ('b = { init = "imagenet" }', 'b = { init = "bigearthnet" }', r"grid.toml:19: \[compare\] b: init = "
                                                                  r"'bigearthnet' is not on the grid"),
    ('imagenet = "stand-in"', 'imagenet = "missing.safetensors"', r"grid.toml:15: \[init\] imagenet: .*"
                                                                  r"missing.safetensors does not exist"),
    ('seed = [0, 1]', 'seed = [0, 0]', r"grid.toml:12: axis 'seed' repeats a value"),
    ('set = ["trainer.epochs=1"]', 'set = ["trainer.epochs=1"]\nworkers = -1',
     r"grid.toml:5: workers must be"),
])
def test_bad_grids_fail_in_one_line_naming_the_line(tmp_path: Path, old: str, new: str, message: str) -> None:
    assert old in GOOD
    with pytest.raises(GridError, match=message) as info:
        load_grid(write(tmp_path, GOOD.replace(old, new)))
    assert "\n" not in str(info.value)


def test_cli_bad_grid_is_one_line_and_exit_2(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD.replace('labels = [19, 43]', 'labels = [19, 44]'))
    res = CliRunner().invoke(app, ["experiment", str(path), "--out", str(tmp_path / "x"), "--dry-run"])
    text = " ".join(res.output.split())  # rich wraps long lines
    assert res.exit_code == 2
    assert "grid.toml:9: labels value 44 is not valid" in text.replace(": labels", ":labels").replace(
        ":labels", ": labels") and "Traceback" not in text
    res = CliRunner().invoke(app, ["experiment", "demo-pretraning", "--out", str(tmp_path / "x")])
    assert res.exit_code == 2 and "did you mean 'demo-pretraining'" in " ".join(res.output.split())
    res = CliRunner().invoke(app, ["experiment", "demo-43-vs-19", "--out", str(tmp_path / "x"), "--dry-run"])
    assert res.exit_code == 0, res.output
    assert "timm-test-resnet_s2_L43_scratch_f1_s1" in res.output
    assert "to run: 4 runs" in " ".join(res.output.split())


def test_43_to_19_takes_the_maximum_over_the_merged_classes() -> None:
    scores = np.zeros((2, 43), dtype=np.float32)
    i43 = {n: i for i, n in enumerate(LABELS_43)}
    # "Arable land" (19) merges Non-irrigated arable land, Permanently irrigated land, Rice fields
    scores[0, i43["Non-irrigated arable land"]] = 0.2
    scores[0, i43["Rice fields"]] = 0.7
    scores[1, i43["Permanently irrigated land"]] = 0.4
    # "Urban fabric" merges Continuous + Discontinuous urban fabric
    scores[0, i43["Continuous urban fabric"]] = 0.1
    scores[0, i43["Discontinuous urban fabric"]] = 0.3
    scores[1, i43["Airports"]] = 0.9  # maps to no 19-class label: dropped
    out = scores_to_19(scores)
    i19 = {n: i for i, n in enumerate(LABELS_19)}
    expected = np.zeros((2, 19), dtype=np.float32)
    expected[0, i19["Arable land"]] = 0.7
    expected[1, i19["Arable land"]] = 0.4
    expected[0, i19["Urban fabric"]] = 0.3
    np.testing.assert_array_equal(out, expected)
    # the alphabetical order on both sides moves the columns, not the values
    alpha43 = np.zeros((1, 43), dtype=np.float32)
    alpha43[0, label_names(43, "alphabetical").index("Rice fields")] = 0.6
    alpha19 = scores_to_19(alpha43, "alphabetical", "alphabetical")
    assert alpha19[0, label_names(19, "alphabetical").index("Arable land")] == pytest.approx(0.6)
    assert alpha19.sum() == pytest.approx(0.6)


def test_fraction_is_seeded_and_reproducible(synthetic) -> None:  # type: ignore[no-untyped-def]
    from benmm.data import BigEarthNetDataModule

    store = synthetic.store(pairs=60, seed=0, layout="v1")
    full = BigEarthNetDataModule(store, modality="s2", num_workers=0).dataset("train")
    dm = BigEarthNetDataModule(store, modality="s2", num_workers=0, train_fraction=0.25, fraction_seed=3)
    part = dm.dataset("train").names
    again = BigEarthNetDataModule(store, modality="s2", num_workers=0, train_fraction=0.25,
                                  fraction_seed=3).dataset("train").names
    other = BigEarthNetDataModule(store, modality="s2", num_workers=0, train_fraction=0.25,
                                  fraction_seed=4).dataset("train").names
    assert part == again and part != other
    assert len(part) == max(1, round(0.25 * len(full))) and set(part) <= set(full.names)
    assert [n for n in full.names if n in part] == part  # store order kept
    assert len(dm.dataset("val")) == len(BigEarthNetDataModule(store, modality="s2").dataset("val"))


def _fake_result(out: Path, run, ap: float, per_class_ap: dict[str, float], scores: dict) -> None:  # type: ignore[no-untyped-def]
    folder = run_folder(out, run)
    folder.mkdir(parents=True)
    metrics = {"ap_macro": ap, "ap_micro": ap / 2, "f1_macro": 0.1, "f1_micro": 0.2, "f2_micro": 0.3}
    block = {"metrics": metrics,
             "per_class": [{"class": c, "ap": v, "f1": v / 2} for c, v in per_class_ap.items()]}
    payload = {"scores": {str(run.labels): block, **scores}, "init_kind": "stand-in" if run.init != "scratch"
               else "scratch", "train_seconds": 1.0, "eval_seconds": 1.0, "pair_passes": 10}
    (folder / RESULT).write_text(json.dumps(payload), encoding="utf-8")


def test_results_table_mean_std_and_class_gains(tmp_path: Path) -> None:
    text = GOOD.replace('modality = ["s2", "s1s2-late"]', 'modality = ["s1s2"]').replace(
        'labels = [19, 43]', 'labels = [19]').replace('fraction = [0.5, 1.0]', 'fraction = [1.0]').replace(
        'model = ["timm:test_resnet"]', 'model = ["resnet50"]')
    grid = load_grid(write(tmp_path, text))
    out = tmp_path / "exp"
    for run in grid.runs():
        base = 0.5 if run.init == "scratch" else 0.6
        _fake_result(out, run, base + 0.1 * run.seed, {"Arable land": base + run.seed * 0.2,
                                                        "Urban fabric": 0.4}, {})
    summary = summarize(grid, out)
    md = (out / "results.md").read_text()
    # scratch: 0.5, 0.6 -> mean 0.55, sample std 0.0707; reBEN card figure beside it (same setting)
    assert "| resnet50 | s1s2 | 19 | scratch | 1 | 19 | 2 | 0.5500 ± 0.0707 |" in md
    assert "imagenet (stand-in: random timm weights)" in md
    assert "AP 0.7033 / 0.8607 (reBEN" in md and "resnet50-all-v0.2.0" in md
    rows = list(csv.DictReader(io.StringIO((out / "results.csv").read_text())))
    assert float(rows[1]["ap_macro_mean"]) == pytest.approx(0.65)
    assert float(rows[1]["ap_macro_std"]) == pytest.approx(math.sqrt(0.005), abs=1e-6)
    classes = (out / "classes.md").read_text()
    # Arable land: scratch (0.5 + 0.7) / 2 = 0.6, stand-in (0.6 + 0.8) / 2 = 0.7 -> +0.1 first
    assert classes.index("| Arable land | 0.6000 | 0.7000 | +0.1000 |") < classes.index("| Urban fabric |")
    assert {p.name for p in summary["files"]} >= {"results.png", "classes.png", "results.csv", "classes.csv"}


def test_a_43_class_setting_gets_a_row_on_19(tmp_path: Path) -> None:
    text = GOOD.replace('modality = ["s2", "s1s2-late"]', 'modality = ["s2"]').replace(
        'init = ["scratch", "imagenet"]', 'init = ["scratch"]').replace(
        'fraction = [0.5, 1.0]', 'fraction = [1.0]').replace(
        'a = { init = "scratch" }', 'a = { labels = 43 }').replace(
        'b = { init = "imagenet" }', 'b = { labels = 19 }')
    grid = load_grid(write(tmp_path, text))
    out = tmp_path / "exp"
    for run in grid.runs():
        extra = {"19": {"metrics": {"ap_macro": 0.3, "ap_micro": 0.3, "f1_macro": 0.3, "f1_micro": 0.3,
                                    "f2_micro": 0.3}, "per_class": [{"class": "Arable land", "ap": 0.3,
                                                                     "f1": 0.3}]}} if run.labels == 43 else {}
        _fake_result(out, run, 0.4, {"Arable land": 0.5}, extra)
    summarize(grid, out, plots=False)
    md = (out / "results.md").read_text()
    assert "| 43 | scratch | 1 | 19 (from 43) | 2 | 0.3000 ± 0.0000 |" in md
    assert "| 43 | scratch | 1 | 43 | 2 | 0.4000 ± 0.0000 |" in md
    assert "| Arable land | 0.3000 | 0.5000 | +0.2000 |" in (out / "classes.md").read_text()
