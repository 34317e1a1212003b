"""The v1 reader on the 6 real example pairs, its layouts and pairing, and every kind of damage."""

from __future__ import annotations

import json
import pickle
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import tifffile

from benmm import labels as L
from benmm.archive import UnknownPatchError, open_archive
from benmm.archive.report import check_pairs
from benmm.archive.splits import v1_info
from benmm.archive.v1 import V1Archive, find_v1_roots, read_pair
from benmm.bands import BAND_DTYPE, BAND_SIZE, S1_BANDS, S2_BANDS
from benmm.errors import ArchiveError
from benmm.names import parse
from conftest import V1_SAMPLE_S2

S2_EX, S1_EX = "BigEarthNet-S2-Example", "BigEarthNet-S1-Example"
NAME = V1_SAMPLE_S2[0]  # S2A_MSIL2A_20170613T101031_87_48
S1_OF_NAME = "S1A_IW_GRDH_1SDV_20170613T165043_33UUP_87_48"


def _json(folder: Path) -> dict:
    return json.loads((folder / f"{folder.name}_labels_metadata.json").read_text())


def _write_json(folder: Path, data: object) -> Path:
    path = folder / f"{folder.name}_labels_metadata.json"
    path.write_text(json.dumps(data))
    return path


def test_sample_archive(v1_sample_root: Path) -> None:
    arc = open_archive(v1_sample_root)
    assert isinstance(arc, V1Archive)
    assert len(arc) == 6 and list(arc) == sorted(V1_SAMPLE_S2)
    assert arc.pairing_counts == {"json": 6, "list": 0, "xy": 0}
    assert arc.archive_problems() == []


def test_every_sample_pair(v1_sample_root: Path) -> None:
    arc = V1Archive(v1_sample_root)
    for name in V1_SAMPLE_S2:
        s2_dir, s1_dir = arc.pair_dirs(name)
        s2_json, s1_json = _json(s2_dir), _json(s1_dir)
        assert s1_json["corresponding_s2_patch"] == name
        pair = arc[name]
        assert pair.name == name and pair.s1_name == s1_dir.name
        assert parse(pair.s1_name).xy == parse(name).xy
        assert list(pair.bands) == list(S2_BANDS + S1_BANDS)
        for band, arr in pair.bands.items():
            folder = s2_dir if band in S2_BANDS else s1_dir
            ref = tifffile.imread(folder / f"{folder.name}_{band}.tif")
            assert arr.shape == (BAND_SIZE[band],) * 2 and arr.dtype == BAND_DTYPE[band]
            np.testing.assert_array_equal(arr, ref)
        assert pair.labels43 is not None and set(pair.labels43) == set(s2_json["labels"])
        assert pair.labels43 == sorted(pair.labels43, key=L.LABELS_43.index)
        assert pair.labels19 == L.to_19(s2_json["labels"])
        info = v1_info(name)
        assert info is not None
        assert (pair.split, pair.country, pair.season) == (info.split, info.country, info.season)
        assert pair.s1_name == info.s1_name
        assert pair.contains_seasonal_snow == info.snow and pair.contains_cloud_or_shadow == info.cloud
        # coordinates: S2 uses lry, S1 spells it lly; both come back as lry
        assert "lly" in s1_json["coordinates"]
        assert pair.meta["s1_coordinates"]["lry"] == s1_json["coordinates"]["lly"]
        assert pair.meta["coordinates"] == s2_json["coordinates"]
        assert pair.meta["projection"].startswith("PROJCS")
        assert pair.meta["acquisition_date"] == s2_json["acquisition_date"]
        assert pair.meta["acquisition_time"] == s1_json["acquisition_time"]
        assert arc.validate(name) == []
        assert arc.labels43(name) == pair.labels43


def test_read_pair_function(v1_sample_root: Path) -> None:
    s2 = v1_sample_root / S2_EX / NAME
    s1 = v1_sample_root / S1_EX / S1_OF_NAME
    pair = read_pair(s2, s1, lists=False)
    assert pair.split is None and pair.country is None
    assert pair.labels19 == [
        "Arable land",
        "Land principally occupied by agriculture, with significant areas of natural vegetation",
    ]
    assert read_pair(s2, s1).split == "test"


@pytest.mark.parametrize("layout", ["official", "given-s2-root", "given-s1-root", "other-names"])
def test_layouts(v1_sample_root: Path, tmp_path: Path, layout: str) -> None:
    root = tmp_path / "arc"
    names = {"official": ("BigEarthNet-v1.0", "BigEarthNet-S1-v1.0"), "other-names": ("s2", "s1")}
    s2_name, s1_name = names.get(layout, (S2_EX, S1_EX))
    shutil.copytree(v1_sample_root / S2_EX, root / s2_name)
    shutil.copytree(v1_sample_root / S1_EX, root / s1_name)
    given = {"given-s2-root": root / s2_name, "given-s1-root": root / s1_name}.get(layout, root)
    s2_root, s1_root = find_v1_roots(given)
    assert (s2_root.name, s1_root.name) == (s2_name, s1_name)
    arc = open_archive(given)
    assert len(arc) == 6 and arc.archive_problems() == []
    assert arc[NAME].s1_name == S1_OF_NAME


def test_pairing_from_the_official_list(v1_sample_copy: Path) -> None:
    by_json = V1Archive(v1_sample_copy)
    by_list = V1Archive(v1_sample_copy, pairing="list")
    assert by_list.pairing_counts == {"json": 0, "list": 6, "xy": 0}
    assert {n: by_list.s1_name(n) for n in by_list} == {n: by_json.s1_name(n) for n in by_json}
    # without the S1 JSON the list still pairs it, and validation reports the missing JSON
    s1 = v1_sample_copy / S1_EX / S1_OF_NAME
    (s1 / f"{S1_OF_NAME}_labels_metadata.json").unlink()
    arc = V1Archive(v1_sample_copy)
    assert arc.pairing_counts == {"json": 5, "list": 1, "xy": 0}
    assert arc.s1_name(NAME) == S1_OF_NAME
    assert [p.reason for p in arc.validate(NAME)] == ["metadata JSON is missing"]


def _rename_patch(folder: Path, new: str) -> Path:
    old = folder.name
    for f in folder.iterdir():
        f.rename(folder / f.name.replace(old, new))
    return folder.rename(folder.parent / new)


def test_pairing_by_xy_last(v1_sample_copy: Path) -> None:
    """A patch in no list whose S1 JSON points elsewhere is paired by its unique x_y, and flagged."""
    new = "S2A_MSIL2A_20990613T101031_87_48"
    _rename_patch(v1_sample_copy / S2_EX / NAME, new)
    arc = V1Archive(v1_sample_copy)
    assert arc.pairing_counts["xy"] == 1
    assert arc.s1_name(new) == S1_OF_NAME
    problems = arc.validate(new)
    assert len(problems) == 1 and "corresponding_s2_patch is" in problems[0].reason
    assert problems[0].path.endswith(f"{S1_OF_NAME}_labels_metadata.json")
    arc.read(new, validate=False)  # readable when the cross-check is off


def test_parallel_check_matches_serial(v1_sample_copy: Path) -> None:
    (v1_sample_copy / S2_EX / NAME / f"{NAME}_B03.tif").unlink()
    arc = V1Archive(v1_sample_copy)
    serial = dict(check_pairs(arc))
    parallel = dict(check_pairs(arc, workers=2, chunk=1))
    assert serial == parallel
    assert [p.reason for p in parallel[NAME]] == ["band file is missing"]


def test_archive_pickles(v1_sample_root: Path) -> None:
    arc = V1Archive(v1_sample_root)
    again = pickle.loads(pickle.dumps(arc))
    assert list(again) == list(arc) and again[NAME].labels19 == arc[NAME].labels19


# ---------------------------------------------------------------------------------------------
# bad input: every case raises a typed error naming the file, and validate() lists it


def _fails(arc: V1Archive, name: str, path: Path, match: str) -> None:
    with pytest.raises(ArchiveError, match=match) as exc:
        arc[name]
    assert str(path) in str(exc.value)
    problems = arc.validate(name)
    assert any(p.path == str(path) and p.pair == name for p in problems), problems


def test_truncated_geotiff(v1_sample_copy: Path) -> None:
    path = v1_sample_copy / S2_EX / NAME / f"{NAME}_B04.tif"
    path.write_bytes(path.read_bytes()[:10_000])
    _fails(V1Archive(v1_sample_copy), NAME, path, "truncated")


def test_band_with_wrong_shape(v1_sample_copy: Path) -> None:
    path = v1_sample_copy / S2_EX / NAME / f"{NAME}_B8A.tif"
    tifffile.imwrite(path, np.zeros((61, 60), np.uint16))
    _fails(V1Archive(v1_sample_copy), NAME, path, "B8A is 61x60, expected 60x60")


def test_band_with_wrong_dtype(v1_sample_copy: Path) -> None:
    path = v1_sample_copy / S1_EX / S1_OF_NAME / f"{S1_OF_NAME}_VH.tif"
    tifffile.imwrite(path, np.zeros((120, 120), np.int16))
    _fails(V1Archive(v1_sample_copy), NAME, path, "dtype int16, expected float32")


def test_missing_band(v1_sample_copy: Path) -> None:
    path = v1_sample_copy / S1_EX / S1_OF_NAME / f"{S1_OF_NAME}_VV.tif"
    path.unlink()
    _fails(V1Archive(v1_sample_copy), NAME, path, "band file is missing")


def test_missing_json(v1_sample_copy: Path) -> None:
    path = v1_sample_copy / S2_EX / NAME / f"{NAME}_labels_metadata.json"
    path.unlink()
    _fails(V1Archive(v1_sample_copy), NAME, path, "metadata JSON is missing")


@pytest.mark.parametrize("text", ['{"labels": ["Pastures"', "", "[1, 2]", "\xff\xfe"])
def test_malformed_json(v1_sample_copy: Path, text: str) -> None:
    path = v1_sample_copy / S2_EX / NAME / f"{NAME}_labels_metadata.json"
    path.write_text(text, encoding="latin-1")
    _fails(V1Archive(v1_sample_copy), NAME, path, "malformed|not an object")


@pytest.mark.parametrize(("labels", "match"), [
    (["Non-irigated arable land"],
     "unknown label 'Non-irigated arable land'.*did you mean 'Non-irrigated arable land'"),
    ("Pastures", "not a list"),
    ([], "empty"),
    (["Arable land"], "unknown label 'Arable land'"),  # a 19-class name is not a v1 (43-class) label
])
def test_bad_labels(v1_sample_copy: Path, labels: object, match: str) -> None:
    folder = v1_sample_copy / S2_EX / NAME
    data = _json(folder) | {"labels": labels}
    path = _write_json(folder, data)
    _fails(V1Archive(v1_sample_copy), NAME, path, match)


def test_missing_coordinates(v1_sample_copy: Path) -> None:
    folder = v1_sample_copy / S2_EX / NAME
    data = _json(folder)
    del data["coordinates"]
    _fails(V1Archive(v1_sample_copy), NAME, _write_json(folder, data), "coordinates")


def test_s1_pointing_elsewhere(v1_sample_copy: Path) -> None:
    folder = v1_sample_copy / S1_EX / S1_OF_NAME
    path = _write_json(folder, _json(folder) | {"corresponding_s2_patch": V1_SAMPLE_S2[1]})
    arc = V1Archive(v1_sample_copy, pairing="list")
    _fails(arc, NAME, path, "corresponding_s2_patch is")
    assert arc.read(NAME, validate=False).name == NAME


def test_s1_labels_differ(v1_sample_copy: Path) -> None:
    folder = v1_sample_copy / S1_EX / S1_OF_NAME
    path = _write_json(folder, _json(folder) | {"labels": ["Pastures"]})
    _fails(V1Archive(v1_sample_copy), NAME, path, "labels differ")


def test_s1_whose_partner_is_missing(v1_sample_copy: Path) -> None:
    shutil.rmtree(v1_sample_copy / S2_EX / NAME)
    arc = V1Archive(v1_sample_copy)
    assert len(arc) == 5 and NAME not in arc
    problems = arc.archive_problems()
    assert len(problems) == 1
    assert problems[0].path == str(v1_sample_copy / S1_EX / S1_OF_NAME)
    assert f"partner {NAME}" in problems[0].reason and "missing" in problems[0].reason


def test_s2_whose_partner_is_missing(v1_sample_copy: Path) -> None:
    shutil.rmtree(v1_sample_copy / S1_EX / S1_OF_NAME)
    arc = V1Archive(v1_sample_copy)
    assert len(arc) == 6
    assert [p.reason for p in arc.archive_problems()] == ["no Sentinel-1 partner found"]
    with pytest.raises(ArchiveError, match="no Sentinel-1 partner") as exc:
        arc[NAME]
    assert NAME in str(exc.value)
    assert any("Sentinel-1 partner folder is missing" in p.reason for p in arc.validate(NAME))


def test_read_pair_with_missing_s1_folder(v1_sample_root: Path, tmp_path: Path) -> None:
    with pytest.raises(ArchiveError, match="Sentinel-1 partner folder is missing") as exc:
        read_pair(v1_sample_root / S2_EX / NAME, tmp_path / S1_OF_NAME)
    assert str(tmp_path / S1_OF_NAME) in str(exc.value)


def test_stray_folder_is_reported(v1_sample_copy: Path) -> None:
    (v1_sample_copy / S2_EX / "notes").mkdir()
    arc = V1Archive(v1_sample_copy)
    assert len(arc) == 6
    assert [(Path(p.path).name, p.reason) for p in arc.archive_problems()] == [
        ("notes", "folder is not a v1 S2 patch")]


def test_lookup_by_s1_name(v1_sample_root: Path) -> None:
    arc = V1Archive(v1_sample_root)
    assert arc.pair_name(S1_OF_NAME) == NAME
    assert arc[S1_OF_NAME].name == NAME
    assert NAME in arc and S1_OF_NAME not in arc  # membership is by pair id


def test_large_archives_pair_from_the_list(v1_sample_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from benmm.archive import v1

    monkeypatch.setattr(v1, "JSON_PAIRING_LIMIT", 3)
    arc = V1Archive(v1_sample_root)
    assert arc.pairing_counts == {"json": 0, "list": 6, "xy": 0}
    assert all(arc.validate(n) == [] for n in arc)


def test_unknown_patch_name(v1_sample_root: Path) -> None:
    arc = V1Archive(v1_sample_root)
    with pytest.raises(UnknownPatchError, match="did you mean") as exc:
        arc[NAME[:-1] + "9"]
    assert isinstance(exc.value, KeyError)
    assert NAME[:-1] + "9" not in arc


@pytest.mark.parametrize("what", ["empty", "missing", "file", "only-s2"])
def test_not_an_archive(v1_sample_root: Path, tmp_path: Path, what: str) -> None:
    path = tmp_path / "x"
    if what == "empty":
        path.mkdir()
    elif what == "file":
        path.write_text("hello")
    elif what == "only-s2":
        shutil.copytree(v1_sample_root / S2_EX, path / S2_EX)
    with pytest.raises(ArchiveError, match=re.escape("BigEarthNet-v1.0/ + BigEarthNet-S1-v1.0/")) as exc:
        open_archive(path)
    assert str(path) in str(exc.value)


def test_store_without_benmm_store_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    (tmp_path / "benmm-store.json").write_text("{}")
    monkeypatch.setitem(sys.modules, "benmm.store", None)  # as if the module were absent
    with pytest.raises(ArchiveError, match=r"needs benmm\.store"):
        open_archive(tmp_path)


def test_package_exports_are_lazy() -> None:
    import subprocess
    import sys

    code = ("import sys, benmm; heavy = [m for m in ('pandas', 'lmdb', 'tifffile', 'torch') "
            "if m in sys.modules]; assert not heavy, heavy; from benmm.archive import open_archive;"
            "assert benmm.open_archive is open_archive; assert benmm.Store.__name__ == 'Store';"
            "assert callable(benmm.encode); import benmm.ingest.pipeline; assert callable(benmm.encode)")
    subprocess.run([sys.executable, "-c", code], check=True)
