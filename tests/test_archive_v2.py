"""The reBEN reader on the published sample (LMDB + both parquet files) and on the GeoTIFF layout."""

from __future__ import annotations

import os
import pickle
import stat
from pathlib import Path

import lmdb
import numpy as np
import pandas as pd
import pytest
import tifffile
from safetensors.numpy import load, save

from benmm import labels as L
from benmm.archive import UnknownPatchError, open_archive, v2
from benmm.archive.splits import v1_info
from benmm.archive.v2 import EXCLUDED_METADATA, METADATA, V2Archive, s1_tiff_dir, s2_tiff_dir
from benmm.bands import BAND_DTYPE, BAND_SIZE, S1_BANDS, S2_BANDS
from benmm.errors import ArchiveError, BandError
from benmm.store.lmdbenv import close_env, open_envs

LMDB = "BigEarthNet-V2-LMDB"


def _meta(root: Path) -> pd.DataFrame:
    return pd.concat([pd.read_parquet(root / METADATA), pd.read_parquet(root / EXCLUDED_METADATA)],
                     ignore_index=True)


def _raw(root: Path) -> dict[str, dict[str, np.ndarray]]:
    close_env(root / LMDB)  # py-lmdb allows one handle per file and process
    env = lmdb.open(str(root / LMDB), readonly=True, lock=False)
    with env.begin() as txn:
        out = {bytes(k).decode(): load(bytes(v)) for k, v in txn.cursor()}
    env.close()
    return out


def _writable(root: Path) -> None:
    for dirpath, _, files in os.walk(root):
        os.chmod(dirpath, stat.S_IRWXU)
        for f in files:
            os.chmod(os.path.join(dirpath, f), stat.S_IRUSR | stat.S_IWUSR)


def test_sample_archive(reben_sample_root: Path) -> None:
    arc = open_archive(reben_sample_root)
    assert isinstance(arc, V2Archive) and arc.backend == "lmdb"
    meta = _meta(reben_sample_root)
    assert len(arc) == 24 and list(arc) == list(meta["patch_id"])
    assert len(V2Archive(reben_sample_root, include_excluded=False)) == 18


def test_every_sample_pair(reben_sample_root: Path) -> None:
    arc = V2Archive(reben_sample_root)
    raw = _raw(reben_sample_root)
    meta = _meta(reben_sample_root)
    assert len(raw) == 48
    for row in meta.itertuples():
        pair = arc[row.patch_id]
        assert pair.name == row.patch_id and pair.s1_name == row.s1_name and pair.s2v1_name == row.s2v1_name
        assert list(pair.bands) == list(S2_BANDS + S1_BANDS)
        for band, arr in pair.bands.items():
            ref = raw[row.patch_id if band in S2_BANDS else row.s1_name][band]
            assert arr.shape == (BAND_SIZE[band],) * 2 and arr.dtype == BAND_DTYPE[band]
            np.testing.assert_array_equal(arr, ref)
        assert set(pair.labels19) == set(row.labels) and pair.labels43 is None
        assert pair.labels19 == [x for x in L.LABELS_19 if x in set(row.labels)]
        assert pair.split == {"train": "train", "validation": "val", "test": "test"}[row.split]
        assert pair.country == row.country
        assert pair.contains_seasonal_snow == row.contains_seasonal_snow
        assert pair.contains_cloud_or_shadow == row.contains_cloud_or_shadow
        info = v1_info(row.s2v1_name)
        assert pair.season == (info.season if info else None)
        assert arc.validate(row.patch_id) == []
        # the same pair under its v1 S2 name and its S1 name
        assert arc.patch_id(row.s2v1_name) == arc.patch_id(row.s1_name) == row.patch_id


def test_bands_by_name(reben_sample_root: Path) -> None:
    arc = V2Archive(reben_sample_root)
    name = arc.names()[0]
    got = arc.bands(name, ("B04", "B03", "B02", "VV"))
    assert list(got) == ["B02", "B03", "B04", "VV"]  # canonical order
    assert list(arc.bands(name, ("s2-10m",))) == ["B02", "B03", "B04", "B08"]
    with pytest.raises(BandError, match="B10"):
        arc.bands(name, ("B10",))


def test_flags_in_sample(reben_sample_root: Path) -> None:
    arc = V2Archive(reben_sample_root)
    snow = [n for n in arc if arc[n].contains_seasonal_snow]
    cloud = [n for n in arc if arc[n].contains_cloud_or_shadow]
    assert len(snow) == 3 and len(cloud) == 3
    assert all(arc.row(n)["excluded"] for n in snow + cloud)


def test_lazy_per_process_env_and_pickle(reben_sample_root: Path) -> None:
    arc = V2Archive(reben_sample_root)
    arc.close()
    key = os.path.realpath(reben_sample_root / LMDB)
    assert key not in open_envs()  # nothing opened until a read
    name = arc.names()[0]
    arc[name]
    assert key in open_envs()
    again = pickle.loads(pickle.dumps(arc))  # a second reader of the same LMDB in this process
    np.testing.assert_array_equal(again[name].bands["B02"], arc[name].bands["B02"])


def test_parallel_check(reben_sample_root: Path) -> None:
    from benmm.archive.report import check_pairs

    arc = V2Archive(reben_sample_root)
    arc[arc.names()[0]]  # an open LMDB handle in the parent must not leak into the workers
    got = dict(check_pairs(arc, workers=2, chunk=4))
    assert got == {n: [] for n in arc}


def test_unknown_name(reben_sample_root: Path) -> None:
    arc = V2Archive(reben_sample_root)
    with pytest.raises(UnknownPatchError, match="not a pair of the reBEN archive"):
        arc["S2A_MSIL2A_20170613T101031_N9999_R022_T33UUP_99_99"]


def _damage_lmdb(root: Path, key: str, value: bytes | None) -> None:
    v2._close_env(root / LMDB)  # LMDB allows one handle per process
    _writable(root)
    env = lmdb.open(str(root / LMDB), map_size=64 << 20)
    with env.begin(write=True) as txn:
        if value is None:
            txn.delete(key.encode())
        else:
            txn.put(key.encode(), value)
    env.close()


def test_missing_key(reben_sample_copy: Path) -> None:
    arc = V2Archive(reben_sample_copy)
    name = arc.names()[0]
    s1 = arc.row(name)["s1_name"]
    _damage_lmdb(reben_sample_copy, s1, None)
    arc = V2Archive(reben_sample_copy)
    with pytest.raises(ArchiveError, match=f"{s1}: key is missing") as exc:
        arc[name]
    assert str(reben_sample_copy / LMDB) in str(exc.value)
    problems = arc.validate(name)
    assert [p.reason for p in problems] == ["key is missing from the LMDB"]
    assert problems[0].path == f"{reben_sample_copy / LMDB}::{s1}"


def test_wrong_shape_and_missing_band(reben_sample_copy: Path) -> None:
    arc = V2Archive(reben_sample_copy)
    name = arc.names()[0]
    bands = {k: np.ascontiguousarray(v) for k, v in arc.read_key(name, S2_BANDS).items()}
    bands["B8A"] = np.zeros((61, 60), np.uint16)
    _damage_lmdb(reben_sample_copy, name, save(bands))
    with pytest.raises(ArchiveError, match="B8A is 61x60, expected 60x60"):
        V2Archive(reben_sample_copy)[name]
    del bands["B8A"]
    _damage_lmdb(reben_sample_copy, name, save(bands))
    with pytest.raises(ArchiveError, match="band\\(s\\) B8A missing"):
        V2Archive(reben_sample_copy)[name]
    _damage_lmdb(reben_sample_copy, name, b"garbage")
    assert "not a safetensors blob" in V2Archive(reben_sample_copy).validate(name)[0].reason


def test_unknown_label_in_metadata(reben_sample_copy: Path) -> None:
    _writable(reben_sample_copy)
    path = reben_sample_copy / METADATA
    meta = pd.read_parquet(path)
    name = meta["patch_id"].iloc[0]
    meta.at[meta.index[0], "labels"] = np.array(["Pasture", "Mixed forest"], dtype=object)
    meta.to_parquet(path)
    arc = V2Archive(reben_sample_copy)
    with pytest.raises(ArchiveError, match=r"unknown label 'Pasture'.*did you mean 'Pastures'") as exc:
        arc[name]
    assert str(path) in str(exc.value)
    problems = arc.validate(name)
    assert len(problems) == 1 and problems[0].path == str(path)


def test_metadata_missing_column(reben_sample_copy: Path) -> None:
    _writable(reben_sample_copy)
    path = reben_sample_copy / METADATA
    pd.read_parquet(path).drop(columns=["s1_name"]).to_parquet(path)
    with pytest.raises(ArchiveError, match="missing column\\(s\\) s1_name") as exc:
        V2Archive(reben_sample_copy)
    assert str(path) in str(exc.value)


def test_not_a_reben_folder(tmp_path: Path) -> None:
    with pytest.raises(ArchiveError, match=r"metadata\.parquet"):
        V2Archive(tmp_path)


def _write_tiff_layout(src: Path, dst: Path) -> None:
    """The GeoTIFF layout of the reBEN download, built from the sample LMDB."""
    arc = V2Archive(src)
    dst.mkdir()
    for f in (METADATA, EXCLUDED_METADATA):
        (dst / f).write_bytes((src / f).read_bytes())
    for name in arc:
        s1 = arc.row(name)["s1_name"]
        todo = ((name, s2_tiff_dir(dst, name), S2_BANDS), (s1, s1_tiff_dir(dst, s1), S1_BANDS))
        for key, folder, bands in todo:
            folder.mkdir(parents=True, exist_ok=True)
            for band, arr in arc.read_key(key, bands).items():
                tifffile.imwrite(folder / f"{key}_{band}.tif", arr)


def test_geotiff_layout(reben_sample_root: Path, tmp_path: Path) -> None:
    dst = tmp_path / "reben-tif"
    _write_tiff_layout(reben_sample_root, dst)
    name = "S2A_MSIL2A_20170613T101031_N9999_R022_T33UUP_37_88"
    assert (dst / "BigEarthNet-S2" / "S2A_MSIL2A_20170613T101031_N9999_R022_T33UUP" / name
            / f"{name}_B01.tif").is_file()
    s1 = "S1B_IW_GRDH_1SDV_20170612T165809_33UUP_37_88"
    assert (dst / "BigEarthNet-S1" / "S1B_IW_GRDH_1SDV_20170612T165809" / s1 / f"{s1}_VV.tif").is_file()
    tif = open_archive(dst)
    assert isinstance(tif, V2Archive) and tif.backend == "tiff"
    ref = V2Archive(reben_sample_root)
    assert list(tif) == list(ref)
    for n in ref:
        a, b = tif[n], ref[n]
        assert a.labels19 == b.labels19 and a.split == b.split
        for band in S2_BANDS + S1_BANDS:
            np.testing.assert_array_equal(a.bands[band], b.bands[band])
        assert tif.validate(n) == []
    # damage: a missing band file is named
    (s1_tiff_dir(dst, s1) / f"{s1}_VH.tif").unlink()
    problems = tif.validate(name)
    assert [Path(p.path).name for p in problems] == [f"{s1}_VH.tif"]
