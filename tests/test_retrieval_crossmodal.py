"""Cross-modal evaluation (queries of one side vs an index of the other) on tiny hand-made embedding sets
whose metrics are worked out by hand; the protocols; the query's own pair; one-line errors for bad input."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from benmm.errors import RetrievalError
from benmm.labels import label_names
from benmm.retrieval.build import index_from_embeddings
from benmm.retrieval.crossmodal import evaluate_queries, flat_metrics
from benmm.retrieval.embset import EmbeddingSet, write_embeddings
from benmm.retrieval.evaluate import retrieval_metrics

A, B, C = label_names(19)[:3]
# the archive side (S2): four patches with 2-d embeddings
ARCHIVE = [("p0", [A], (1.0, 0.0)), ("p1", [A, B], (0.8, 0.6)), ("p2", [C], (0.0, 1.0)),
           ("p3", [B], (-1.0, 0.0))]
# the query side (S1): q0 ranks p0 p1 p2 p3 (cosine .995 .856 .100 -.995), q1 ranks p2 p1 p3 p0
QUERIES = [("q0", [A, B], (1.0, 0.1)), ("q1", [C], (-0.1, 1.0))]
INFO = {"store": "/stores/a", "labels": 19, "order": "official", "embedder": "hand-made",
        "model": {"modalities": ["s1", "s2"]}}


def _set(path: Path, rows: list[tuple[str, list[str], tuple[float, ...]]], split: str, **info: Any) -> Path:
    items = pd.DataFrame({"name": [r[0] for r in rows], "labels": [r[1] for r in rows], "split": split})
    return write_embeddings(path, np.array([r[2] for r in rows], np.float32), items, INFO | info)


@pytest.fixture()
def sides(tmp_path: Path) -> tuple[Any, EmbeddingSet]:
    s2 = _set(tmp_path / "s2", ARCHIVE, "train", modality="s2")
    index = index_from_embeddings(s2, kind="flat", archive_split="train")
    return index, EmbeddingSet.load(_set(tmp_path / "s1", QUERIES, "test", modality="s1"))


def test_s1_to_s2_metrics_by_hand(sides: tuple[Any, EmbeddingSet]) -> None:
    index, queries = sides
    res = evaluate_queries(index, queries, ks=(1, 2, 3))
    assert res["direction"] == "S1->S2" and res["protocol"] == "default" and res["model"]["queries"] == 2
    assert res["ranked"].tolist() == [[0, 1, 2, 3], [2, 1, 3, 0]]
    m = flat_metrics(res["model"])
    # q0 {A,B}: shared 1,2,0,1; q1 {C}: shared 1,0,0,0
    assert m["precision@2"] == pytest.approx((1 + 0.5) / 2)
    assert m["precision@3"] == pytest.approx((2 / 3 + 1 / 3) / 2)
    assert m["map@2"] == pytest.approx(1.0) and m["map@3"] == pytest.approx(1.0)
    # label precision |Lq&Lr|/|Lr|: q0 1,1,0 ; q1 1,0,0  -> LP@2 = (1 + .5)/2, LP@3 = (2/3 + 1/3)/2
    assert m["label_precision@2"] == pytest.approx(0.75) and m["label_precision@3"] == pytest.approx(0.5)
    # label recall |Lq&Lr|/|Lq|: q0 .5,1,0 ; q1 1,0,0  -> LR@2 = (.75 + .5)/2, LR@3 = (.5 + 1/3)/2
    assert m["recall@2"] == pytest.approx(0.625) and m["recall@3"] == pytest.approx(5 / 12)
    # F1 = harmonic mean of the mean LP and the mean LR (CSMAE)
    assert m["f1@2"] == pytest.approx(2 * 0.75 * 0.625 / 1.375) and m["f1@3"] == pytest.approx(
        2 * 0.5 * (5 / 12) / (0.5 + 5 / 12))
    # relevant retrieved / relevant in the archive: q0 2 of 3, q1 1 of 1
    assert m["archive_recall@2"] == pytest.approx((2 / 3 + 1) / 2)
    # NDCG@2: q0 DCG = 1 + 3/log2(3), ideal = 3 + 1/log2(3); q1 1
    ndcg_q0 = (1 + 3 / np.log2(3)) / (3 + 1 / np.log2(3))
    assert m["ndcg@2"] == pytest.approx((ndcg_q0 + 1) / 2)
    assert set(flat_metrics(res["random"])) == set(m)


def test_csmae_f1_is_the_harmonic_mean_of_mean_precision_and_recall() -> None:
    """CSMAE's retrieval.py: per item prec, rec; averaged over K then queries; F1 of the two means."""
    rng = np.random.default_rng(3)
    q = (rng.random((30, 6)) < 0.4).astype(np.float32)
    q[q.sum(1) == 0, 0] = 1
    arch = (rng.random((50, 6)) < 0.4).astype(np.float32)
    arch[arch.sum(1) == 0, 1] = 1
    ranked = np.stack([rng.permutation(50)[:10] for _ in range(30)])
    res = retrieval_metrics(q, arch, ranked, ks=(10,))
    used = [i for i in range(30) if (arch @ q[i] > 0).any()]
    prec = np.mean([np.mean([(q[i] * arch[r]).sum() / arch[r].sum() for r in ranked[i]]) for i in used])
    rec = np.mean([np.mean([(q[i] * arch[r]).sum() / q[i].sum() for r in ranked[i]]) for i in used])
    assert res["label_precision"][10] == pytest.approx(prec) and res["label_recall"][10] == pytest.approx(rec)
    assert res["f1"][10] == pytest.approx(2 * prec * rec / (prec + rec))


def test_same_split_own_pair_is_left_out_unless_asked(tmp_path: Path) -> None:
    index = index_from_embeddings(_set(tmp_path / "s2", ARCHIVE, "test", modality="s2"), kind="flat",
                                  archive_split="test")
    queries = EmbeddingSet.load(_set(tmp_path / "s1", [("p1", [A, B], (1.0, 0.1))], "test", modality="s1"))
    out = evaluate_queries(index, queries, query_split="test", ks=(1, 2))
    assert out["protocol"] == "custom" and out["own_pair"] == "excluded"
    assert out["ranked"][0].tolist() == [0, 2, 3]  # p1 (its own pair) is gone
    m = flat_metrics(out["model"])
    assert m["precision@2"] == pytest.approx(0.5) and m["archive_recall@2"] == pytest.approx(1 / 2)
    kept = evaluate_queries(index, queries, query_split="test", ks=(1, 2), include_own_pair=True)
    assert kept["ranked"][0].tolist() == [0, 1, 2, 3]
    m = flat_metrics(kept["model"])
    assert m["precision@2"] == pytest.approx(1.0) and m["archive_recall@2"] == pytest.approx(2 / 3)
    assert not (flat_metrics(kept["random"])["precision@2"] < 0)


def test_protocols_check_the_archive_split(sides: tuple[Any, EmbeddingSet], tmp_path: Path) -> None:
    index, queries = sides
    with pytest.raises(RetrievalError, match="csmae searches a test archive but index INDEX holds train"):
        evaluate_queries(index, queries, protocol="csmae")
    test_index = index_from_embeddings(_set(tmp_path / "t", ARCHIVE, "test", modality="s2"), kind="flat",
                                       archive_split="test")
    val_q = EmbeddingSet.load(_set(tmp_path / "v", QUERIES, "validation", modality="s1"))
    res = evaluate_queries(test_index, val_q, protocol="csmae", ks=(2,))
    assert (res["query_split"], res["archive_split"], res["model"]["queries"]) == ("val", "test", 2)
    with pytest.raises(RetrievalError, match="unknown protocol 'bogus'"):
        evaluate_queries(index, queries, protocol="bogus")


@pytest.mark.parametrize(
    ("rows", "info", "message"),
    [
        ([(n, lab, (*v, 0.0)) for n, lab, v in QUERIES], {},
         "s1 queries are 3-d but the s2 index expects 2-d"),
        (QUERIES, {"modality": "s1s2"}, "the queries are of modality s1s2, which the model does not embed"),
        (QUERIES, {"code_bits": 32, "_index_bits": 64}, "32-bit query codes vs 64-bit index codes"),
        (QUERIES, {"store": "/stores/b"}, "embeddings of different stores (/stores/b vs /stores/a)"),
        (QUERIES, {"labels": 43}, "different label sets (43 classes"),
        (QUERIES, {"embedder": "other-model"}, "embedded by different models (other-model vs hand-made)"),
        (QUERIES, {"_split": "train"}, "hold no test patches (they hold ['train'])"),
    ],
)
def test_bad_input_is_one_line_naming_both_sides(
    tmp_path: Path, rows: list[Any], info: dict[str, Any], message: str
) -> None:
    bits = info.pop("_index_bits", None)
    split = info.pop("_split", "test")
    index = index_from_embeddings(_set(tmp_path / "s2", ARCHIVE, "train", modality="s2", code_bits=bits),
                                  kind="flat", archive_split="train")
    queries = EmbeddingSet.load(_set(tmp_path / "s1", rows, split, **({"modality": "s1"} | info)))
    with pytest.raises(RetrievalError) as exc:
        evaluate_queries(index, queries, names=("q.emb", "s2.index"))
    text = str(exc.value)
    assert message in text and "\n" not in text
    assert "q.emb" in text and "s2.index" in text  # both sides named
