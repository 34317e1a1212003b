"""Footprints: the real example pairs' GeoParquet footprints against corners computed independently
(rasterio reading each GeoTIFF's own georeference, pyproj to EPSG:4326 in its lat/lon axis order), the
hand-built WKB against shapely, the content hash across re-encodes, and the reBEN LMDB (no footprint)."""

from __future__ import annotations

import json
from pathlib import Path

import geopandas as gpd
import numpy as np
import pyarrow.parquet as pq
import pytest
import rasterio
import shapely
from pyproj import Transformer

from benmm.archive.footprint import from_geotiff, from_v1_json, lonlat_rings
from benmm.errors import ArchiveError
from benmm.ingest import encode
from benmm.store import Store
from benmm.store.geoparquet import polygon_wkb, wkb_bounds
from conftest import V1_SAMPLE_S2

_S2_DIR = "BigEarthNet-S2-Example"


def _tif(root: Path, name: str, band: str = "B02") -> Path:
    return root / _S2_DIR / name / f"{name}_{band}.tif"


def test_real_pairs_footprints_match_the_geotiffs_own_georeference(v1_sample_store: Store,
                                                                   v1_sample_root: Path) -> None:
    gdf = gpd.read_parquet(v1_sample_store.path / "metadata.parquet")
    assert isinstance(gdf, gpd.GeoDataFrame) and gdf.geometry.name == "geometry"
    assert gdf.crs is not None and gdf.crs.equals("OGC:CRS84")
    assert sorted(gdf["patch_id"]) == sorted(V1_SAMPLE_S2)
    for name, geom in zip(gdf["patch_id"], gdf.geometry, strict=True):
        with rasterio.open(_tif(v1_sample_root, name)) as ds:  # independent of the JSON and its WKT
            b, epsg = ds.bounds, ds.crs.to_epsg()
        assert epsg is not None and 32601 <= epsg <= 32660  # a UTM north zone from the GeoTIFF's keys
        # EPSG:4326 without always_xy: pyproj returns (lat, lon); swapped back here on purpose
        to_latlon = Transformer.from_crs(f"EPSG:{epsg}", "EPSG:4326")
        corners = [(b.left, b.bottom), (b.right, b.bottom), (b.right, b.top), (b.left, b.top)]
        expect = np.array([to_latlon.transform(x, y)[::-1] for x, y in corners])
        got = np.asarray(geom.exterior.coords)[:4]
        np.testing.assert_allclose(got, expect, atol=1e-9)
        assert geom.exterior.is_ccw and geom.is_valid
        km2 = geom.area * 111.32**2 * np.cos(np.radians(geom.centroid.y))
        assert 1.35 < km2 < 1.53, km2  # 1.2 km x 1.2 km = 1.44 km2
    countries = dict(zip(gdf["patch_id"], gdf["country"], strict=True))
    for name, (lon0, lat0, lon1, lat1) in zip(gdf["patch_id"], gdf.geometry.bounds.to_numpy(), strict=True):
        box = {"Austria": (9.5, 46.3, 17.2, 49.1), "Ireland": (-10.7, 51.4, -5.9, 55.4),
               "Portugal": (-9.6, 36.9, -6.1, 42.2), "Finland": (20.5, 59.7, 31.6, 70.1)}[countries[name]]
        assert box[0] < lon0 < lon1 < box[2] and box[1] < lat0 < lat1 < box[3], (name, countries[name])


def test_geo_metadata_and_wkb(v1_sample_store: Store) -> None:
    path = v1_sample_store.path / "metadata.parquet"
    geo = json.loads(pq.read_schema(path).metadata[b"geo"])
    assert geo["version"] == "1.1.0" and geo["primary_column"] == "geometry"
    col = geo["columns"]["geometry"]
    assert col["encoding"] == "WKB" and col["geometry_types"] == ["Polygon"]
    assert col["crs"]["id"] == {"authority": "OGC", "code": "CRS84"}
    table = pq.read_table(path).to_pylist()
    geoms = shapely.from_wkb([r["geometry"] for r in table])
    union = shapely.bounds(shapely.union_all(geoms))
    np.testing.assert_allclose(col["bbox"], union)
    np.testing.assert_allclose(wkb_bounds([r["geometry"] for r in table]), shapely.bounds(geoms))
    ring = np.array([[1.0, 2.0], [3.0, 2.0], [3.0, 4.0], [1.0, 4.0], [1.0, 2.0]])
    assert shapely.from_wkb(polygon_wkb(ring)).equals(shapely.Polygon(ring))
    assert polygon_wkb(ring) == shapely.to_wkb(shapely.Polygon(ring), byte_order=1)
    big_endian = shapely.to_wkb(shapely.Polygon(ring), byte_order=0)  # read by the generic path
    np.testing.assert_allclose(wkb_bounds([big_endian, None])[0], [1, 2, 3, 4])
    assert np.isnan(wkb_bounds([None])).all()
    for row in table:  # the hashed source footprint: the JSON's corners, in the GeoTIFF's zone
        assert row["footprint_crs"].startswith("EPSG:326") and len(row["footprint_bounds"]) == 4


def test_json_footprint_equals_the_geotiff_footprint(v1_sample_root: Path) -> None:
    for name in V1_SAMPLE_S2:
        meta = json.loads((v1_sample_root / _S2_DIR / name / f"{name}_labels_metadata.json").read_text())
        from_json = from_v1_json(meta["coordinates"], meta["projection"], name)
        assert from_json is not None
        for band in ("B02", "B05", "B01"):  # 10, 20 and 60 m grids cover the same rectangle
            assert from_geotiff(str(_tif(v1_sample_root, name, band))) == from_json
    # S1's misspelled lower-right key, and corners that do not form a rectangle
    fp = from_v1_json({"ulx": 0, "uly": 10, "lrx": 5, "lly": 4}, "EPSG:32633", "x")
    assert fp == ("EPSG:32633", (0.0, 4.0, 5.0, 10.0))
    with pytest.raises(ArchiveError, match="do not form a rectangle"):
        from_v1_json({"ulx": 5, "uly": 10, "lrx": 0, "lry": 4}, "EPSG:32633", "x.json")
    assert from_v1_json(None, "EPSG:32633", "x") is None
    with pytest.raises(ArchiveError, match=r"^x: projection .* is not a CRS pyproj knows"):
        from_v1_json({"ulx": 0, "uly": 10, "lrx": 5, "lry": 4}, "PROJCS[nonsense", "x")
    assert lonlat_rings([None]) == [None]


def test_footprints_join_the_hash_and_survive_a_re_encode(v1_sample_store: Store, tmp_path: Path) -> None:
    again = encode(v1_sample_store.path, tmp_path / "again.store", workers=1, progress=False)
    assert again.content_hash == v1_sample_store.content_hash == again.verify()
    a = pq.read_table(again.path / "metadata.parquet")
    b = pq.read_table(v1_sample_store.path / "metadata.parquet")
    assert a.column("geometry").to_pylist() == b.column("geometry").to_pylist()
    manifest = v1_sample_store.manifest or {}
    assert manifest["footprints"]["pairs"] == len(v1_sample_store) == 6
    assert "JSON" in manifest["footprints"]["from"]
    # the footprint is content: changing one row's footprint changes the hash
    from benmm.store.layout import ContentHasher

    rows = b.to_pylist()
    before = ContentHasher().hexdigest(rows)
    rows[0]["footprint_bounds"] = [v + 1 for v in rows[0]["footprint_bounds"]]
    assert ContentHasher().hexdigest(rows) != before


def test_reben_lmdb_store_has_no_footprint_and_says_why(reben_sample_root: Path, tmp_path: Path) -> None:
    store = encode(reben_sample_root, tmp_path / "r.store", workers=1, progress=False)
    names = pq.read_schema(store.path / "metadata.parquet").names
    assert "geometry" not in names and "footprint_crs" not in names
    fp = (store.manifest or {})["footprints"]
    assert fp["pairs"] == 0 and "no georeference" in fp["why_none"]


def test_synthetic_archive_footprints_follow_its_tiles(synthetic) -> None:  # type: ignore[no-untyped-def]
    store = synthetic.store(pairs=20, seed=0)
    gdf = gpd.read_parquet(store.path / "metadata.parquet")
    assert len(gdf) == len(store) and gdf.geometry.notna().all()
    b = gdf.geometry.bounds  # within the archive's ten countries
    assert ((b.minx > -11) & (b.maxx < 32) & (b.miny > 36) & (b.maxy < 71)).all()


def test_reben_geotiff_release_footprints_come_from_the_geotiffs(reben_sample_root: Path,
                                                                 tmp_path: Path) -> None:
    """The GeoTIFF release: each S2 B02 file's own georeference (written here with rasterio) becomes the
    pair's footprint; the LMDB of the same patches has none, so their hashes differ by exactly that."""
    from affine import Affine

    from benmm.archive.v2 import V2Archive, s2_tiff_dir
    from benmm.names import parse
    from test_archive_v2 import _write_tiff_layout

    tif = tmp_path / "reben-tif"
    _write_tiff_layout(reben_sample_root, tif)
    arc = V2Archive(tif)
    want = {}
    for k, name in enumerate(arc):
        path = s2_tiff_dir(tif, name) / f"{name}_B02.tif"
        band = arc.read_key(name, ("B02",))["B02"]
        p = parse(name)
        west, north = 300000.0 + 1200 * p.x, 5400000.0 - 1200 * p.y  # 33UUP's upper-left corner
        epsg = 32633 if k % 2 else 32632  # two zones in one archive: each row keeps its own
        with rasterio.open(path, "w", driver="GTiff", width=120, height=120, count=1, dtype=band.dtype,
                           crs=f"EPSG:{epsg}", transform=Affine(10, 0, west, 0, -10, north)) as ds:
            ds.write(band, 1)
        want[name] = (f"EPSG:{epsg}", (west, north - 1200, west + 1200, north))
    store = encode(tif, tmp_path / "tif.store", workers=1, progress=False)
    assert (store.manifest or {})["footprints"]["pairs"] == len(want)
    rows = {r["patch_id"]: r for r in pq.read_table(store.path / "metadata.parquet").to_pylist()}
    for name, (crs, box) in want.items():
        assert (rows[name]["footprint_crs"], tuple(rows[name]["footprint_bounds"])) == (crs, box)
        lon, lat = Transformer.from_crs(crs, "EPSG:4326").transform(box[0], box[1])[::-1]
        assert shapely.from_wkb(rows[name]["geometry"]).exterior.coords[0] == pytest.approx((lon, lat))
    plain = encode(reben_sample_root, tmp_path / "lmdb.store", workers=1, progress=False)
    assert plain.content_hash != store.content_hash == store.verify()
