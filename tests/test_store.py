"""The store: value format, round trip against tifffile, the reBEN sample as a store, bad inputs."""

from __future__ import annotations

import json
import multiprocessing as mp
import pickle
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import lmdb
import numpy as np
import pytest
import safetensors.numpy
import tifffile
from hypothesis import given, settings
from hypothesis import strategies as st

from benmm.bands import BAND_DTYPE, BAND_SIZE, S1_BANDS, S2_BANDS
from benmm.errors import SplitError, StoreError
from benmm.ingest.pipeline import encode
from benmm.store import Store
from benmm.store.blob import BlobError, blob_layout, check_header, decode_blob, encode_blob, parse_header
from benmm.store.layout import METADATA_COLUMNS

if TYPE_CHECKING:
    from conftest import Synthetic


@pytest.fixture(scope="module")
def v1_store(v1_sample_store: Store) -> Path:
    """The v1 sample encoded (shared for the session: read only; damage tests use ``v1_store_copy``)."""
    return v1_sample_store.path


@pytest.fixture()
def v1_store_copy(synthetic: Synthetic, v1_store: Path, tmp_path: Path) -> Path:
    return synthetic.copy(v1_store, tmp_path / "copy.store")


def _bands(seed: int = 0) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    s2 = {b: rng.integers(0, 20000, (BAND_SIZE[b],) * 2).astype(BAND_DTYPE[b]) for b in S2_BANDS}
    s1 = {b: rng.normal(-15, 5, (120, 120)).astype(np.float32) for b in S1_BANDS}
    return s2, s1


# ---- value format -------------------------------------------------------------------------------
def test_encode_blob_is_byte_identical_to_safetensors() -> None:
    s2, s1 = _bands()
    mixed = {"b": np.arange(9, dtype=np.uint16).reshape(3, 3), "a": np.arange(2, dtype=">f8"),
             "c": np.zeros(3, np.uint8), "z": np.ones((4, 4), np.float32)[:, :2],
             "q": np.array([True, False])}
    for arrays in (s2, s1, mixed):
        expected = safetensors.numpy.save({k: np.ascontiguousarray(v) for k, v in arrays.items()})
        assert encode_blob(arrays) == expected


def test_blob_layout_filled_in_place_is_the_safetensors_blob() -> None:
    s2, s1 = _bands()
    mixed = {"b": np.arange(9, dtype=np.uint16).reshape(3, 3), "a": np.arange(2, dtype="<f8"),
             "c": np.zeros(3, np.uint8), "z": np.ones((4, 2), np.float32)}
    for arrays in (s2, s1, mixed):
        layout = blob_layout({k: (v.dtype, v.shape) for k, v in arrays.items()})
        buf = bytearray(layout.size)
        buf[:len(layout.header)] = layout.header
        for name, (start, end) in layout.slots.items():
            buf[start:end] = arrays[name].tobytes()
        assert bytes(buf) == safetensors.numpy.save(arrays)


def test_decode_blob_matches_safetensors_and_copies_as_documented() -> None:
    s2, _ = _bands(1)
    blob = encode_blob(s2)
    ref = safetensors.numpy.load(blob)
    views = decode_blob(blob)
    assert set(views) == set(ref)
    for band, arr in views.items():
        assert arr.dtype == ref[band].dtype and np.array_equal(arr, ref[band])
        assert not arr.flags.writeable  # a view into the immutable value, no copy
    some = decode_blob(memoryview(blob), bands=["B02", "B8A"], copy=True)
    assert list(some) == ["B02", "B8A"] and all(a.flags.writeable for a in some.values())
    assert np.array_equal(some["B8A"], s2["B8A"])
    with pytest.raises(BlobError, match=r"B13"):
        decode_blob(blob, bands=["B13"])


@settings(max_examples=60, deadline=None)
@given(st.dictionaries(
    st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_", min_size=1, max_size=6),
    st.tuples(st.sampled_from(["<u2", "<f4", "<f8", "<i2", "|u1", ">u2"]),
              st.lists(st.integers(0, 9), min_size=1, max_size=3), st.integers(0, 2**16)),
    max_size=6))
def test_blob_round_trip_property(spec: dict[str, tuple[str, list[int], int]]) -> None:
    arrays = {name: np.random.default_rng(seed).integers(0, 200, shape).astype(dtype)
              for name, (dtype, shape, seed) in spec.items()}
    blob = encode_blob(arrays)
    assert blob == safetensors.numpy.save({k: np.ascontiguousarray(v, dtype=v.dtype.newbyteorder("<"))
                                           for k, v in arrays.items()})
    back = decode_blob(blob)
    assert set(back) == set(arrays)
    for name, arr in arrays.items():
        assert back[name].shape == arr.shape and np.array_equal(back[name], arr)


@pytest.mark.parametrize("cut", [4, 100, 50_000, -1])
def test_truncated_blob_is_refused(cut: int) -> None:
    blob = encode_blob(_bands()[0])
    with pytest.raises(BlobError):
        parse_header(blob[:cut])


def test_check_header_names_wrong_bands_sizes_and_dtypes() -> None:
    s2, s1 = _bands()
    check_header(parse_header(encode_blob(s2))[0], "s2")
    check_header(parse_header(encode_blob(s1))[0], "s1")
    with pytest.raises(BlobError, match=r"missing B09"):
        check_header(parse_header(encode_blob({k: v for k, v in s2.items() if k != "B09"}))[0], "s2")
    with pytest.raises(BlobError, match=r"B05 is 61x60"):
        check_header(parse_header(encode_blob(s2 | {"B05": np.zeros((61, 60), np.uint16)}))[0], "s2")
    with pytest.raises(BlobError, match=r"VV is float64"):
        check_header(parse_header(encode_blob(s1 | {"VV": s1["VV"].astype(np.float64)}))[0], "s1")


# ---- round trip ---------------------------------------------------------------------------------
def test_store_round_trips_every_pixel_of_the_real_samples(v1_store: Path, v1_sample_root: Path) -> None:
    store = Store.open(v1_store)
    assert len(store) == 6 and store.manifest is not None
    assert store.manifest["keys"] == 12 and store.manifest["label_sets"] == [19, 43]
    checked = 0
    for name in store.names():
        s1 = store.s1_key(name)
        pair = store.read_pair(name)
        assert list(pair) == list(S2_BANDS + S1_BANDS)
        for band, arr in pair.items():
            folder = (v1_sample_root / "BigEarthNet-S2-Example" / name if band in S2_BANDS
                      else v1_sample_root / "BigEarthNet-S1-Example" / s1)
            ref = tifffile.imread(folder / f"{folder.name}_{band}.tif")
            assert arr.dtype == ref.dtype == BAND_DTYPE[band]
            assert arr.shape == ref.shape == (BAND_SIZE[band],) * 2
            assert np.array_equal(arr, ref), (name, band)
            checked += 1
        meta = json.loads((v1_sample_root / "BigEarthNet-S2-Example" / name /
                           f"{name}_labels_metadata.json").read_text())
        row = store.row(name)
        assert sorted(row["labels43"]) == sorted(meta["labels"])
        assert row["s2v1_name"] == name and row["s1_name"] == s1
    assert checked == 6 * 14


def test_store_metadata_columns_and_pairs(v1_store: Path) -> None:
    store = Store.open(v1_store)
    assert tuple(store.metadata.columns) == METADATA_COLUMNS
    assert store.names() == sorted(store.names())
    row = store.row("S2A_MSIL2A_20170613T101031_87_48")
    assert row["split"] in ("train", "validation", "test") and row["country"] == "Austria"
    assert row["season"] in ("Spring", "Summer", "Fall", "Winter")
    pair = store["S2A_MSIL2A_20170613T101031_87_48"]
    assert pair.s1_name == "S1A_IW_GRDH_1SDV_20170613T165043_33UUP_87_48"
    assert "Arable land" in pair.labels19 and pair.labels43 is not None
    assert set(pair.bands) == set(S2_BANDS + S1_BANDS)
    assert sum(len(store.names(s)) for s in ("train", "val", "test")) == sum(
        v for k, v in store.manifest["splits"].items() if k != "None")  # type: ignore[index]
    with pytest.raises(SplitError):
        store.names("validate")
    with pytest.raises(StoreError, match=r"no pair named"):
        store.read_pair("S2A_MSIL2A_20170613T101031_1_1")


def test_read_subset_of_bands_gives_writable_copies(v1_store: Path) -> None:
    store = Store.open(v1_store)
    name = store.names()[0]
    full = store.read_pair(name)
    part = store.read_pair(name, bands=["B04", "B8A", "VH"])
    assert list(part) == ["B04", "B8A", "VH"]
    for band, arr in part.items():
        assert arr.flags.writeable and np.array_equal(arr, full[band])
    assert store.raw(name) == encode_blob(store.read(name))
    with store.view(name) as view:
        assert all(np.array_equal(view[b], full[b]) and not view[b].flags.writeable for b in S2_BANDS)


def test_content_hash_follows_its_documented_definition(v1_store: Path) -> None:
    import hashlib

    import pyarrow.parquet as pq

    Store.open(v1_store).close()  # py-lmdb allows one handle per file and process
    h = hashlib.sha256(b"benmm-store-content/1\n")
    env = lmdb.open(str(v1_store / "lmdb"), readonly=True, lock=False)
    try:
        with env.begin() as txn:
            for key, value in txn.cursor():  # bytewise key order
                h.update(len(key).to_bytes(4, "little") + key + hashlib.sha256(value).digest())
    finally:
        env.close()
    rows = sorted(pq.read_table(v1_store / "metadata.parquet").to_pylist(), key=lambda r: r["patch_id"])
    for r in rows:  # every column but the WGS84 geometry, which is derived from the hashed footprint
        assert isinstance(r.pop("geometry"), bytes) and r["footprint_crs"].startswith("EPSG:")
    text = "".join(json.dumps(r, sort_keys=True, separators=(",", ":"), ensure_ascii=False) + "\n"
                   for r in rows)
    h.update(b"metadata\n" + hashlib.sha256(text.encode()).digest())
    manifest = json.loads((v1_store / "benmm-store.json").read_text())
    assert manifest["content_hash"] == "sha256:" + h.hexdigest()


def test_verify_recomputes_the_manifest_hash(v1_store: Path) -> None:
    store = Store.open(v1_store)
    assert store.verify() == store.content_hash
    assert str(store.content_hash).startswith("sha256:")


# ---- reBEN -------------------------------------------------------------------------------------
def test_reben_sample_opens_as_a_store(reben_sample_root: Path) -> None:
    store = Store.open(reben_sample_root)
    assert store.kind == "reben" and store.manifest is None
    assert len(store) == 24  # 18 in metadata.parquet + 6 snow/cloud patches in the second file
    assert len(list(store.keys())) == 48
    assert sorted(store.names("val")) == sorted(store.names("validation")) and len(store.names("val")) == 8
    store.close()  # py-lmdb allows one handle per file and process
    env = lmdb.open(str(reben_sample_root / "BigEarthNet-V2-LMDB"), readonly=True, lock=False)
    try:
        with env.begin() as txn:
            refs = {name: safetensors.numpy.load(txn.get(name.encode())) for name in store.names()}
    finally:
        env.close()
    for name, ref in refs.items():
        got = store.read(name)
        assert set(got) == set(S2_BANDS)
        assert all(np.array_equal(got[b], ref[b]) for b in ref)
        assert set(store.read(store.s1_key(name))) == set(S1_BANDS)
    pair = store["S2A_MSIL2A_20170613T101031_N9999_R022_T33UUP_37_88"]
    assert pair.split == "train" and pair.labels43 is None and pair.s2v1_name.startswith("S2A_MSIL2A_2017")
    assert store.verify().startswith("sha256:")


def test_reben_folder_as_store_and_as_v2_archive_in_one_process(reben_sample_root: Path) -> None:
    from benmm.archive.v2 import V2Archive

    store = Store.open(reben_sample_root)
    name = store.names()[0]
    first = store.read_pair(name)["B02"]
    arc = V2Archive(reben_sample_root)
    assert np.array_equal(arc[name].bands["B02"], first)
    assert np.array_equal(store.read_pair(name)["B02"], first)


# ---- process safety ------------------------------------------------------------------------------
def _checksum(args: tuple[Store, str]) -> float:
    store, name = args
    return float(sum(float(a.astype(np.float64).sum()) for a in store.read_pair(name).values()))


def test_store_is_picklable_and_safe_in_forked_workers(v1_store: Path) -> None:
    store = Store.open(v1_store)
    names = store.names()
    expected = [_checksum((store, n)) for n in names]  # opens the env in this process before forking
    clone = pickle.loads(pickle.dumps(store))
    assert clone.read_pair(names[0]).keys() == store.read_pair(names[0]).keys()
    with mp.get_context("fork").Pool(2) as pool:
        assert pool.map(_checksum, [(store, n) for n in names]) == expected


# ---- bad stores ---------------------------------------------------------------------------------
def test_missing_path_and_not_a_store(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match=r"does not exist"):
        Store.open(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(StoreError, match=r"not a store"):
        Store.open(tmp_path / "empty")
    (tmp_path / "file").write_text("x")
    with pytest.raises(StoreError, match=r"not a store"):
        Store.open(tmp_path / "file")


def test_garbage_lmdb(v1_store_copy: Path) -> None:
    (v1_store_copy / "lmdb" / "data.mdb").write_bytes(b"not an lmdb" * 1000)
    with pytest.raises(StoreError, match="LMDB"):
        Store.open(v1_store_copy)


def test_reben_folder_under_rico_hdl_name(reben_sample_root: Path, tmp_path: Path) -> None:
    root = tmp_path / "rico"
    root.mkdir()
    shutil.copytree(reben_sample_root / "BigEarthNet-V2-LMDB", root / "Encoded-BigEarthNet")
    shutil.copy(reben_sample_root / "metadata.parquet", root / "metadata.parquet")
    store = Store.open(root)
    assert store.kind == "reben" and len(store) == 18


def test_missing_manifest(v1_store_copy: Path) -> None:
    (v1_store_copy / "benmm-store.json").unlink()
    with pytest.raises(StoreError, match=r"benmm-store.json is missing"):
        Store.open(v1_store_copy)


def test_unreadable_manifest(v1_store_copy: Path) -> None:
    (v1_store_copy / "benmm-store.json").write_text("{not json")
    with pytest.raises(StoreError, match=r"unreadable manifest"):
        Store.open(v1_store_copy)


@pytest.mark.parametrize(("version", "hint"), [(99, "upgrade benmm"), (0, "encode it again")])
def test_wrong_format_version(v1_store_copy: Path, version: int, hint: str) -> None:
    path = v1_store_copy / "benmm-store.json"
    manifest = json.loads(path.read_text())
    manifest["format_version"] = version
    path.write_text(json.dumps(manifest))
    with pytest.raises(StoreError, match=rf"format version {version}.*{hint}"):
        Store.open(v1_store_copy)


@pytest.mark.parametrize(("key", "value", "message"), [
    ("keys", 13, "LMDB holds 12 keys but the manifest says 13"),
    ("pairs", 7, "has 6 rows but the manifest says 7"),
])
def test_count_mismatch(v1_store_copy: Path, key: str, value: int, message: str) -> None:
    path = v1_store_copy / "benmm-store.json"
    manifest = json.loads(path.read_text())
    manifest[key] = value
    path.write_text(json.dumps(manifest))
    with pytest.raises(StoreError, match=message):
        Store.open(v1_store_copy)


def test_truncated_value_is_reported_by_read_and_verify(v1_store_copy: Path) -> None:
    store = Store.open(v1_store_copy)
    name = store.names()[2]
    raw = store.raw(name)
    store.close()
    env = lmdb.open(str(v1_store_copy / "lmdb"))
    with env.begin(write=True) as txn:
        txn.put(name.encode(), raw[: len(raw) - 1000])
    env.close()
    store = Store.open(v1_store_copy)
    with pytest.raises(StoreError, match=rf"{name}.*truncated"):
        store.read(name)
    with pytest.raises(StoreError, match=r"damaged"):
        store.verify()


def test_modified_value_fails_verify(v1_store_copy: Path) -> None:
    store = Store.open(v1_store_copy)
    name = store.names()[0]
    bands = {k: v.copy() for k, v in store.read(name).items()}
    store.close()
    bands["B02"][0, 0] += 1
    env = lmdb.open(str(v1_store_copy / "lmdb"))
    with env.begin(write=True) as txn:
        txn.put(name.encode(), encode_blob(bands))
    env.close()
    with pytest.raises(StoreError, match=r"content hash .* differs"):
        Store.open(v1_store_copy).verify()


def test_truncated_data_file(v1_store_copy: Path) -> None:
    data = v1_store_copy / "lmdb" / "data.mdb"
    with open(data, "r+b") as fh:
        fh.truncate(data.stat().st_size // 2)
    with pytest.raises(StoreError, match=r"truncated"):
        Store.open(v1_store_copy)


def test_half_written_store_is_refused(v1_store_copy: Path) -> None:
    (v1_store_copy / ".benmm-encode").mkdir()
    with pytest.raises(StoreError, match=r"half-written.*benmm encode"):
        Store.open(v1_store_copy)


def test_missing_metadata(v1_store_copy: Path) -> None:
    (v1_store_copy / "metadata.parquet").unlink()
    with pytest.raises(StoreError, match=r"metadata.parquet is missing"):
        Store.open(v1_store_copy)


def test_reben_folder_without_metadata(reben_sample_copy: Path) -> None:
    (reben_sample_copy / "metadata.parquet").chmod(0o644)
    (reben_sample_copy / "metadata.parquet").unlink()
    with pytest.raises(StoreError, match=r"metadata.parquet is missing"):
        Store.open(reben_sample_copy)


# ---- LMDB handles across fork (benmm.store.lmdbenv) ------------------------------------------------------
class _Held(Exception):
    pass


def _own_handle_in_worker(worker_id: int) -> None:
    """What another LMDB reader does in a DataLoader worker (e.g. ConfigILM's BENv2 dataset): open its
    own handle on the store's files. py-lmdb refuses it while an inherited handle is still open."""
    import torch.utils.data

    info = torch.utils.data.get_worker_info()
    assert info is not None
    env = lmdb.open(str(info.dataset.store.lmdb_path), readonly=True, lock=False)  # type: ignore[attr-defined]
    env.close()


@pytest.mark.parametrize("init", [None, _own_handle_in_worker])
def test_encode_in_process_then_forked_dataloader(synthetic: Synthetic, tmp_path: Path, init) -> None:  # type: ignore[no-untyped-def]
    import torch.utils.data

    from benmm.data import BigEarthNetDataset, collate

    store = encode(synthetic.archive(pairs=8), tmp_path / "s.store", workers=1, progress=False)
    held: list[BaseException] = []
    try:  # a traceback kept alive that still references a read transaction of the store
        with store.env().begin(buffers=True) as txn:
            assert txn.get(store.names()[0].encode()) is not None
            raise _Held
    except _Held as exc:
        held.append(exc)
    ds = BigEarthNetDataset(store, split=None, recommended=False)
    loader = torch.utils.data.DataLoader(ds, batch_size=3, num_workers=2, collate_fn=collate,
                                         multiprocessing_context="fork", worker_init_fn=init)
    names = [n for batch in loader for n in batch["name"]]
    assert sorted(names) == sorted(store.names())
    assert store.read(store.names()[0])  # the parent's handle still works after the fork
    assert held


def test_v2_archive_and_store_share_one_handle(reben_sample_root: Path) -> None:
    from benmm.archive.v2 import V2Archive
    from benmm.store.lmdbenv import open_envs

    arc = V2Archive(reben_sample_root)
    name = arc.names()[0]
    arc[name]
    store = Store.open(reben_sample_root)
    assert len(open_envs()) >= 1 and store.env() is open_envs()[str(Path(store.lmdb_path).resolve())]
    arc.close()  # closes the shared handle: the store reopens it, never uses a closed one
    np.testing.assert_array_equal(store.read(name)["B02"], arc[name].bands["B02"])
    store.close()  # other tests open the sample's files with their own handle


def test_reben_seasons_match_the_pair_list_and_reopen(reben_sample_root: Path) -> None:
    from pandas.testing import assert_frame_equal

    from benmm.archive.splits import seasons, v1_info

    first = Store.open(reben_sample_root).metadata
    for name, season in zip(first["s2v1_name"], first["season"], strict=True):
        info = v1_info(name)
        assert info is not None and season == info.season, name
    second = Store.open(reben_sample_root).metadata  # answered from the per-process cache
    assert_frame_equal(first, second)
    assert seasons(["not_a_patch", first["s2v1_name"][0]]) == [None, first["season"][0]]
