"""Selecting by place: BigEarthNetDataset(countries=..., bbox=...) and `benmm info STORE`'s extent per
country, on the real example pairs (Austria 1, Finland 2, Ireland 2, Portugal 1)."""

from __future__ import annotations

import json
from pathlib import Path

import geopandas as gpd
import pytest
from shapely.geometry import box
from typer.testing import CliRunner

from benmm.cli.app import app
from benmm.data import BigEarthNetDataset, DatasetError
from benmm.ingest import encode
from benmm.store import Store

IRELAND = (-10.7, 51.4, -5.9, 55.4)


def _ds(store: Store, **kw: object) -> BigEarthNetDataset:
    return BigEarthNetDataset(store, split=None, recommended=False, **kw)  # type: ignore[arg-type]


def test_bbox_selects_the_pairs_whose_footprint_meets_it(v1_sample_store: Store) -> None:
    gdf = gpd.read_parquet(v1_sample_store.path / "metadata.parquet")
    irish = sorted(gdf.loc[gdf["country"] == "Ireland", "patch_id"])
    assert len(irish) == 2
    assert sorted(_ds(v1_sample_store, bbox=IRELAND).names) == irish
    assert sorted(_ds(v1_sample_store, countries="Ireland").names) == irish
    # a box inside one patch and a box touching only another patch's corner select that patch alone
    one = gdf.iloc[0]
    lon0, lat0, lon1, lat1 = one.geometry.bounds
    inner = ((lon0 + lon1) / 2, (lat0 + lat1) / 2, (lon0 + lon1) / 2 + 1e-4, (lat0 + lat1) / 2 + 1e-4)
    assert _ds(v1_sample_store, bbox=inner).names == [one["patch_id"]]
    # every box agrees with shapely's intersection test over the GeoDataFrame
    for q in (IRELAND, (13.0, 48.0, 31.0, 63.0), (-9.0, 39.0, -8.21, 39.36)):
        expect = sorted(gdf.loc[gdf.geometry.intersects(box(*q)), "patch_id"])
        got = sorted(_ds(v1_sample_store, bbox=q).names) if expect else []
        assert got == expect, q
    both = _ds(v1_sample_store, countries=["Finland", "Austria"], bbox=(13.0, 40.0, 31.0, 63.0))
    assert sorted(gdf.loc[gdf["patch_id"].isin(both.names), "country"]) == ["Austria", "Finland", "Finland"]


def test_place_errors(v1_sample_store: Store, reben_sample_root: Path, tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=r"valid countrys: Austria, Belgium, .*Switzerland"):
        _ds(v1_sample_store, countries="France")
    with pytest.raises(DatasetError, match=r"no pair of the store lies in countries=\['Ireland'\] and "
                                           r"bbox=.*Austria \(13\.71"):
        _ds(v1_sample_store, countries="Ireland", bbox=(20.0, 60.0, 31.0, 63.0))
    with pytest.raises(DatasetError, match="no pair of the store lies in bbox"):
        _ds(v1_sample_store, bbox=(0.0, 0.0, 1.0, 1.0))
    for bad in ((1, 2, 3), (10, 50, 5, 55), (0, 0, 1, float("nan")), ("a", 0, 1, 1), (0, -91, 1, 1)):
        with pytest.raises(DatasetError, match="bbox="):
            _ds(v1_sample_store, bbox=bad)  # type: ignore[arg-type]
    reben = encode(reben_sample_root, tmp_path / "r.store", workers=1, progress=False)
    with pytest.raises(DatasetError, match=r"no footprints.*no georeference.*use countries="):
        _ds(reben, bbox=IRELAND)
    assert len(_ds(reben, countries="Austria")) == int((reben.metadata["country"] == "Austria").sum()) > 0


def test_info_prints_the_extent_per_country(v1_sample_store: Store, reben_sample_root: Path) -> None:
    runner = CliRunner()
    res = runner.invoke(app, ["info", str(v1_sample_store.path), "--json", "--check", "0"])
    assert res.exit_code == 0, res.output
    extent = json.loads(res.output)["extent"]
    gdf = gpd.read_parquet(v1_sample_store.path / "metadata.parquet")
    for country, group in gdf.groupby("country"):
        assert extent[country] == pytest.approx(list(group.geometry.total_bounds))
    res = runner.invoke(app, ["info", str(v1_sample_store.path), "--check", "0"])
    assert res.exit_code == 0, res.output
    assert "extent (WGS84 degrees)" in res.output
    ireland = extent["Ireland"]
    line = [x for x in res.output.splitlines() if "Ireland" in x][-1]  # the extent table comes last
    assert all(f"{v:.4f}" in line for v in ireland), line
    res = runner.invoke(app, ["info", str(reben_sample_root), "--check", "0"])
    assert res.exit_code == 0, res.output
    assert "extent: unknown (no footprints" in res.output


def test_bbox_reaches_the_datamodule_and_the_recipe(v1_sample_store: Store) -> None:
    from benmm.data import BigEarthNetDataModule
    from benmm.train.recipes.schema import RecipeError, validate

    dm = BigEarthNetDataModule(v1_sample_store, bbox=IRELAND, recommended=False)
    assert sorted(dm.dataset(None).names) == sorted(_ds(v1_sample_store, bbox=IRELAND).names)
    recipe = validate({"model": {}, "data": {"bbox": list(IRELAND)}})
    assert recipe["data"]["bbox"] == list(IRELAND)
    with pytest.raises(RecipeError, match=r"data\.bbox"):
        validate({"model": {}, "data": {"bbox": [1, 2, 3]}})
