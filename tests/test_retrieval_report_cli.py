"""End to end on a small synthetic store: `benmm embed --modality`, `benmm index`, `benmm
evaluate-retrieval --queries` (uni- and cross-modal, both protocols), `benmm retrieval-report`, with the
band-stats embedder, a tiny classification checkpoint and hand-made embeddings of the store's items."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from benmm.cli.app import app
from benmm.models import create_model
from benmm.models.weights import export_safetensors
from benmm.retrieval.embset import EmbeddingSet, write_embeddings
from benmm.retrieval.report import DIRECTIONS, reported_figures

runner = CliRunner()
KEYS = ("map", "precision", "ndcg", "wmap", "acg", "recall", "f1")


def invoke(*args: object) -> SimpleNamespace:
    r = runner.invoke(app, [str(a) for a in args])
    return SimpleNamespace(exit_code=r.exit_code, output=" ".join(r.output.split()), raw=r.output)


@pytest.fixture(scope="module")
def store(synthetic: Any) -> Path:
    return Path(synthetic.store(pairs=60, seed=0, layout="v1").path)


@pytest.fixture(scope="module")
def work(store: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("xm")
    for side in ("s1", "s2"):
        r = invoke("embed", "band-stats", store, root / f"{side}.emb", "--modality", side, "--all")
        assert r.exit_code == 0 and f"({side})" in r.output, r.output
    r = invoke("index", root / "s2.emb", root / "s2.index", "--kind", "flat", "--archive-split", "train")
    assert r.exit_code == 0, r.output
    return root


def test_uni_modal_via_queries_equals_the_index_own_evaluation(work: Path) -> None:
    r = invoke("evaluate-retrieval", work / "s2.index", "--queries", work / "s2.emb", "--out", work / "q",
               "--ks", "5,10", "--examples", "2")
    assert r.exit_code == 0, r.output
    r = invoke("evaluate-retrieval", work / "s2.index", "--out", work / "own", "--ks", "5,10",
               "--examples", "0")
    assert r.exit_code == 0, r.output
    via, own = (json.loads((work / d / "metrics.json").read_text()) for d in ("q", "own"))
    assert via["direction"] == own["direction"] == "S2->S2" and via["protocol"] == "default"
    for key in KEYS:
        for k in (5, 10):
            assert via[f"{key}@{k}"] == pytest.approx(own[f"{key}@{k}"]), key
            assert f"{key}@{k}" in via["random"]
    assert via["map@10"] > via["random"]["map@10"]  # band statistics carry land cover in the synthetic store
    assert (work / "q" / "examples.png").is_file() and (work / "q" / "pr_vs_k.png").is_file()


def test_cross_modal_band_stats_is_a_dimension_error_naming_both(work: Path) -> None:
    r = invoke("evaluate-retrieval", work / "s2.index", "--queries", work / "s1.emb", "--out", work / "x")
    assert r.exit_code == 2 and "Traceback" not in r.raw
    assert f"queries {work / 's1.emb'} vs index {work / 's2.index'}" in r.output
    assert "s1 queries are 10-d but the s2 index expects 60-d" in r.output


def test_checkpoint_sides_and_errors(store: Path, work: Path) -> None:
    data = {"data": {"labels": 19, "order": "official", "resample": "bilinear", "stats": "v1"}}
    ckpt = export_safetensors(create_model("resnet18", modality="s1s2", num_classes=19),
                              work / "r18.safetensors", data)
    r = invoke("embed", ckpt, store, work / "bad", "--modality", "s1")
    assert r.exit_code == 2 and "embeds modalities s1s2, not 's1'" in r.output
    r = invoke("embed", ckpt, store, work / "ck.emb", "--all", "--split", "test")  # 8 pairs: quick
    assert r.exit_code == 0 and "embedded 8 patches (s1s2)" in r.output, r.output
    r = invoke("index", work / "ck.emb", work / "ck.index", "--kind", "binary", "--bits", "32",
               "--archive-split", "all")
    assert r.exit_code == 0, r.output
    # same split on both sides: each query's own entry is left out, 7 results remain
    r = invoke("evaluate-retrieval", work / "ck.index", "--queries", work / "ck.emb", "--query-split", "test",
               "--out", work / "ck", "--ks", "5", "--examples", "0")
    assert r.exit_code == 0, r.output
    m = json.loads((work / "ck" / "metrics.json").read_text())
    assert (m["direction"], m["protocol"], m["own_pair"], m["bits"], m["k"]) == ("S1S2->S1S2", "custom",
                                                                                  "excluded", 32, 7)
    assert 0 <= m["f1@5"] <= 1 and m["queries"] == 8
    r = invoke("evaluate-retrieval", work / "s2.index", "--queries", work / "ck.emb", "--out", work / "x")
    assert r.exit_code == 2 and "embedded by different models" in r.output


def _hand_made(work: Path, side: str, store: Path, seed: int) -> Path:
    """Embeddings of the store's items of one side: label signal + noise, one space for both sides."""
    items = EmbeddingSet.load(work / "s2.emb").items
    rng = np.random.default_rng(seed)
    basis = np.random.default_rng(0).standard_normal((19, 8))
    from benmm.labels import label_names

    names = label_names(19)
    hot = np.array([[n in set(labs) for n in names] for labs in items["labels"]], np.float32)
    vecs = hot @ basis + 0.5 * rng.standard_normal((len(items), 8))
    info = dict(EmbeddingSet.load(work / "s2.emb").info, modality=side, embedder="hand-made")
    info["model"] = dict(info["model"], modalities=["s1", "s2"], name="hand-made")
    return write_embeddings(work / f"hand-{side}.emb", vecs, items, info)


def test_cross_modal_protocol_csmae_and_the_report(work: Path, store: Path) -> None:
    s1, s2 = _hand_made(work, "s1", store, 1), _hand_made(work, "s2", store, 2)
    r = invoke("index", s2, work / "hand-s2.index", "--kind", "flat", "--archive-split", "test")
    assert r.exit_code == 0, r.output
    r = invoke("evaluate-retrieval", work / "hand-s2.index", "--queries", s1, "--out", work / "rep" / "s1s2",
               "--protocol", "csmae", "--ks", "5,10", "--examples", "1")
    assert r.exit_code == 0, r.output
    m = json.loads((work / "rep" / "s1s2" / "metrics.json").read_text())
    assert (m["direction"], m["protocol"], m["query_split"], m["archive_split"]) == ("S1->S2", "csmae", "val",
                                                                                      "test")
    assert m["k"] == 8 and m["queries"] == 13  # the test archive has 8 patches, val 13 queries
    assert m["f1@5"] > m["random"]["f1@5"] and m["map@5"] > m["random"]["map@5"]
    r = invoke("evaluate-retrieval", work / "hand-s2.index", "--queries", s1, "--out", work / "x")
    assert r.exit_code == 2 and "protocol default searches a train archive but index" in r.output
    r = invoke("evaluate-retrieval", work / "s2.index", "--queries", work / "s2.emb", "--out", work / "uni",
               "--ks", "5", "--examples", "0")
    assert r.exit_code == 0, r.output
    r = invoke("retrieval-report", work / "rep", work / "uni" / "metrics.json", "--json")
    assert r.exit_code == 0, r.output
    table = json.loads(r.raw)
    assert table["header"][4:8] == ["mAP@5", "P@5", "NDCG@5", "F1@5"]
    measured = [row for row in table["rows"] if row[0].startswith("measured")]
    assert [row[1] for row in measured] == ["S2->S2", "S1->S2"]  # the literature's row order
    assert measured[1][7] == f"{m['f1@5']:.4f}" and measured[1][11] == "–"  # no K=10 in an 8-patch archive
    reported = [row for row in table["rows"] if row[0].startswith("reported, real archive")]
    figures = [f for p in reported_figures()["papers"] for f in p["figures"]]
    assert len(reported) == len(figures) > 0 and all(row[1] in DIRECTIONS for row in reported)
    cr = [row for row in reported if "cr-jepa" in row[0] and row[1] == "S1->S2"]
    assert cr and cr[0][7] == "0.7582"  # F1@5 column
    r = invoke("retrieval-report", work / "rep")
    assert r.exit_code == 0 and "reported, real archive" in r.output
    assert "no figures recorded: csmae" in r.output
    r = invoke("retrieval-report", work / "nothing-here")
    assert r.exit_code == 2 and "no such file or folder" in r.output


def test_every_reported_figure_names_its_source() -> None:
    data = reported_figures()
    assert data["label"] == "reported, real archive"
    for paper in data["papers"]:
        assert paper["paper"] and paper["url"].startswith("https://")
        assert paper["figures"] or paper["figures_note"]
        for fig in paper["figures"]:
            assert fig["direction"] in DIRECTIONS and 0 < fig["value"] < 1 and fig["where"]
