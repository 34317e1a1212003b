"""The official lists: counts, the recommended set computed from them, split names, the pair table."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from benmm import labels as L
from benmm.archive import splits as S
from benmm.errors import SplitError
from benmm.names import parse
from conftest import V1_SAMPLE_S2


def test_official_split_counts() -> None:
    counts = {name: len(S.official_split(name)) for name in S.SPLITS}
    assert counts == {"train": 269_695, "val": 123_723, "test": 125_866}
    assert sum(counts.values()) == 519_284


def test_splits_are_disjoint() -> None:
    tr, va, te = (S.official_split(s) for s in S.SPLITS)
    assert not (tr & va) and not (tr & te) and not (va & te)


def test_exclusion_counts() -> None:
    assert {k: len(v) for k, v in S.exclusion_lists().items()} == {"snow": 61_707, "cloud": 9_280, "no19": 57}


def test_pair_table() -> None:
    df = S.pairs_table()
    assert len(df) == 590_326
    assert list(df.columns[:4]) == ["s1_name", "s2_name", "country", "season"]
    assert df["s2_name"].is_unique and df["s1_name"].is_unique
    assert set(df["season"].astype(str)) == {"Spring", "Summer", "Fall", "Winter"}
    assert len(set(df["country"].astype(str))) == 10
    sample = df.sample(500, random_state=0)
    for s1, s2 in zip(sample["s1_name"], sample["s2_name"], strict=True):
        assert parse(s1).kind == "s1" and parse(s2).kind == "s2v1"
        assert parse(s1).xy == parse(s2).xy


def test_recommended_is_all_minus_exclusions() -> None:
    everything = S.all_pairs()
    assert len(everything) == 590_326
    excluded = S.exclusions("snow") | S.exclusions("cloud") | S.exclusions("no19")
    assert excluded <= everything
    rec = S.recommended()
    assert rec == everything - excluded
    assert len(rec) == 519_284
    assert rec == S.official_split("train") | S.official_split("val") | S.official_split("test")


def test_split_column_matches_lists() -> None:
    df = S.pairs_table()
    for name in S.SPLITS:
        assert set(df.loc[df["split"] == name, "s2_name"]) == S.official_split(name)
    assert df["split"].isna().sum() == 590_326 - 519_284
    for kind in S.EXCLUSION_FILES:
        assert set(df.loc[df[kind], "s2_name"]) == S.exclusions(kind)


def test_no19_patches_have_no_19_class_label_where_known(v1_sample_root: Path,
                                                         reben_sample_root: Path) -> None:
    """Where labels are known (v1 sample JSONs, reBEN sample metadata), the no-19 list agrees both ways."""
    no19 = S.exclusions("no19")
    known: dict[str, list[str]] = {}
    for name in V1_SAMPLE_S2:
        path = v1_sample_root / "BigEarthNet-S2-Example" / name / f"{name}_labels_metadata.json"
        known[name] = json.loads(path.read_text())["labels"]
    for f in ("metadata.parquet", "metadata_for_patches_with_snow_cloud_or_shadow.parquet"):
        meta = pd.read_parquet(reben_sample_root / f)
        for s2v1, labels in zip(meta["s2v1_name"], meta["labels"], strict=True):
            known.setdefault(s2v1, list(labels))
    assert len(known) == 30
    for name, labels in known.items():
        assert (name in no19) == (L.to_19(labels) == []), name
    # and the listed ones are in no official split
    assert not no19 & S.recommended()


@pytest.mark.parametrize(("given", "want"), [("train", "train"), ("val", "val"), ("validation", "val"),
                                             ("test", "test"), ("Validation", "val"), (" test ", "test")])
def test_normalize_split(given: str, want: str) -> None:
    assert S.normalize_split(given) == want
    assert S.official_split(given) is S.official_split(want)


@pytest.mark.parametrize("bad", ["valid", "training-set", "", "dev"])
def test_unknown_split(bad: str) -> None:
    with pytest.raises(SplitError, match="valid splits: train, val"):
        S.normalize_split(bad)


def test_unknown_exclusion_list() -> None:
    with pytest.raises(SplitError, match="snow, cloud, no19"):
        S.exclusions("clouds")


def test_v1_info_of_samples() -> None:
    info = S.v1_info("S2A_MSIL2A_20170613T101031_87_48")
    assert info is not None
    assert info.s1_name == "S1A_IW_GRDH_1SDV_20170613T165043_33UUP_87_48"
    assert (info.country, info.season, info.split) == ("Austria", "Summer", "test")
    assert S.v1_info("S2A_MSIL2A_20990101T000000_1_1") is None
    df = S.pairs_table().set_index("s2_name")
    for name in list(df.sample(300, random_state=1).index) + list(V1_SAMPLE_S2):
        got = S.v1_info(name)
        assert got is not None
        row = df.loc[name]
        assert (got.s1_name, got.country, got.season) == (row["s1_name"], row["country"], row["season"])
        assert got.split == (None if pd.isna(row["split"]) else row["split"])
        assert (got.snow, got.cloud, got.no19) == (row["snow"], row["cloud"], row["no19"])


def test_s1_partners() -> None:
    got = S.s1_partners(["S2A_MSIL2A_20170613T101031_87_48", "not-a-name"])
    assert got == {"S2A_MSIL2A_20170613T101031_87_48": "S1A_IW_GRDH_1SDV_20170613T165043_33UUP_87_48"}


def test_disk_cache_round_trip(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    table = S._pairs()
    builds: list[int] = []
    monkeypatch.setattr(S, "_build_pairs", lambda: builds.append(1) or table)
    monkeypatch.setenv("BENMM_CACHE_DIR", str(tmp_path / "cache"))
    assert S.load_pairs().equals(table)  # builds and writes the cache
    files = list((tmp_path / "cache").glob("v1-pairs-*.arrow"))
    assert len(files) == 1 and len(builds) == 1
    assert S.load_pairs().equals(table)  # read back, no build
    assert len(builds) == 1
    files[0].write_bytes(b"damaged")  # a damaged cache is rebuilt, not trusted
    assert S.load_pairs().equals(table)
    assert len(builds) == 2
    monkeypatch.setenv("BENMM_CACHE_DIR", "off")
    from benmm.cache import cache_dir

    assert cache_dir() is None
    S.load_pairs()
    assert len(builds) == 3


def test_fresh_parse_equals_the_table_in_use() -> None:
    assert S._build_pairs().equals(S._pairs())


def test_reben_splits(reben_sample_root: Path) -> None:
    meta = pd.read_parquet(reben_sample_root / "metadata.parquet")
    got = S.reben_splits(meta)
    assert set(got) == {"train", "val", "test"}
    assert {k: len(v) for k, v in got.items()} == {"train": 6, "val": 6, "test": 6}
    assert got["val"] == set(meta.loc[meta["split"] == "validation", "patch_id"])
    with pytest.raises(SplitError, match="no 'fold' column"):
        S.reben_splits(meta, column="fold")
    bad = meta.assign(split="holdout")
    with pytest.raises(SplitError, match="holdout"):
        S.reben_splits(bad)
