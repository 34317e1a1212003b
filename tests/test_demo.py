"""`benmm demo`: the whole pipeline on a small synthetic archive, cached between runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

from benmm.cli.app import app


def test_demo_help() -> None:
    res = CliRunner().invoke(app, ["demo", "--help"])
    assert res.exit_code == 0 and "--pairs" in res.output


def test_cache_root_follows_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from benmm.demo import cache_root

    monkeypatch.setenv("BENMM_CACHE_DIR", str(tmp_path / "c"))  # the one cache variable
    assert cache_root() == tmp_path / "c"
    monkeypatch.setenv("BENMM_CACHE_DIR", "off")  # caching off: the demo keeps its data in the report
    assert cache_root(tmp_path / "report") == tmp_path / "report" / "cache"
    monkeypatch.delenv("BENMM_CACHE_DIR")
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    assert cache_root() == Path.home() / ".cache" / "benmm"


def test_demo_recipe_uses_every_band() -> None:
    """The demo models see all 12 S2 bands (K-Branch with its 60 m B01/B09 branch) and VV, VH."""
    from benmm.bands import S1_BANDS, S2_BANDS
    from benmm.demo import DEMO_RECIPE, DEMO_RUNS
    from benmm.train.fit import model_from_recipe
    from benmm.train.recipes import load_recipe

    for _, modality in DEMO_RUNS:
        overrides = [f"modality={modality}"] + (['model.bands="all"'] if modality == "s1" else [])
        model = model_from_recipe(load_recipe(DEMO_RECIPE, overrides), num_classes=19)
        assert model.spec.s2_bands == (S2_BANDS if modality != "s1" else ())
        assert model.spec.s1_bands == (S1_BANDS if modality != "s2" else ())
        if modality != "s1":
            assert set(model.branches) >= {"b10m", "b20m", "b60m"}


def test_viz_plots(tmp_path: Path) -> None:
    import numpy as np

    from benmm import viz

    log = tmp_path / "metrics.csv"
    log.write_text("epoch,step,train/loss_epoch,val/ap_macro,val/loss,train/loss_step\n"
                   "0,4,,0.4,0.5,\n0,4,0.6,,,\n0,2,,,,0.7\n1,9,,0.5,0.45,\n1,9,0.5,,,\n")
    curves = viz.read_csv_log(log)
    assert curves["val/ap_macro"] == [(0.0, 0.4), (1.0, 0.5)] and "train/loss_step" not in curves
    assert viz.training_curves(log, tmp_path / "c.png") is not None
    rng = np.random.default_rng(0)
    bands = {"B02": rng.random((120, 120)), "B03": rng.random((120, 120)), "B04": rng.random((120, 120)),
             "VV": rng.normal(-12, 2, (120, 120)), "VH": rng.normal(-18, 2, (120, 120))}
    rows = [{"name": "a", "ap_macro": 0.5}, {"name": "b", "ap_macro": 0.7}]
    made = (viz.render_pair(bands, tmp_path / "p.png", "pair"), viz.summary_bars(rows, tmp_path / "s.png"))
    for path in made:
        assert path.stat().st_size > 1000 and path.read_bytes()[:4] == b"\x89PNG"


@pytest.mark.slow
def test_demo_runs_end_to_end_and_reuses_its_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from benmm.demo import run_demo, summary_table

    monkeypatch.setenv("BENMM_CACHE_DIR", str(tmp_path / "cache"))
    console = Console(record=True, width=140)
    ctx = run_demo(out=tmp_path / "report", pairs=800, epochs=3, console=console, progress=False)
    assert set(ctx.runs) == {"S1", "S2", "S1+S2"}
    for label, modality in (("S1", "s1"), ("S2", "s2"), ("S1+S2", "s1s2")):
        metrics = json.loads((tmp_path / "report" / modality / "metrics.json").read_text())["metrics"]
        assert metrics["ap_macro"] == pytest.approx(ctx.runs[label]["metrics"]["ap_macro"])
        for name in ("per_class.csv", "per_class.png", "pr_curves.png", "training_curves.png"):
            assert (tmp_path / "report" / modality / name).is_file()
    # the learnable signal: the fused model is far above the label-frequency baseline
    assert ctx.runs["S1+S2"]["metrics"]["ap_macro"] > ctx.baseline["ap_macro"] + 0.15
    assert len(ctx.examples) == 6 and all(p.true_labels for p in ctx.examples)
    assert len(list((tmp_path / "report" / "examples").glob("*.png"))) == 6
    summary = json.loads((tmp_path / "report" / "summary.json").read_text())
    assert summary["pairs"] == 800 and "total" in summary["timings_s"]
    console.print(summary_table(ctx))
    text = console.export_text()
    assert "label frequency" in text and "S1+S2" in text
    # the cross-modal row: S1 test queries vs the S2 train archive, clearly above a random ranking
    cross = summary["cross_modal"]
    assert cross["direction"] == "S1->S2" and cross["queries"] == summary["retrieval"]["queries"]
    assert cross["metrics"]["map"]["model"] > cross["metrics"]["map"]["random"] + 0.05, cross["metrics"]
    assert cross["metrics"]["ndcg"]["model"] > cross["metrics"]["ndcg"]["random"] + 0.05
    assert cross["beats_random"] and "cross-modal" in summary["timings_s"]
    assert "retrieval by direction @20" in text and "S1->S2" in text
    # second run: archive and store come from the cache
    archive_mtime = ctx.archive.stat().st_mtime
    again = run_demo(out=tmp_path / "report2", pairs=800, epochs=1, console=console, progress=False,
                     examples=False, cross_modal=False)
    assert again.archive.stat().st_mtime == archive_mtime
    assert "reusing the synthetic archive" in console.export_text()
