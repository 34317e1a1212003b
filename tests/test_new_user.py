"""What a new user hit (issue 16): empty splits, sizes that only cost memory, and the messages they get."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from benmm.cli.app import app
from benmm.data.datamodule import BigEarthNetDataModule
from benmm.ingest import encode
from benmm.retrieval.build import build_index
from benmm.retrieval.synthetic import synthetic_embeddings
from benmm.store import Store

runner = CliRunner()


@pytest.fixture(scope="module")
def real_store(v1_sample_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Store:
    """The 6 shipped real pairs: 4 train, 1 test, 1 without a split, no val pair."""
    return encode(v1_sample_root, tmp_path_factory.mktemp("real") / "s.store", workers=1, progress=False)


def test_an_empty_split_is_named(real_store: Store, tmp_path: Path) -> None:
    out = runner.invoke(app, ["train", str(real_store.path), "--recipe", "demo", "--out", str(tmp_path / "r"),
                              "--epochs", "1"])
    assert out.exit_code != 0 and "the val split has no samples" in out.output, out.output
    out = runner.invoke(app, ["stats", str(real_store.path), "--split", "val",
                              "--out", str(tmp_path / "s.json")])
    assert out.exit_code != 0 and "the val split has no pairs" in out.output, out.output
    assert not (tmp_path / "s.json").exists()
    out = runner.invoke(app, ["embed", "band-stats", str(real_store.path), str(tmp_path / "e"),
                              "--split", "val"])
    assert out.exit_code != 0 and "split='val'" in out.output and "Traceback" not in out.output


def test_a_batch_larger_than_the_split_is_clamped(real_store: Store) -> None:
    dm = BigEarthNetDataModule(real_store, modality="s2", batch_size=100_000, num_workers=0,
                               recommended=False)
    dm.setup("fit")
    loader = dm.loader("train", train=True)
    assert loader.batch_size == len(dm.dataset("train")) == 4
    assert sum(len(b["name"]) for b in loader) == 4


def test_search_k_is_clamped_to_the_archive() -> None:
    x, items = synthetic_embeddings(50, dim=16, latent=4, seed=0)
    ix = build_index(x, items, kind="flat")
    dist, idx = ix.search(x[:2], k=10**9)  # FAISS would allocate [2, 10^9] results
    assert dist.shape == idx.shape == (2, 50) and (idx >= 0).all()
    dist, idx = ix.search_name(items["name"].iloc[0], k=10**9)
    assert idx.shape == (1, 49)
