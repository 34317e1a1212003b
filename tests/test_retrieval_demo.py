"""Retrieval's part of the demo: embed, index, print model vs random metrics."""

from __future__ import annotations

import io
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from rich.console import Console

from benmm.retrieval.demo import run
from benmm.retrieval.index import RetrievalIndex

if TYPE_CHECKING:
    from conftest import Synthetic


def test_demo_step_builds_an_index_and_prints_metrics(tmp_path: Path, reben_sample_root: Path) -> None:
    buf = io.StringIO()
    res = run("band-stats", reben_sample_root, tmp_path / "demo", k=5, console=Console(file=buf, width=200))
    ix = RetrievalIndex.load(res["index"])
    assert len(ix) == 8 and ix.kind == "binary" and ix.extra_items is not None
    assert res["model"]["queries"] == 8 and res["k"] == 5
    text = buf.getvalue()
    assert "8 test queries vs 8 train patches" in text and "@5 random" in text and "NDCG@K" in text
    # the printed numbers are the returned ones
    assert f"{res['model']['precision'][5]:.3f}" in text and f"{res['random']['ndcg'][5]:.3f}" in text


def test_demo_hook_returns_json_figures(tmp_path: Path, reben_sample_root: Path) -> None:
    import json
    from types import SimpleNamespace

    from benmm.retrieval.demo import demo_step

    buf = io.StringIO()
    ctx = SimpleNamespace(
        checkpoint=lambda label="S1+S2": Path("band-stats"),
        store=reben_sample_root,
        report=tmp_path,
        console=Console(file=buf, width=200),
    )
    out = demo_step(ctx)
    json.dumps(out)  # goes into the demo's summary.json
    assert Path(out["index"]).parent == tmp_path / "retrieval" and out["queries"] == 8
    assert set(out["metrics"]) == {"precision", "recall", "map", "wmap", "acg", "ndcg"}
    assert isinstance(out["beats_random"], bool)


@pytest.mark.slow
def test_cross_modal_row_is_what_evaluate_retrieval_reports(synthetic: Synthetic, tmp_path: Path) -> None:
    """The demo's S1 -> S2 row: a cross-modal model trained at the demo's settings, S1 test queries vs the
    S2 train archive; its figures are those `benmm evaluate-retrieval INDEX --queries EMB` writes."""
    import json
    from types import SimpleNamespace

    from typer.testing import CliRunner

    from benmm.cli.app import app
    from benmm.retrieval.demo_crossmodal import cross_modal_row, direction_table
    from benmm.train.task import load_checkpoint

    buf = io.StringIO()
    ctx = SimpleNamespace(store=synthetic.archive(pairs=150, seed=1, layout="reben"), report=tmp_path,
                          console=Console(file=buf, width=200))
    row = cross_modal_row(ctx, k=10, epochs=1)
    json.dumps(row)  # goes into the demo's summary.json
    assert row["direction"] == "S1->S2" and row["supervision"] == "pairs" and row["bits"] == 64
    assert load_checkpoint(row["checkpoint"])[1]["retrieval"]["supervision"] == "pairs"
    out = tmp_path / "retrieval" / "cross-modal"
    res = CliRunner().invoke(app, ["evaluate-retrieval", str(out / "index-s2"), "--queries",
                                   str(out / "embeddings-s1"), "--ks", "10", "-k", "10", "--examples", "0",
                                   "--out", str(tmp_path / "report")])
    assert res.exit_code == 0, res.output
    report = json.loads((tmp_path / "report" / "metrics.json").read_text())
    assert report["direction"] == "S1->S2" and report["queries"] == row["queries"] > 0
    for m in ("map", "precision", "ndcg"):
        assert row["metrics"][m]["model"] == pytest.approx(report[f"{m}@10"])
        assert row["metrics"][m]["random"] == pytest.approx(report["random"][f"{m}@10"])
    uni = {"k": 10, "metrics": {m: {"model": 0.5, "random": 0.25} for m in ("map", "precision", "ndcg")}}
    text = Console(file=io.StringIO(), width=200, record=True)
    text.print(direction_table(uni, row))
    shown = text.export_text()
    assert "S1S2->S1S2" in shown and "S1->S2" in shown and "pairs (no labels)" in shown
    assert shown.count("random ranking") == 2 and f"{row['metrics']['map']['model']:.3f}" in shown
