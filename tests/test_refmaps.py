"""The reBEN release as published: ``benmm synth --layout reben-release`` (GeoTIFF folders + reference
maps + metadata), its encode into a store with the maps under rico-hdl's key, the Dataset's
``reference_map`` and its augmentation, and the reference-map validation errors."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile
import torch
from typer.testing import CliRunner

from benmm.archive import archive_kind, open_archive
from benmm.archive.refmaps import (
    VALID_CODES,
    class_index_map,
    classes_present,
    decode_map_blob,
    map_key,
    map_path,
    read_map,
)
from benmm.archive.v2 import METADATA, V2Archive, s1_tiff_dir, s2_tiff_dir
from benmm.bands import S1_BANDS, S2_BANDS
from benmm.cli.app import app
from benmm.data import BigEarthNetDataset
from benmm.data.dataset import DatasetError
from benmm.data.transforms import _DIHEDRAL, BatchTransform, _apply_dihedral
from benmm.errors import ArchiveError, EncodeError
from benmm.ingest import encode
from benmm.labels import LABELS_43, to_19
from benmm.store import Store
from benmm.store.layout import ContentHasher, value_digest
from benmm.synth.release import RELEASE_TARBALLS, release_files

PAIRS, SEED = 6, 11


@pytest.fixture(scope="module")
def release(synthetic) -> Path:  # type: ignore[no-untyped-def]
    return synthetic.archive(pairs=PAIRS, seed=SEED, layout="reben-release")


@pytest.fixture(scope="module")
def store(synthetic, release: Path) -> Store:  # type: ignore[no-untyped-def]
    return synthetic.encoded(release)


def test_release_layout(release: Path) -> None:
    assert archive_kind(release) == "reben"
    arc = open_archive(release)
    assert isinstance(arc, V2Archive) and arc.backend == "tiff" and arc.has_reference_maps
    meta = arc.metadata
    assert len(meta) == PAIRS and (release / METADATA).is_file()
    for pid, s1 in zip(meta["patch_id"], meta["s1_name"], strict=True):
        tile = pid.rsplit("_", 2)[0]
        assert s2_tiff_dir(release, pid) == release / "BigEarthNet-S2" / tile / pid
        assert sorted(p.name for p in s2_tiff_dir(release, pid).iterdir()) == sorted(
            f"{pid}_{b}.tif" for b in S2_BANDS)
        assert sorted(p.name for p in s1_tiff_dir(release, s1).iterdir()) == sorted(
            f"{s1}_{b}.tif" for b in S1_BANDS)
        path = release / "Reference_Maps" / tile / pid / f"{pid}_reference_map.tif"
        assert map_path(release, pid) == path
        with tifffile.TiffFile(path) as tif:  # as published: deflate + predictor 2, nodata 0, uint16
            page = tif.pages[0]
            assert page.compression == 8 and page.predictor == 2 and page.dtype == np.uint16
            assert page.tags[42113].value == "0" and page.shape == (120, 120)
        ref = read_map(path)
        assert set(np.unique(ref).tolist()) <= VALID_CODES - {0, 335, 999}
        # the labels are the classes present in the map, converted to 19 classes
        assert sorted(arc.labels19(pid)) == sorted(classes_present(ref))
        assert sorted(to_19(classes_present(ref, 43))) == sorted(classes_present(ref))
    with tifffile.TiffFile(s2_tiff_dir(release, pid) / f"{pid}_B02.tif") as tif:
        assert tif.pages[0].tags[42113].value == "0" and tif.pages[0].compression == 1


def test_reference_map_reads_the_same_in_rasterio(release: Path) -> None:
    import rasterio

    pid = V2Archive(release).names()[0]
    with rasterio.open(map_path(release, pid)) as ds:
        assert ds.profile["compress"] == "deflate" and ds.nodata == 0 and ds.res == (10.0, 10.0)
        np.testing.assert_array_equal(ds.read(1), read_map(map_path(release, pid)))


def test_release_files(release: Path) -> None:
    files = release_files(release)
    assert set(files) == {*RELEASE_TARBALLS.values(), ""}
    assert len(files["BigEarthNet-S2.tar.zst"]) == 12 * PAIRS
    assert len(files["BigEarthNet-S1.tar.zst"]) == 2 * PAIRS
    assert len(files["Reference_Maps.tar.zst"]) == PAIRS
    for tarball, members in files.items():
        assert members == sorted(members) and all((release / m).is_file() for m in members)
        if tarball:
            assert all(m.startswith(tarball.removesuffix(".tar.zst") + "/") for m in members)
    assert "metadata.parquet" in files[""]
    total = sum(len(v) for v in files.values())
    assert total == sum(1 for p in release.rglob("*") if p.is_file())


def test_encode_stores_maps_under_rico_hdl_key(store: Store, release: Path) -> None:
    from safetensors.numpy import save

    m = store.manifest
    assert m is not None and m["pairs"] == PAIRS and m["keys"] == 3 * PAIRS
    assert m["reference_maps"]["count"] == PAIRS and m["reference_maps"]["tensor"] == "Data"
    assert store.has_reference_maps
    for pid in store.names():
        ref = read_map(map_path(release, pid))
        np.testing.assert_array_equal(store.reference_map(pid), ref)
        assert store.raw(map_key(pid)) == save({"Data": ref})  # rico-hdl's value, byte for byte
        assert sorted(store.row(pid)["labels"]) == sorted(classes_present(ref))
    assert store.verify() == store.content_hash


def test_maps_enter_the_hash_only_as_keys(synthetic, release: Path, store: Store, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    bare = synthetic.copy(release, tmp_path / "bare")
    shutil.rmtree(bare / "Reference_Maps")
    without = encode(bare, tmp_path / "bare.store", workers=1, progress=False)
    assert without.manifest is not None and "reference_maps" not in without.manifest
    assert without.manifest["keys"] == 2 * PAIRS and not without.has_reference_maps
    # the map-less store's hash is the store's hash recomputed without the map keys
    hasher = ContentHasher()
    for key in store.keys():  # noqa: SIM118 - LMDB keys; iterating a Store gives pair names
        if not key.endswith("_reference_map"):
            hasher.add(key, value_digest(store.raw(key)))
    import pyarrow.parquet as pq

    assert without.content_hash == hasher.hexdigest(pq.read_table(store.metadata_files[0]).to_pylist())
    assert without.content_hash != store.content_hash


def test_rico_hdl_lmdb_with_maps_encodes_to_the_same_store(release: Path, store: Store,
                                                           tmp_path: Path) -> None:
    """A reBEN LMDB as rico-hdl writes it from this release (bands + ``<patch>_reference_map``) is read
    as a store with maps, and encodes to the same values and rows as the GeoTIFF release (its
    footprints aside)."""
    import lmdb
    from safetensors.numpy import save

    arc = V2Archive(release)
    root = tmp_path / "reben-lmdb"
    (root / "BigEarthNet-V2-LMDB").mkdir(parents=True)
    shutil.copy(release / METADATA, root / METADATA)
    flagged = release / "metadata_for_patches_with_snow_cloud_or_shadow.parquet"
    if flagged.is_file():
        shutil.copy(flagged, root / flagged.name)
    env = lmdb.open(str(root / "BigEarthNet-V2-LMDB"), map_size=1 << 26)
    with env.begin(write=True) as txn:
        for pid in arc:
            s1 = arc.row(pid)["s1_name"]
            txn.put(pid.encode(), save(arc.read_key(pid, S2_BANDS)))
            txn.put(s1.encode(), save(arc.read_key(s1, S1_BANDS)))
            txn.put(map_key(pid).encode(), save({"Data": arc.reference_map(pid)}))
    env.close()
    reben = Store.open(root)
    assert reben.has_reference_maps and V2Archive(root).has_reference_maps
    np.testing.assert_array_equal(V2Archive(root).reference_map(arc.names()[0]),
                                  store.reference_map(arc.names()[0]))
    again = encode(root, tmp_path / "again.store", workers=1, progress=False)
    # the same values under the same keys, and the same rows; only the footprints differ: the GeoTIFF
    # release is georeferenced, the LMDB says nothing of place (so the content hashes differ, by design)
    again_store = Store.open(again.path)
    keys = sorted(store.keys())
    assert sorted(again_store.keys()) == keys
    assert all(again_store.raw(k) == store.raw(k) for k in keys)
    assert store.manifest["footprints"]["pairs"] == len(store)
    assert again_store.manifest["footprints"]["pairs"] == 0
    cols = [c for c in store.metadata.columns if not c.startswith("footprint") and c != "geometry"]
    pd.testing.assert_frame_equal(again_store.metadata[cols].reset_index(drop=True),
                                  store.metadata[cols].reset_index(drop=True))


def test_dataset_reference_map(store: Store) -> None:
    ds = BigEarthNetDataset(store, split=None, recommended=False, reference_maps=True)
    sample = ds[0]
    ref = sample["reference_map"]
    assert ref.dtype == torch.int64 and tuple(ref.shape) == (120, 120)
    np.testing.assert_array_equal(ref.numpy(), store.reference_map(sample["name"]))
    batch = ds.get_batch(range(len(ds)))
    assert batch["reference_map"].dtype == torch.int64
    assert tuple(batch["reference_map"].shape) == (PAIRS, 120, 120)
    for row, name in enumerate(batch["name"]):
        np.testing.assert_array_equal(batch["reference_map"][row].numpy(), store.reference_map(name))
    assert "reference_map" not in BigEarthNetDataset(store, split=None, recommended=False)[0]
    idx = class_index_map(ref.numpy())
    assert idx.dtype == np.int64 and idx.min() >= -1 and idx.max() < 19


def test_batch_augmentation_flips_the_map_with_the_bands(store: Store) -> None:
    ds = BigEarthNetDataset(store, split=None, recommended=False, reference_maps=True)
    batch = ds.get_batch(range(len(ds)))
    maps, s1 = batch["reference_map"].clone(), batch["s1"].clone()
    tf = BatchTransform(ds.bands, resample="bilinear", stats="v1", augment=True, seed=4)
    out = tf(dict(batch))
    choice = BatchTransform(ds.bands, stats=None, augment=True, seed=4).draw(len(ds))
    assert len(set(choice.tolist())) > 1  # the check below sees several symmetries
    assert out["reference_map"].dtype == torch.int64  # never normalised or interpolated
    torch.testing.assert_close(batch["reference_map"], maps)  # the input batch is left alone
    plain = BatchTransform(ds.bands, resample="bilinear", stats="v1")(dict(batch))
    for i, code in enumerate(choice.tolist()):
        k, flip = _DIHEDRAL[code]
        torch.testing.assert_close(out["reference_map"][i], _apply_dihedral(maps[i], k, flip))
        torch.testing.assert_close(out["s1"][i], _apply_dihedral(plain["s1"][i], k, flip))
        torch.testing.assert_close(out["s2"][i], _apply_dihedral(plain["s2"][i], k, flip))
    assert torch.equal(s1, batch["s1"])


def test_dataset_without_maps_says_so(synthetic) -> None:  # type: ignore[no-untyped-def]
    plain = synthetic.store(pairs=8, seed=0, layout="reben")
    assert not plain.has_reference_maps
    with pytest.raises(DatasetError, match="has no reference maps"):
        BigEarthNetDataset(plain, split=None, recommended=False, reference_maps=True)


# ---- validation --------------------------------------------------------------------------------------

def _damaged(synthetic, release: Path, tmp_path: Path, data: np.ndarray, **kw: object) -> tuple[Path, Path]:  # type: ignore[no-untyped-def]
    root = synthetic.copy(release, tmp_path / "bad")
    pid = V2Archive(root).names()[0]
    path = map_path(root, pid)
    tifffile.imwrite(path, data, compression="zlib", predictor=True, **kw)  # type: ignore[arg-type]
    return root, path


@pytest.mark.parametrize(("data", "message"), [
    (np.full((60, 60), 211, np.uint16), "reference map is 60x60, expected 120x120"),
    (np.full((120, 120), 211, np.uint8), "dtype uint8, expected uint16"),
    (np.pad(np.full((118, 120), 211, np.uint16), ((0, 2), (0, 0)), constant_values=7),
     "240 pixels with code(s) 7, which are not CLC Level-3 codes"),
])
def test_bad_reference_map_is_named(synthetic, release: Path, tmp_path: Path, data: np.ndarray,  # type: ignore[no-untyped-def]
                                    message: str) -> None:
    root, path = _damaged(synthetic, release, tmp_path, data)
    with pytest.raises(ArchiveError, match=re.escape(message)) as exc:
        read_map(path)
    assert str(exc.value).startswith(str(path))
    with pytest.raises(EncodeError, match=re.escape(message)) as exc2:
        encode(root, tmp_path / "bad.store", workers=1, progress=False)
    assert str(path) in str(exc2.value) and "\n" not in str(exc2.value)
    assert [Path(p.path) for p in V2Archive(root).validate(V2Archive(root).names()[0])] == [path]
    result = CliRunner().invoke(app, ["encode", str(root), str(tmp_path / "cli.store"), "--workers", "1"])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert message in " ".join(result.output.split())


def test_valid_codes_include_no_data_glaciers_and_unlabeled(tmp_path: Path) -> None:
    data = np.full((120, 120), 523, np.uint16)
    data[0, :3] = (0, 335, 999)
    tifffile.imwrite(tmp_path / "m.tif", data, compression="zlib", predictor=True)
    np.testing.assert_array_equal(read_map(tmp_path / "m.tif"), data)
    assert classes_present(data) == ["Marine waters"] and classes_present(data, 43) == [LABELS_43[42]]
    assert class_index_map(data)[0, :3].tolist() == [-1, -1, -1]


def test_missing_map_and_bad_blob(synthetic, release: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    root = synthetic.copy(release, tmp_path / "gap")
    pid = V2Archive(root).names()[-1]
    map_path(root, pid).unlink()
    with pytest.raises(EncodeError, match="reference map is missing") as exc:
        encode(root, tmp_path / "gap.store", workers=1, progress=False)
    assert str(map_path(root, pid)) in str(exc.value)
    from benmm.store.blob import encode_blob

    with pytest.raises(ArchiveError, match="holds the one tensor 'Data'"):
        decode_map_blob(encode_blob({"B02": np.zeros((120, 120), np.uint16)}), "x::y")


def test_synth_cli_reben_release(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["synth", str(tmp_path / "r"), "-n", "2", "--layout", "reben-release",
                                      "--workers", "1"])
    assert result.exit_code == 0, result.output
    meta = pd.concat([pd.read_parquet(p) for p in sorted((tmp_path / "r").glob("*.parquet"))])
    assert len(meta) == 2 and all(map_path(tmp_path / "r", pid).is_file() for pid in meta["patch_id"])


def test_datamodule_batches_carry_maps(store: Store) -> None:
    """Through the DataModule's loader (worker processes, reused buffers) and its batch transform."""
    from benmm.data import BigEarthNetDataModule

    dm = BigEarthNetDataModule(store, batch_size=PAIRS, num_workers=1, augment=True, seed=2,
                               recommended=False, reference_maps=True, predict_split=None)
    batch = next(iter(dm.predict_dataloader()))
    batch = dm.on_after_batch_transfer(batch, 0)
    assert batch["reference_map"].dtype == torch.int64
    assert tuple(batch["reference_map"].shape[1:]) == (120, 120)
    for row, name in enumerate(batch["name"]):
        np.testing.assert_array_equal(batch["reference_map"][row].numpy(), store.reference_map(name))


def test_release_band_files_take_the_fast_reader(release: Path) -> None:
    """reBEN's S2 files (GDAL_NODATA + SHORT strip byte counts, as published) are still the simple
    uncompressed layout the strip reader takes; the deflate maps are not (tifffile reads them)."""
    from benmm.archive.tiff import _read_image

    pid = V2Archive(release).names()[0]
    folder = s2_tiff_dir(release, pid)
    for band, count_type in (("B02", 3), ("B01", 4)):  # several strips: SHORT; one strip: LONG
        with tifffile.TiffFile(folder / f"{pid}_{band}.tif") as tif:
            assert tif.pages[0].tags[279].dtype == count_type and len(tif.pages[0].tags) == 16
        arr, layout = _read_image(folder / f"{pid}_{band}.tif", False)
        assert layout is not None and np.array_equal(arr, tifffile.imread(folder / f"{pid}_{band}.tif"))
    assert _read_image(map_path(release, pid), False)[1] is None


def test_info_says_whether_there_are_maps(release: Path, store: Store, synthetic) -> None:  # type: ignore[no-untyped-def]
    plain = synthetic.store(pairs=8, layout="reben").path
    for path, word in ((release, "yes"), (store.path, "yes"), (plain, "none")):
        result = CliRunner().invoke(app, ["info", str(path), "--no-labels", "--check", "1"])
        assert result.exit_code == 0 and f"reference maps: {word}" in result.output, result.output


def test_read_map_from_bytes(release: Path) -> None:
    """A tarball member's bytes read like the file; a truncated one is named by ``where``."""
    path = map_path(release, V2Archive(release).names()[0])
    data = path.read_bytes()
    np.testing.assert_array_equal(read_map(data, "x.tar.zst::m.tif"), read_map(path))
    with pytest.raises(ArchiveError, match=r"^x\.tar\.zst::m\.tif: not a readable GeoTIFF"):
        read_map(data[:300], "x.tar.zst::m.tif")
