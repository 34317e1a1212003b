"""Binary codes (PCA + ITQ), FAISS indexes, save/load and their error cases."""

from __future__ import annotations

import json
from pathlib import Path

import faiss
import numpy as np
import pandas as pd
import pytest

from benmm.errors import LabelError, RetrievalError
from benmm.retrieval.build import build_index
from benmm.retrieval.codes import BinaryEncoder, fit_itq, hamming, quantization_loss
from benmm.retrieval.evaluate import random_ranking, retrieval_metrics
from benmm.retrieval.index import KINDS, RetrievalIndex, multi_hot
from benmm.retrieval.synthetic import synthetic_embeddings


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, pd.DataFrame]:
    return synthetic_embeddings(1200, dim=64, latent=12, seed=1)


# ------------------------------------------------------------------------------------------ codes
def test_itq_lowers_quantization_loss_below_pca_signs(data) -> None:  # type: ignore[no-untyped-def]
    x, _ = data
    itq = fit_itq(x, bits=32, seed=0)
    pca = fit_itq(x, bits=32, rotate=False)
    assert quantization_loss(itq.project(x)) < quantization_loss(pca.project(x)) - 0.01
    # the rotation is orthogonal: projections keep the PCA variance
    assert np.var(itq.project(x)).sum() == pytest.approx(np.var(pca.project(x)).sum(), rel=1e-3)


def test_codes_are_packed_and_keep_neighbours(data) -> None:  # type: ignore[no-untyped-def]
    x, _ = data
    enc = fit_itq(x, bits=32, seed=0)
    codes = enc.encode(x)
    assert codes.dtype == np.uint8 and codes.shape == (len(x), 4)
    # top-10 cosine neighbours of a query are much closer in Hamming space than random items
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    nn = np.argsort(-(xn[:50] @ xn.T), axis=1)[:, 1:11]
    ham = hamming(codes[:50], codes)
    near = np.take_along_axis(ham, nn, axis=1).mean()
    assert near < 0.5 * ham.mean()


def test_encoder_roundtrip_and_corrupt_file(tmp_path: Path, data) -> None:  # type: ignore[no-untyped-def]
    x, _ = data
    enc = fit_itq(x, bits=16)
    enc.save(tmp_path / "enc.safetensors")
    back = BinaryEncoder.load(tmp_path / "enc.safetensors")
    assert np.array_equal(back.encode(x[:20]), enc.encode(x[:20]))
    (tmp_path / "bad.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(RetrievalError, match="not a valid"):
        BinaryEncoder.load(tmp_path / "bad.safetensors")


@pytest.mark.parametrize(("bits", "dim", "match"), [(12, 64, "multiple of 8"), (128, 64, "at least 128")])
def test_bad_code_lengths(bits: int, dim: int, match: str) -> None:
    with pytest.raises(RetrievalError, match=match):
        fit_itq(np.random.default_rng(0).standard_normal((100, dim)), bits=bits)


def test_nan_embeddings_are_rejected() -> None:
    x = np.ones((10, 16), dtype=np.float32)
    x[3, 2] = np.nan
    with pytest.raises(RetrievalError, match="NaN"):
        fit_itq(x, bits=8)


# ------------------------------------------------------------------------------------------ index
@pytest.mark.parametrize("kind", KINDS)
def test_build_search_save_load(tmp_path: Path, data, kind: str) -> None:  # type: ignore[no-untyped-def]
    x, items = data
    idx = build_index(
        x,
        items,
        kind=kind,
        bits=32,
        archive_split="train",
        source={"store": "/some/store", "checkpoint": None},
    )
    n_train = int((items["split"] == "train").sum())
    assert (
        len(idx) == n_train and idx.extra_items is not None and len(idx.extra_items) == len(items) - n_train
    )
    # exactness against brute force for the exact kinds
    train_x = x[(items["split"] == "train").to_numpy()]
    dist, ind = idx.search(train_x[:5], k=10)
    assert dist.shape == ind.shape == (5, 10)
    if kind == "binary":
        ham = hamming(idx.encode(train_x[:5]), idx.encode(train_x))
        assert np.array_equal(dist, np.sort(ham, axis=1)[:, :10])
    elif kind == "flat":
        xn = train_x / np.linalg.norm(train_x, axis=1, keepdims=True)
        ref = np.sort(1 - xn[:5] @ xn.T, axis=1)[:, :10]
        np.testing.assert_allclose(dist, ref, atol=1e-5)
    assert (ind[:, 0] == np.arange(5)).all()  # each item finds itself first
    out = idx.save(tmp_path / "ix")
    manifest = json.loads((out / "manifest.json").read_text())
    assert (
        manifest["kind"] == kind
        and manifest["count"] == n_train
        and manifest["source"]["store"] == "/some/store"
    )
    back = RetrievalIndex.load(out)
    d2, i2 = back.search(train_x[:5], k=10)
    assert np.array_equal(i2, ind) and np.allclose(d2, dist)
    assert back.labels.shape == (n_train, 19)


def test_search_by_name_excludes_self_and_reaches_query_items(data) -> None:  # type: ignore[no-untyped-def]
    x, items = data
    idx = build_index(x, items, kind="flat", archive_split="train")
    first = str(idx.names[0])
    dist, ind = idx.search_name(first, k=5)
    assert ind.shape == (1, 5) and 0 not in ind[0]
    test_name = str(items.loc[items["split"] == "test", "name"].iloc[0])
    assert test_name in idx and idx.position(test_name) is None
    dist, ind = idx.search_name(test_name, k=5)
    assert ind.shape == (1, 5)
    hits = idx.hits(dist[0], ind[0])
    assert [h["rank"] for h in hits] == [1, 2, 3, 4, 5] and all(h["labels"] for h in hits)
    assert idx.labels_of(test_name) == list(items.loc[items["name"] == test_name, "labels"].iloc[0])
    with pytest.raises(RetrievalError, match="not in this index"):
        idx.search_name("S2A_MSIL2A_20990101T000000_1_1")


def test_k_larger_than_archive_gives_missing_results(data) -> None:  # type: ignore[no-untyped-def]
    x, items = data
    idx = build_index(x[:6], items[:6], kind="binary", bits=8)
    dist, ind = idx.search(x[:1], k=10)
    assert (ind[0, 6:] == -1).all() and len(idx.hits(dist[0], ind[0])) == 6
    with pytest.raises(RetrievalError, match="at least 1"):
        idx.search(x[:1], k=0)
    with pytest.raises(RetrievalError, match=r"\[Q, 64\]"):
        idx.search(np.zeros((1, 63)), k=1)


def test_binary_codes_retrieve_far_better_than_random(data) -> None:  # type: ignore[no-untyped-def]
    x, items = data
    idx = build_index(x, items, kind="binary", bits=32, archive_split="train")
    assert idx.extra_items is not None and idx.extra_vectors is not None
    q = idx.extra_items["split"] == "test"
    qlab = multi_hot(idx.extra_items.loc[q, "labels"], idx.label_names)
    _, ranked = idx.search_encoded(idx.extra_vectors[q.to_numpy()], k=20)
    got = retrieval_metrics(qlab, idx.labels, ranked, ks=(20,))
    rand = retrieval_metrics(qlab, idx.labels, random_ranking(len(qlab), len(idx), 20), ks=(20,))
    assert got["map"][20] > rand["map"][20] + 0.1
    assert got["ndcg"][20] > rand["ndcg"][20] + 0.2


def test_build_errors(data) -> None:  # type: ignore[no-untyped-def]
    x, items = data
    with pytest.raises(RetrievalError, match="unknown index kind"):
        build_index(x, items, kind="ivf")
    with pytest.raises(RetrievalError, match="do not match"):
        build_index(x[:10], items, kind="flat")
    with pytest.raises(RetrievalError, match="archive split"):
        build_index(x, items, kind="flat", archive_split="nosuch")
    dup = items.copy()
    dup.loc[1, "name"] = dup.loc[0, "name"]
    with pytest.raises(RetrievalError, match="unique"):
        build_index(x, dup, kind="flat")
    bad = items.copy()
    bad.at[0, "labels"] = ["Not a label"]
    with pytest.raises(LabelError):
        build_index(x, bad, kind="flat")


def test_validation_split_name_is_accepted(data) -> None:  # type: ignore[no-untyped-def]
    x, items = data
    idx = build_index(x, items, kind="flat", archive_split="validation")
    assert len(idx) == int((items["split"] == "val").sum())


@pytest.fixture()
def saved(tmp_path: Path, data) -> Path:  # type: ignore[no-untyped-def]
    x, items = data
    return build_index(x[:300], items[:300], kind="binary", bits=16).save(tmp_path / "ix")


def test_load_errors(tmp_path: Path, saved: Path) -> None:
    with pytest.raises(RetrievalError, match="not a benmm index"):
        RetrievalIndex.load(tmp_path / "nothing")
    with pytest.raises(RetrievalError, match="already exists"):
        RetrievalIndex.load(saved).save(saved)


def test_corrupt_index_file_is_detected(saved: Path) -> None:
    raw = bytearray((saved / "index.faiss").read_bytes())
    raw[-5] ^= 0xFF
    (saved / "index.faiss").write_bytes(bytes(raw))
    with pytest.raises(RetrievalError, match="do not match the manifest"):
        RetrievalIndex.load(saved)


def test_truncated_index_file_fails_cleanly_even_without_hash_check(saved: Path) -> None:
    manifest = json.loads((saved / "manifest.json").read_text())
    raw = (saved / "index.faiss").read_bytes()[:100]
    (saved / "index.faiss").write_bytes(raw)
    manifest["files"]["index.faiss"]["bytes"] = len(raw)
    (saved / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(RetrievalError, match="FAISS cannot read"):
        RetrievalIndex.load(saved, verify=False)


def test_mismatched_parts_are_detected(tmp_path: Path, saved: Path, data) -> None:  # type: ignore[no-untyped-def]
    x, items = data
    other = build_index(x[:200], items[:200], kind="binary", bits=16).save(tmp_path / "other")
    (saved / "index.faiss").write_bytes((other / "index.faiss").read_bytes())  # swapped in from another index
    manifest = json.loads((saved / "manifest.json").read_text())
    manifest["files"]["index.faiss"] = json.loads((other / "manifest.json").read_text())["files"][
        "index.faiss"
    ]
    (saved / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(RetrievalError, match="300 items"):
        RetrievalIndex.load(saved)


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (lambda m: m.update(version=99), "version 99"),
        (lambda m: m.update(kind="ivf"), "unknown index kind"),
        (lambda m: m.update(format="other"), "not a benmm index manifest"),
    ],
)
def test_manifest_errors(saved: Path, edit, match: str) -> None:  # type: ignore[no-untyped-def]
    manifest = json.loads((saved / "manifest.json").read_text())
    edit(manifest)
    (saved / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(RetrievalError, match=match):
        RetrievalIndex.load(saved)
    (saved / "manifest.json").write_text("{not json")
    with pytest.raises(RetrievalError, match="corrupt manifest"):
        RetrievalIndex.load(saved)


def test_missing_file_is_reported(saved: Path) -> None:
    (saved / "items.parquet").unlink()
    with pytest.raises(RetrievalError, match=r"items\.parquet is missing"):
        RetrievalIndex.load(saved)


def test_hnsw_recall_on_small_set(data) -> None:  # type: ignore[no-untyped-def]
    x, items = data
    flat = build_index(x, items, kind="flat")
    hnsw = build_index(x, items, kind="hnsw", hnsw={"m": 16, "ef_search": 64})
    _, exact = flat.search(x[:100], k=10)
    _, approx = hnsw.search(x[:100], k=10)
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(exact, approx, strict=True)])
    assert recall >= 0.95
    assert isinstance(hnsw.faiss_index, faiss.IndexHNSWFlat)
