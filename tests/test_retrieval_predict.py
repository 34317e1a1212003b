"""`benmm embed` through Lightning's predict loop: a 2-process CPU run (ddp_spawn, gloo) writes every
item exactly once and equals a 1-process run; resume after an interruption; one side per run; codes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from benmm.data.dataset import BigEarthNetDataset
from benmm.data.loading import batched_loader
from benmm.errors import RetrievalError
from benmm.models import create_model
from benmm.models.weights import export_safetensors
from benmm.retrieval import embed as embed_mod
from benmm.retrieval.embed import BandStatsEmbedder, EmbeddingSet, embed_store
from benmm.retrieval.predict import run_predict

DATA_INFO = {"data": {"labels": 19, "order": "official", "resample": "bilinear", "stats": "v1"}}


@pytest.fixture(scope="module")
def one_process(reben_sample_root: Path, tmp_path_factory: pytest.TempPathFactory) -> EmbeddingSet:
    out = tmp_path_factory.mktemp("one") / "e"
    res = embed_store("band-stats", reben_sample_root, out, recommended=False)
    assert res is not None
    return res


@pytest.mark.slow
def test_two_cpu_processes_write_each_item_once_and_equal_one_process(
    reben_sample_root: Path, tmp_path: Path, one_process: EmbeddingSet
) -> None:
    two = embed_store("band-stats", reben_sample_root, tmp_path / "two", recommended=False, chunk=5,
                      batch_size=3, accelerator="cpu", devices=2, strategy="ddp_spawn")
    assert two is not None
    per_rank = two.info["rows_per_rank"]
    assert set(per_rank) == {"0", "1"} and all(v > 0 for v in per_rank.values())  # both ranks worked
    assert sum(per_rank.values()) == len(one_process) == 24  # no padding duplicates
    assert list(two.items["name"]) == list(one_process.items["name"])
    np.testing.assert_allclose(two.vectors, one_process.vectors, rtol=1e-6, atol=1e-6)
    assert not (tmp_path / "two" / "parts").exists()


def test_resume_embeds_only_the_missing_rows(
    reben_sample_root: Path, tmp_path: Path, one_process: EmbeddingSet
) -> None:
    out = tmp_path / "e"
    calls: list[tuple[int, int]] = []
    # an interrupted run: the info file and the parts of rows 0..9 are there, the rest is not
    with pytest.raises(ZeroDivisionError):
        embed_store("band-stats", reben_sample_root, out, recommended=False,
                    on_progress=lambda d, t: calls.append((d, t)) or (1 // (d < 10)))
    emb = BandStatsEmbedder()
    ds = BigEarthNetDataset(reben_sample_root, bands=emb.bands, split=None, recommended=False)
    run_predict(emb, batched_loader(ds, batch_size=4, sampler=list(range(10))), out / "parts", 4, False)
    calls.clear()
    res = embed_store("band-stats", reben_sample_root, out, recommended=False,
                      on_progress=lambda d, t: calls.append((d, t)))
    assert calls[0] == (10, 24) and calls[-1] == (24, 24)  # 10 rows were done before
    assert res is not None and list(res.items["name"]) == list(one_process.items["name"])
    np.testing.assert_allclose(res.vectors, one_process.vectors, rtol=1e-6, atol=1e-6)


def test_assembly_refuses_a_row_written_twice(reben_sample_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "e"
    with pytest.raises(ZeroDivisionError):  # leaves the info file of an unfinished run
        embed_store("band-stats", reben_sample_root, out, recommended=False, on_progress=lambda d, t: 1 // 0)
    emb = BandStatsEmbedder()
    ds = BigEarthNetDataset(reben_sample_root, bands=emb.bands, split=None, recommended=False)
    for rows in (list(range(24)), [3]):  # row 3 twice
        run_predict(emb, batched_loader(ds, batch_size=8, sampler=rows), out / "parts", 100, False)
    from benmm.retrieval.embed import _assemble

    with pytest.raises(RetrievalError, match="0 of 24 patches have no embedding and 1 have several"):
        _assemble(out, ds, ds.names, {"labels": 19, "order": "official"})


def test_one_side_per_run_and_its_record(reben_sample_root: Path, tmp_path: Path) -> None:
    s1 = embed_store("band-stats", reben_sample_root, tmp_path / "s1", recommended=False, modality="s1")
    s2 = embed_store("band-stats", reben_sample_root, tmp_path / "s2", recommended=False, modality="s2")
    assert s1 is not None and s2 is not None
    assert (s1.modality, s1.vectors.shape[1], s2.modality, s2.vectors.shape[1]) == ("s1", 10, "s2", 60)
    assert s1.info["model"]["bands"] == ["VV", "VH"] and s1.info["code_bits"] is None and s1.codes is None
    ckpt = export_safetensors(create_model("resnet18", modality="s2", num_classes=19),
                              tmp_path / "s2.safetensors", DATA_INFO)
    with pytest.raises(RetrievalError, match=r"embeds modalities s2, not 's1'"):
        embed_store(ckpt, reben_sample_root, tmp_path / "bad", recommended=False, modality="s1")
    res = embed_store(ckpt, reben_sample_root, tmp_path / "ck", recommended=False, modality="s2", limit=5)
    assert res is not None and res.info["modality"] == "s2" and res.vectors.shape == (5, 512)


class _Codes(BandStatsEmbedder):
    """A band-stats embedder that says it makes 10-bit codes (as a hashing model would)."""

    code_bits = 10


def test_models_with_codes_get_packed_codes(
    reben_sample_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(embed_mod, "make_embedder", lambda model, device="cpu", modality=None: _Codes(
        modality=modality))
    res = embed_store("band-stats", reben_sample_root, tmp_path / "c", recommended=False, modality="s1")
    assert res is not None and res.info["code_bits"] == 10 and res.codes is not None
    np.testing.assert_array_equal(res.codes, np.packbits(np.asarray(res.vectors) > 0, axis=1))
    assert res.codes.shape == (24, 2) and torch.is_tensor(torch.from_numpy(res.codes))
