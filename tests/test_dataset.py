"""BigEarthNetDataset over the published reBEN sample and a synthetic store: pixels, labels, filters,
errors, bad values (also inside DataLoader workers), collate, statistics and the ``benmm stats`` CLI."""

from __future__ import annotations

import copy
import json
import os
import pickle
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import lmdb
import numpy as np
import pandas as pd
import pytest
import safetensors.numpy
import torch
from torch.utils.data import DataLoader

from benmm.bands import S1_BANDS, S2_BANDS, load_stats
from benmm.data import BigEarthNetDataset, DatasetError, collate, compute_stats
from benmm.data.loading import batched_loader
from benmm.errors import BandError, LabelError, SplitError, StoreError
from benmm.labels import encode, reorder
from benmm.store import Store

if TYPE_CHECKING:
    from conftest import Synthetic


@pytest.fixture(scope="module")
def reben(reben_sample_root: Path) -> Store:
    """The published reBEN sample, opened once (its metadata load looks seasons up: ~1 s)."""
    return Store.open(reben_sample_root)


@pytest.fixture(scope="module")
def synth_store(synthetic: Synthetic) -> Path:
    """A small synthetic archive in the reBEN layout (opens as a store), with snow/cloud patches (shared:
    read-only)."""
    return synthetic.archive(pairs=40, seed=3, layout="reben")


@pytest.fixture(scope="module")
def synth(synth_store: Path) -> Store:
    return Store.open(synth_store)


def _group(bands: tuple[str, ...], size: int) -> list[str]:
    from benmm.bands import BAND_SIZE

    return [b for b in bands if BAND_SIZE[b] == size and b in S2_BANDS]


@pytest.mark.parametrize("which", ["reben", "synth"])
def test_pixels_and_labels_equal_the_store(which: str, reben: Store, synth: Store) -> None:
    store = reben if which == "reben" else synth
    ds = BigEarthNetDataset(store, split=None, recommended=False)
    assert len(ds) == len(store)
    meta = store.metadata.set_index("patch_id")
    for i in range(len(ds)):
        s = ds[i]
        ref = store.read_pair(s["name"])
        for key, size in (("s2", 120), ("s2_20m", 60), ("s2_60m", 20)):
            for ch, band in enumerate(_group(S2_BANDS, size)):
                assert s[key].dtype == torch.float32
                assert np.array_equal(s[key][ch].numpy(), ref[band].astype(np.float32)), (s["name"], band)
        for ch, band in enumerate(S1_BANDS):
            assert np.array_equal(s["s1"][ch].numpy(), ref[band]), (s["name"], band)  # dB, bit-exact
        want = encode(list(meta.loc[s["name"], "labels"]), 19)
        assert np.array_equal(s["label"].numpy(), want)


def test_sample_keys_follow_modality_and_bands(reben: Store) -> None:
    root = reben
    s1 = BigEarthNetDataset(root, modality="s1")[0]
    assert set(s1) == {"s1", "label", "name"} and s1["s1"].shape == (2, 120, 120)
    rgb = BigEarthNetDataset(root, modality="s2", bands="s2-rgb")[0]
    assert set(rgb) == {"s2", "label", "name"} and rgb["s2"].shape == (3, 120, 120)
    ds = BigEarthNetDataset(root, modality="s1s2", bands="s2-10m20m")
    s = ds[0]
    assert set(s) == {"s2", "s2_20m", "s1", "label", "name"}
    assert s["s2_20m"].shape == (6, 60, 60) and s["s1"].shape == (2, 120, 120)
    assert ds.in_channels == {"s2": 10, "s1": 2}
    one = BigEarthNetDataset(root, modality="s2", bands=["B09"])[0]
    assert set(one) == {"s2_60m", "label", "name"}
    full = BigEarthNetDataset(root)[0]
    ref = reben.read_pair(full["name"])
    assert np.array_equal(one["s2_60m"][0].numpy(), ref["B09"].astype(np.float32))


def test_splits_recommended_and_filters(reben: Store, synth: Store) -> None:
    root = reben
    counts = {s: len(BigEarthNetDataset(root, split=s)) for s in ("train", "val", "validation", "test")}
    assert counts == {"train": 6, "val": 6, "validation": 6, "test": 6}
    assert len(BigEarthNetDataset(root, split=None, recommended=False)) == 24
    assert len(BigEarthNetDataset(root, split=None)) == 18  # snow/cloud patches dropped by default
    store = synth
    meta = store.metadata
    flagged = meta.contains_seasonal_snow | meta.contains_cloud_or_shadow | (meta.labels.map(len) == 0)
    rec = BigEarthNetDataset(store, split=None)
    assert sorted(rec.names) == sorted(meta.patch_id[~flagged])
    for name in meta.patch_id[flagged]:
        assert name not in rec.names
    country = meta.country.iloc[0]
    by_country = BigEarthNetDataset(store, split=None, recommended=False, countries=[country.lower()])
    assert sorted(by_country.names) == sorted(meta.patch_id[meta.country == country])
    both = BigEarthNetDataset(store, split="train", recommended=False, seasons=["Autumn", "Winter"])
    want = meta.patch_id[(meta.split == "train") & meta.season.isin(["Fall", "Winter"])]
    assert sorted(both.names) == sorted(want) and len(want) > 0


def test_label_sets_and_orders(reben: Store) -> None:
    off = BigEarthNetDataset(reben, split=None)
    alpha = BigEarthNetDataset(reben, split=None, order="alphabetical")
    assert alpha.label_names == tuple(sorted(off.label_names))
    for i in range(len(off)):
        a, o = alpha[i]["label"].numpy(), off[i]["label"].numpy()
        assert np.array_equal(a, reorder(o, "official", "alphabetical"))
        assert o.sum() >= 1
    assert np.array_equal(off.labels()[3], off[3]["label"].numpy())
    with pytest.raises(LabelError, match="no 43-class labels"):
        BigEarthNetDataset(reben, labels=43)
    with pytest.raises(LabelError, match="19, 43"):
        BigEarthNetDataset(reben, labels=20)
    with pytest.raises(LabelError, match="official, alphabetical"):
        BigEarthNetDataset(reben, order="random")


def test_43_labels_where_the_store_has_them(synth: Store) -> None:
    store = copy.copy(synth)
    meta = store.metadata.copy()
    names43 = [["Coniferous forest", "Sea and ocean"], ["Bare rock"]] * (len(meta) // 2)
    meta["labels43"] = names43 + [["Pastures"]] * (len(meta) - len(names43))
    meta["labels"] = [["Coniferous forest"]] * len(meta)
    store.__dict__["metadata"] = meta  # a store encoded from v1 carries labels43
    ds = BigEarthNetDataset(store, split=None, labels=43, recommended=False)
    assert ds[0]["label"].shape == (43,)
    assert np.array_equal(ds[0]["label"].numpy(), encode(["Coniferous forest", "Sea and ocean"], 43))
    assert np.array_equal(ds[1]["label"].numpy(), encode(["Bare rock"], 43))
    meta.loc[3, "labels43"] = None
    with pytest.raises(LabelError, match="1 pairs have no 43-class labels"):
        BigEarthNetDataset(store, split=None, labels=43, recommended=False)


@pytest.mark.parametrize(("kwargs", "error", "listing"), [
    ({"bands": ["B10"]}, BandError, "B8A"),
    ({"bands": "s2-rgbb"}, BandError, "s2-rgb"),
    ({"modality": "optical"}, BandError, "s1, s2, s1s2"),
    ({"modality": "s1", "bands": ["B02"]}, BandError, "VV, VH"),
    ({"split": "training"}, SplitError, "train, val"),
    ({"countries": ["France"]}, DatasetError, "Portugal"),
    ({"seasons": "monsoon"}, DatasetError, "Spring, Summer, Fall, Winter"),
])
def test_unknown_names_list_the_valid_ones(reben: Store, kwargs: dict[str, object],
                                           error: type[Exception], listing: str) -> None:
    with pytest.raises(error, match=listing):
        BigEarthNetDataset(reben, **kwargs)  # type: ignore[arg-type]


def test_get_batch_equals_collated_samples_and_indexing(reben: Store) -> None:
    ds = BigEarthNetDataset(reben, split=None)
    idx = [4, 0, -1]
    batch = ds.get_batch(idx)
    ref = collate([ds[i] for i in idx])
    assert batch.keys() == ref.keys()
    for key in ("s2", "s2_20m", "s2_60m", "s1", "label"):
        assert torch.equal(batch[key], ref[key]), key
    assert batch["name"] == ref["name"] == [ds.names[4], ds.names[0], ds.names[-1]]
    assert collate(batch) is batch
    with pytest.raises(IndexError):
        ds[len(ds)]
    with pytest.raises(ValueError, match="different keys"):
        collate([ds[0], BigEarthNetDataset(reben, modality="s1")[0]])


def test_loader_with_workers_equals_in_process(reben: Store) -> None:
    ds = BigEarthNetDataset(reben, split=None)
    ds2 = pickle.loads(pickle.dumps(ds))  # what a spawned worker receives
    assert torch.equal(ds2[5]["s1"], ds[5]["s1"])
    a = list(batched_loader(ds, batch_size=7, num_workers=0))
    b = list(batched_loader(ds, batch_size=7, num_workers=2))
    c = list(DataLoader(ds, batch_size=7, num_workers=0, collate_fn=collate))
    assert len(a) == len(b) == len(c) == 3
    for x, y, z in zip(a, b, c, strict=True):
        assert x["name"] == y["name"] == z["name"]
        for key in ("s2", "s2_20m", "s2_60m", "s1", "label"):
            assert torch.equal(x[key], y[key]) and torch.equal(x[key], z[key])


# ---- bad values -------------------------------------------------------------------------------
def _damaged(src: Store, dst: Path, how: str) -> tuple[Path, str]:
    """A copy of the reBEN sample with one value damaged; returns (root, damaged pair's name)."""
    shutil.copytree(src.path, dst)
    for path in dst.rglob("*"):
        os.chmod(path, 0o755 if path.is_dir() else 0o644)
    os.chmod(dst, 0o755)
    meta = src.metadata
    # keep the season column so reopening skips the reBEN season lookup (fast tests)
    for f in ("metadata.parquet", "metadata_for_patches_with_snow_cloud_or_shadow.parquet"):
        part = meta[meta.patch_id.isin(pd.read_parquet(dst / f).patch_id)]
        part.drop(columns=["labels43"]).to_parquet(dst / f)
    row = meta.iloc[2]
    name, s1 = row["patch_id"], row["s1_name"]
    env = lmdb.open(str(dst / "BigEarthNet-V2-LMDB"), map_size=1 << 28)
    with env.begin(write=True) as txn:
        if how == "missing":  # the S1 value is stored under another key (key count unchanged)
            value = txn.get(s1.encode())
            txn.delete(s1.encode())
            txn.put(b"S1A_IW_GRDH_1SDV_20990101T000000_33UUP_0_0", value)
        elif how == "truncated":
            txn.put(name.encode(), txn.get(name.encode())[:-5000])
        elif how == "dtype":
            arrays = safetensors.numpy.load(txn.get(name.encode()))
            arrays["B05"] = arrays["B05"].astype(np.float32)
            txn.put(name.encode(), safetensors.numpy.save(arrays))
        elif how == "size":
            arrays = safetensors.numpy.load(txn.get(s1.encode()))
            arrays["VH"] = arrays["VH"][:119]
            txn.put(s1.encode(), safetensors.numpy.save(arrays))
        elif how == "garbage":
            txn.put(name.encode(), b"\x10\x00\x00\x00\x00\x00\x00\x00not json at all!" + b"\0" * 100)
    env.close()
    return dst, name


@pytest.mark.parametrize(("how", "reason"), [
    ("missing", "missing from the store"),
    ("truncated", "truncated"),
    ("dtype", "B05 has dtype float32, expected uint16"),
    ("size", "VH is 119x120, expected 120x120"),
    ("garbage", "not valid JSON"),
])
def test_bad_values_raise_typed_errors_naming_the_pair(reben: Store, tmp_path: Path,
                                                       how: str, reason: str) -> None:
    root, name = _damaged(reben, tmp_path / "bad", how)
    ds = BigEarthNetDataset(root, split=None, recommended=False)
    i = ds.names.index(name)
    for j in (0, 1, 3):  # the healthy pairs still read
        assert ds[j]["s2"].abs().sum() > 0
    if how in ("missing", "dtype"):  # (a worker process costs seconds: check two kinds there)
        # inside a worker process: the DataLoader re-raises the typed error in the main process
        loader = batched_loader(ds, batch_size=4, num_workers=1)
        with pytest.raises(StoreError, match=name):
            list(loader)
    with pytest.raises(StoreError, match=reason) as info:
        ds[i]
    assert name in str(info.value)
    with pytest.raises(StoreError, match=name):
        ds.get_batch([0, i])


# ---- statistics --------------------------------------------------------------------------------
def test_compute_stats_equals_numpy(synth: Store) -> None:
    ds = BigEarthNetDataset(synth, split="train")
    stats = compute_stats(ds, name="t", batch_size=5)
    store = synth
    pairs = [store.read_pair(n) for n in ds.names]
    assert list(stats.mean) == list(S2_BANDS + S1_BANDS)
    for band in S2_BANDS + S1_BANDS:
        values = np.concatenate([p[band].astype(np.float64).ravel() for p in pairs])
        assert stats.mean[band] == pytest.approx(values.mean(), rel=1e-9)
        assert stats.std[band] == pytest.approx(values.std(), rel=1e-9)


def test_stats_cli_writes_a_loadable_file(synth_store: Path, synth: Store, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from benmm.cli.app import app

    out = tmp_path / "st.json"
    res = CliRunner().invoke(app, ["stats", str(synth_store), "--split", "val", "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "wrote" in res.output
    data = json.loads(out.read_text())
    ds = BigEarthNetDataset(synth, split="val")
    assert data["pairs"] == len(ds)
    stats = load_stats(str(out))
    assert stats.mean["VV"] == pytest.approx(compute_stats(ds).mean["VV"])
    bad = CliRunner().invoke(app, ["stats", str(synth_store), "--split", "holdout", "--out", str(out)])
    assert bad.exit_code == 2 and "valid splits" in bad.output


def test_multi_hot_is_vectorised_and_strict() -> None:
    from benmm.data.selection import multi_hot

    meta = pd.DataFrame({"patch_id": ["a", "b", "c"],
                         "labels": [["Urban fabric", "Marine waters"], [], ["Non-irrigated arable land"]]})
    got = multi_hot(meta, 19, "official", "test")
    assert np.array_equal(got[0], encode(["Urban fabric", "Marine waters"], 19))
    assert not got[1].any()  # a no-19-class patch (kept only with recommended=False) is all zeros
    assert np.array_equal(got[2], encode(["Arable land"], 19))  # 43-class names are converted
    meta.loc[1, "labels"] = ["Urban fabrik"]
    with pytest.raises(LabelError, match="pair b has unknown label 'Urban fabrik'"):
        multi_hot(meta, 19, "official", "test")


def test_get_batch_into_reused_buffers(reben: Store) -> None:
    ds = BigEarthNetDataset(reben, split=None)
    idx = [3, 1, 7]
    ref = ds.get_batch(idx)
    bufs = {k: torch.full((5, *s), -1.0) for k, s in ds.shapes().items()}
    bufs["label"] = torch.full((5, 19), -1.0)
    for _ in range(2):  # the second fill overwrites the first completely
        batch = ds.get_batch(idx, out=bufs)
        for key in ("s2", "s2_20m", "s2_60m", "s1", "label"):
            assert torch.equal(batch[key], ref[key]), key
            assert batch[key].data_ptr() == bufs[key].data_ptr()
            assert (bufs[key][3:] == -1).all()
    with pytest.raises(ValueError, match="'s1' buffer"):
        ds.get_batch(idx, out={"s1": torch.empty(2, 2, 120, 120)})  # fewer rows than the batch
