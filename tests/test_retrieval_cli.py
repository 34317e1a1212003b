"""`benmm embed | index | search | evaluate-retrieval | serve` through Typer's CliRunner."""

from __future__ import annotations

import io
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from typer.testing import CliRunner

from benmm.cli.app import app
from benmm.retrieval.embed import EmbeddingSet
from benmm.retrieval.index import RetrievalIndex
from benmm.store import Store

runner = CliRunner()


def invoke(*args: object) -> SimpleNamespace:
    """Run the CLI; ``output`` has rich's line wrapping undone (messages are checked as one line)."""
    r = runner.invoke(app, [str(a) for a in args])
    return SimpleNamespace(exit_code=r.exit_code, output=" ".join(r.output.split()), raw=r.output)


@pytest.fixture(scope="module")
def emb_dir(tmp_path_factory: pytest.TempPathFactory, reben_sample_root: Path) -> Path:
    out = tmp_path_factory.mktemp("cli") / "emb"
    r = invoke("embed", "band-stats", reben_sample_root, out, "--all", "--batch-size", "5")
    assert r.exit_code == 0, r.output
    assert "embedded 24 patches" in r.output
    return out


def test_embed_writes_vectors_items_and_info(emb_dir: Path, reben_sample_root: Path) -> None:
    emb = EmbeddingSet.load(emb_dir)
    assert emb.vectors.shape == (24, 70) and np.isfinite(emb.vectors).all()
    meta = Store.open(reben_sample_root).metadata.set_index("patch_id")
    for name, labels in zip(emb.items["name"], emb.items["labels"], strict=True):
        assert sorted(labels) == sorted(meta.loc[name, "labels"])  # official order in benmm
    assert emb.info["embedder"] == "band-stats" and emb.info["store"] == str(reben_sample_root.resolve())
    assert not (emb_dir / "parts").exists()


def test_embed_split_side_and_refusals(tmp_path: Path, reben_sample_root: Path) -> None:
    out = tmp_path / "emb"
    r = invoke("embed", "band-stats", reben_sample_root, out, "--split", "test", "--all", "--modality", "s1")
    assert r.exit_code == 0 and "embedded 8 patches (s1)" in r.output, r.output
    emb = EmbeddingSet.load(out)
    assert set(emb.items["split"]) == {"test"} and emb.info["modality"] == "s1"
    assert emb.vectors.shape == (8, 10)
    r = invoke("embed", "band-stats", reben_sample_root, out, "--split", "test")
    assert r.exit_code == 2 and "already holds finished embeddings" in r.output
    (out / "embeddings.json").write_text(
        (out / "embeddings.json").read_text().replace('"complete": true', '"complete": false'))
    r = invoke("embed", "band-stats", reben_sample_root, out, "--split", "test", "--all", "--modality", "s2")
    assert r.exit_code == 2 and "unfinished run of a different model, side or split" in r.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("embed", "no-such.ckpt", "STORE", "OUT"), "checkpoint no-such.ckpt not found"),
        (("embed", "band-stats", "STORE", "OUT", "--modality", "s3"), "unknown modality 's3'"),
        (("embed", "band-stats", "STORE", "OUT", "--split", "bogus"), "bogus"),
    ],
)
def test_embed_errors(tmp_path: Path, reben_sample_root: Path, args: tuple[str, ...], message: str) -> None:
    args = tuple(
        str(reben_sample_root) if a == "STORE" else str(tmp_path / "o") if a == "OUT" else a for a in args
    )
    r = invoke(*args)
    assert r.exit_code == 2, r.output
    assert message in r.output


@pytest.fixture(scope="module")
def index_dir(emb_dir: Path) -> Path:
    out = emb_dir.parent / "ix"
    r = invoke("index", emb_dir, out, "--kind", "binary", "--bits", "32", "--archive-split", "train")
    assert r.exit_code == 0, r.output
    assert "indexed 8 archive patches (32-bit codes, binary) + 16 query patches" in r.output
    return out


def test_index_manifest_carries_what_the_service_needs(
    index_dir: Path, emb_dir: Path, reben_sample_root: Path
) -> None:
    m = json.loads((index_dir / "manifest.json").read_text())
    assert m["kind"] == "binary" and m["bits"] == 32 and m["count"] == 8 and m["extra"] == 16
    assert m["source"]["store"] == str(reben_sample_root.resolve())
    assert m["source"]["embeddings"] == str(emb_dir.resolve()) and m["source"]["embedder"] == "band-stats"
    assert len(m["labels"]) == 19 and {"index.faiss", "items.parquet", "encoder.safetensors"} <= set(
        m["files"]
    )


def test_index_kinds_and_errors(emb_dir: Path, tmp_path: Path) -> None:
    for kind in ("flat", "hnsw"):
        r = invoke("index", emb_dir, tmp_path / kind, "--kind", kind, "--archive-split", "all")
        assert r.exit_code == 0, r.output
        assert len(RetrievalIndex.load(tmp_path / kind)) == 24
    r = invoke("index", emb_dir, tmp_path / "flat", "--kind", "flat")
    assert r.exit_code == 2 and "already exists" in r.output
    assert invoke("index", emb_dir, tmp_path / "flat", "--kind", "flat", "--overwrite").exit_code == 0
    r = invoke("index", emb_dir, tmp_path / "x", "--kind", "ivf")
    assert r.exit_code == 2 and "unknown index kind" in r.output
    r = invoke("index", emb_dir, tmp_path / "x", "--bits", "12")
    assert r.exit_code == 2 and "multiple of 8" in r.output
    r = invoke("index", tmp_path / "nothing", tmp_path / "x")
    assert r.exit_code == 2 and "not an embeddings directory" in r.output


def test_search_by_name_and_by_file(index_dir: Path, reben_sample_root: Path, tmp_path: Path) -> None:
    ix = RetrievalIndex.load(index_dir)
    name = str(ix.names[2])
    r = invoke("search", index_dir, "--name", name, "-k", "4", "--json")
    assert r.exit_code == 0, r.output
    hits = json.loads(r.raw)["results"]
    assert len(hits) == 4 and name not in [h["name"] for h in hits]
    r = invoke("search", index_dir, "--name", name, "-k", "3")
    assert r.exit_code == 0 and "distance" in r.output
    bands = Store.open(reben_sample_root).read_pair(name)
    buf = io.BytesIO()
    np.savez(buf, **bands)
    (tmp_path / "q.npz").write_bytes(buf.getvalue())
    r = invoke("search", index_dir, "--patch", tmp_path / "q.npz", "-k", "3", "--json")
    assert r.exit_code == 0, r.output
    top = json.loads(r.raw)["results"][0]
    assert top["name"] == name and top["distance"] == 0


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ((), "exactly one of --name"),
        (("--name", "NOPE"), "not in this index"),
        (("--patch", "/no/such/file.npz"), "no such file"),
        (("--patch", "README.txt"), "unsupported file type"),
    ],
)
def test_search_errors(index_dir: Path, tmp_path: Path, extra: tuple[str, ...], message: str) -> None:
    (tmp_path / "README.txt").write_text("hi")
    extra = tuple(str(tmp_path / e) if e == "README.txt" else e for e in extra)
    r = invoke("search", index_dir, *extra)
    assert r.exit_code == 2, r.output
    assert message in r.output


def test_evaluate_retrieval_writes_report_and_plots(index_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "rep"
    r = invoke("evaluate-retrieval", index_dir, "--out", out, "-k", "8", "--ks", "1,4,8", "--examples", "2")
    assert r.exit_code == 0, r.output
    assert "NDCG@K" in r.output and "random" in r.output
    rep = json.loads((out / "retrieval.json").read_text())
    assert rep["query_split"] == "test" and rep["archive_size"] == 8 and rep["model"]["queries"] == 8
    assert set(rep["model"]["precision"]) == {"1", "4", "8"}
    assert rep["model"]["recall"]["8"] == pytest.approx(1.0)  # k = the whole archive
    for png in ("pr_vs_k.png", "examples.png"):
        assert (out / png).stat().st_size > 5000
    # queries from the archive itself: each query is left out of its own results
    r = invoke(
        "evaluate-retrieval", index_dir, "--out", out, "--query-split", "train", "-k", "7", "--examples", "0"
    )
    assert r.exit_code == 0, r.output
    assert json.loads((out / "retrieval.json").read_text())["model"]["recall"]["7"] == pytest.approx(1.0)
    r = invoke("evaluate-retrieval", index_dir, "--query-split", "nosuch", "--out", out)
    assert r.exit_code == 2 and "no items of split 'nosuch'" in r.output
    r = invoke("evaluate-retrieval", index_dir, "--ks", "a,b", "--out", out)
    assert r.exit_code == 2 and "--ks must be" in r.output


def test_help_of_every_command() -> None:
    for cmd in ("embed", "index", "search", "evaluate-retrieval", "serve"):
        r = invoke(cmd, "--help")
        assert r.exit_code == 0 and "Usage" in r.output
    r = invoke("serve", "/no/such/index")
    assert r.exit_code == 2 and "not a benmm index" in r.output


def test_search_with_a_real_v1_patch_folder(index_dir: Path, v1_sample_root: Path, tmp_path: Path) -> None:
    """A v1 S2 folder and its S1 partner (the JSON's corresponding_s2_patch) in one folder, then zipped."""
    import shutil
    import zipfile

    s1_root = v1_sample_root / "BigEarthNet-S1-Example"
    s1_dir = sorted(p for p in s1_root.iterdir() if p.is_dir())[0]
    meta = json.loads(next(s1_dir.glob("*_labels_metadata.json")).read_text())
    s2_dir = v1_sample_root / "BigEarthNet-S2-Example" / meta["corresponding_s2_patch"]
    query = tmp_path / "query"
    shutil.copytree(s2_dir, query / s2_dir.name)
    shutil.copytree(s1_dir, query / s1_dir.name)
    r = invoke("search", index_dir, "--patch", query, "-k", "3", "--json")
    assert r.exit_code == 0, r.output
    by_folder = json.loads(r.raw)["results"]
    assert len(by_folder) == 3
    with zipfile.ZipFile(tmp_path / "query.zip", "w") as zf:
        for f in query.rglob("*"):
            zf.write(f, f.relative_to(query))
    r = invoke("search", index_dir, "--patch", tmp_path / "query.zip", "-k", "3", "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.raw)["results"] == by_folder
    r = invoke("search", index_dir, "--patch", query / s2_dir.name, "-k", "3")  # S2 only: S1 missing
    assert r.exit_code == 2 and "missing bands VV, VH" in r.output
