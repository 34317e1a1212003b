"""Embedding with a model checkpoint: store batches and single uploaded patches agree; file formats."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from benmm.errors import BenmmError, RetrievalError
from benmm.models import create_model
from benmm.models.weights import export_safetensors
from benmm.retrieval.build import index_from_embeddings
from benmm.retrieval.embed import (
    BandStatsEmbedder,
    CheckpointEmbedder,
    EmbeddingSet,
    embed_store,
    make_embedder,
    write_embeddings,
)
from benmm.store import Store

DATA_INFO = {"data": {"labels": 19, "order": "official", "resample": "bilinear", "stats": "v1"}}


@pytest.fixture(scope="module", params=["resnet18", "kbranch"])
def checkpoint(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("ckpt") / f"{request.param}.safetensors"
    return export_safetensors(create_model(request.param, modality="s1s2", num_classes=19), path, DATA_INFO)


@pytest.fixture(scope="module")
def embedded(
    checkpoint: Path, tmp_path_factory: pytest.TempPathFactory, reben_sample_root: Path
) -> EmbeddingSet:
    out = tmp_path_factory.mktemp("emb") / "emb"
    res = embed_store(checkpoint, reben_sample_root, out, recommended=False, batch_size=7)
    assert res is not None
    return res


def test_store_embeddings_match_single_patch_embeddings(
    checkpoint: Path, embedded: EmbeddingSet, reben_sample_root: Path
) -> None:
    emb = CheckpointEmbedder(checkpoint)
    assert embedded.vectors.shape == (24, emb.dim) and np.isfinite(embedded.vectors).all()
    assert (
        embedded.info["checkpoint"] == str(checkpoint.resolve()) and embedded.info["embedder"] == "checkpoint"
    )
    store = Store.open(reben_sample_root)
    for i in (0, 13, 23):
        one = emb(store.read_pair(str(embedded.items["name"][i])))
        np.testing.assert_allclose(one[0], embedded.vectors[i], rtol=1e-4, atol=1e-4)
    # different patches give different embeddings (the model is not constant)
    assert np.linalg.norm(embedded.vectors[0] - embedded.vectors[1]) > 1e-3


def test_service_embeds_uploads_with_the_checkpoint(
    embedded: EmbeddingSet, tmp_path: Path, reben_sample_root: Path
) -> None:
    from fastapi.testclient import TestClient

    from benmm.retrieval.service.app import create_app

    ix = index_from_embeddings(embedded, kind="flat", archive_split=None)
    ix.manifest["source"]["checkpoint"] = embedded.info["checkpoint"]
    client = TestClient(create_app(ix.save(tmp_path / "ix")))
    health = client.get("/api/health").json()
    assert health["upload"] is True and health["dim"] == embedded.vectors.shape[1]
    name = str(embedded.items["name"][4])
    buf = io.BytesIO()
    np.savez(buf, **Store.open(reben_sample_root).read_pair(name))
    r = client.post("/api/search?k=3", files={"file": ("q.npz", buf.getvalue())})
    assert r.status_code == 200, r.text
    assert r.json()["results"][0]["name"] == name


def test_embedder_choice_and_errors(tmp_path: Path) -> None:
    assert isinstance(make_embedder("band-stats"), BandStatsEmbedder)
    with pytest.raises(RetrievalError, match="not found"):
        make_embedder(tmp_path / "missing.ckpt")
    (tmp_path / "junk.safetensors").write_bytes(b"junk")
    with pytest.raises(BenmmError, match=r"junk\.safetensors"):
        make_embedder(tmp_path / "junk.safetensors")


def test_embeddings_directory_roundtrip_and_errors(tmp_path: Path) -> None:
    items = pd.DataFrame({"name": ["a", "b"], "labels": [["Pastures"], []], "split": ["train", "test"]})
    write_embeddings(tmp_path / "e", np.ones((2, 4)), items, {"labels": 19})
    back = EmbeddingSet.load(tmp_path / "e")
    assert back.vectors.shape == (2, 4) and list(back.items["name"]) == ["a", "b"]
    with pytest.raises(RetrievalError, match="already holds"):
        write_embeddings(tmp_path / "e", np.ones((2, 4)), items, {})
    with pytest.raises(RetrievalError, match="do not match"):
        write_embeddings(tmp_path / "f", np.ones((3, 4)), items, {})
    info = json.loads((tmp_path / "e" / "embeddings.json").read_text())
    (tmp_path / "e" / "embeddings.json").write_text(json.dumps(info | {"complete": False}))
    with pytest.raises(RetrievalError, match="did not finish"):
        EmbeddingSet.load(tmp_path / "e")
    (tmp_path / "e" / "embeddings.json").write_text(json.dumps(info | {"count": 5}))
    with pytest.raises(RetrievalError, match="inconsistent"):
        EmbeddingSet.load(tmp_path / "e")
    (tmp_path / "e" / "embeddings.json").write_text("{")
    with pytest.raises(RetrievalError, match="corrupt"):
        EmbeddingSet.load(tmp_path / "e")
