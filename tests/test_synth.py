"""The synthetic archive: real on-disk format (checked against the real example files), realistic labels,
a learnable signal in both modalities, determinism, bad input, atomic writes."""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import tifffile
from typer.testing import CliRunner

from benmm.bands import BAND_RESOLUTION, BAND_SIZE, S1_BANDS, S2_BANDS
from benmm.cli.app import app
from benmm.labels import LABELS_19, LABELS_43, to_19
from benmm.names import parse
from benmm.synth import archive as synth
from benmm.synth.geotiff import geotiff_bytes
from benmm.synth.labels import sample_labels
from benmm.synth.metadata import geo

if TYPE_CHECKING:
    from conftest import Synthetic

S2_EXAMPLE, S1_EXAMPLE = "BigEarthNet-S2-Example", "BigEarthNet-S1-Example"


def _real_files(root: Path) -> list[Path]:
    return sorted(root.glob("*/*/*.tif"))


def _structure(path: Path) -> dict[str, object]:
    """Everything about a GeoTIFF's layout except pixel values and the georeference numbers."""
    with tifffile.TiffFile(path) as tif:
        assert len(tif.pages) == 1 and tif.byteorder == "<" and not tif.is_bigtiff
        page = tif.pages[0]
        tags = [(t.code, t.dtype, t.count, t.valueoffset) for t in page.tags.values()]
        keys = list(page.tags[34735].value)
        keys[keys.index(3072) + 3] = 0  # ProjectedCSType: the EPSG code depends on the zone
        return {"offset": page.offset, "tags": tags, "geokeys": keys, "dtype": page.dtype.str,
                "shape": page.shape,
                "strips": (page.tags[273].value, page.tags[279].value, page.rowsperstrip),
                "size": path.stat().st_size}


def _band(path: Path) -> str:
    return path.stem.rsplit("_", 1)[1]


# ---- format ---------------------------------------------------------------------------------------

def test_tiff_writer_reproduces_every_real_file_byte_for_byte(v1_sample_root: Path) -> None:
    files = _real_files(v1_sample_root)
    assert len(files) == 6 * 14
    for path in files:
        with tifffile.TiffFile(path) as tif:
            page = tif.pages[0]
            geo_tags = page.geotiff_tags
            zone = int(geo_tags["ProjectedCSTypeGeoKey"]) - 32600
            tie, scale = geo_tags["ModelTiepoint"], geo_tags["ModelPixelScale"]
            data = geotiff_bytes(page.asarray(), tie[3], tie[4], scale[0], zone)
        assert data == path.read_bytes(), path.name


def test_synthetic_tiffs_have_the_real_structure(v1_sample_root: Path, synth_v1_root: Path) -> None:
    real = {}
    for path in _real_files(v1_sample_root):
        real.setdefault(_band(path), _structure(path))
    files = sorted(synth_v1_root.glob("*/*/*.tif"))
    assert len(files) == 14 * 60
    seen = Counter()
    for path in files:
        band = _band(path)
        assert _structure(path) == real[band], path.name
        seen[band] += 1
    assert set(seen) == set(S2_BANDS + S1_BANDS)


def test_synthetic_geotiffs_georeference_matches_json(synth_v1_root: Path) -> None:
    import rasterio
    s1_dirs = sorted((synth_v1_root / synth.S1_ROOT).iterdir())[:6]
    for s1_dir in s1_dirs:
        meta1 = json.loads((s1_dir / f"{s1_dir.name}_labels_metadata.json").read_text())
        s2 = meta1["corresponding_s2_patch"]
        s2_dir = synth_v1_root / synth.S2_ROOT / s2
        meta2 = json.loads((s2_dir / f"{s2}_labels_metadata.json").read_text())
        c = meta2["coordinates"]
        assert meta1["coordinates"] == {"ulx": c["ulx"], "uly": c["uly"], "lrx": c["lrx"], "lly": c["lry"]}
        zone = int(re.search(r"UTM zone (\d+)N", meta2["projection"]).group(1))  # type: ignore[union-attr]
        assert zone == int(parse(s1_dir.name).tile[:2])  # type: ignore[index]
        for band in ("B02", "B05", "B09"):
            with rasterio.open(s2_dir / f"{s2}_{band}.tif") as ds:
                res = BAND_RESOLUTION[band]
                assert ds.crs.to_epsg() == 32600 + zone
                assert tuple(ds.transform)[:6] == (res, 0, c["ulx"], 0, -res, c["uly"])
                assert ds.bounds == (c["ulx"], c["lry"], c["lrx"], c["uly"])
                assert ds.read(1).shape == (BAND_SIZE[band],) * 2
        with rasterio.open(s1_dir / f"{s1_dir.name}_VV.tif") as ds:
            assert ds.dtypes == ("float32",) and ds.crs.to_epsg() == 32600 + zone
            vv = tifffile.imread(s1_dir / f"{s1_dir.name}_VV.tif")
            assert np.array_equal(ds.read(1), vv)


def test_json_metadata_has_the_real_keys_and_pairing(v1_sample_root: Path, synth_v1_root: Path) -> None:
    real_s2 = json.loads(next((v1_sample_root / S2_EXAMPLE).glob("*/*.json")).read_text())
    real_s1 = json.loads(next((v1_sample_root / S1_EXAMPLE).glob("*/*.json")).read_text())
    s2_names = {p.name for p in (synth_v1_root / synth.S2_ROOT).iterdir()}
    for s1_dir in (synth_v1_root / synth.S1_ROOT).iterdir():
        raw = (s1_dir / f"{s1_dir.name}_labels_metadata.json").read_text()
        m1 = json.loads(raw)
        assert raw == json.dumps(m1)  # serialised exactly like the real files
        assert list(m1) == list(real_s1) and list(m1["coordinates"]) == list(real_s1["coordinates"])
        s2 = m1["corresponding_s2_patch"]
        assert s2 in s2_names and parse(s2).xy == parse(s1_dir.name).xy
        m2 = json.loads((synth_v1_root / synth.S2_ROOT / s2 / f"{s2}_labels_metadata.json").read_text())
        assert list(m2) == list(real_s2) and list(m2["coordinates"]) == list(real_s2["coordinates"])
        assert m1["labels"] == m2["labels"] and set(m2["labels"]) <= set(LABELS_43)
        assert m2["tile_source"].startswith(s2.rsplit("_", 2)[0].replace("MSIL2A", "MSIL1C"))
        assert f"_T{parse(s1_dir.name).tile}_" in m2["tile_source"]
        assert m1["scene_source"].startswith(s1_dir.name.rsplit("_", 3)[0])


def test_patch_corners_follow_the_real_tiling(v1_sample_root: Path) -> None:
    for s1_dir in (v1_sample_root / S1_EXAMPLE).iterdir():
        meta = json.loads((s1_dir / f"{s1_dir.name}_labels_metadata.json").read_text())
        g = geo(s1_dir.name, meta["corresponding_s2_patch"])
        c = meta["coordinates"]
        assert (g["ulx"], g["uly"], g["lrx"], g["lry"]) == (c["ulx"], c["uly"], c["lrx"], c["lly"])


def test_v1_reader_finds_no_problem(synth_v1_root: Path) -> None:
    from benmm.archive import open_archive

    arc = open_archive(synth_v1_root)
    names = list(arc)
    assert len(names) == 60
    assert list(arc.archive_problems()) == []
    for name in names:
        assert arc.validate(name) == [], name
    pair = arc[names[0]]
    assert pair.split in {"train", "val", "test", None}
    shapes = {b: (BAND_SIZE[b],) * 2 for b in S2_BANDS + S1_BANDS}
    assert {b: a.shape for b, a in pair.bands.items()} == shapes
    splits = Counter(arc[n].split for n in names)
    assert splits["train"] > splits["val"] > 0 and splits["test"] > 0


def test_reben_layout_matches_the_published_sample(reben_sample_root: Path, synthetic: Synthetic) -> None:
    import lmdb
    from safetensors.numpy import load

    root = synthetic.archive(pairs=40, seed=3, layout="reben")  # shared with test_dataset: read only
    assert sorted(p.name for p in root.iterdir()) == sorted(p.name for p in reben_sample_root.iterdir())
    assert sorted(p.name for p in (root / synth.LMDB_DIR).iterdir()) == ["data.mdb"]
    frames = []
    for name in (synth.METADATA, synth.METADATA_FLAGGED):
        ours, theirs = pq.read_schema(root / name), pq.read_schema(reben_sample_root / name)
        assert ours.names == theirs.names and ours.types == theirs.types
        meta = json.loads(ours.metadata[b"pandas"])
        assert meta["index_columns"] == json.loads(theirs.metadata[b"pandas"])["index_columns"]
        df = pd.read_parquet(root / name)
        assert df.index.dtype == np.int64
        frames.append(df)
    clean, flagged = frames
    assert len(clean) + len(flagged) == 40 and len(flagged) > 0
    assert not (clean.contains_seasonal_snow | clean.contains_cloud_or_shadow).any()
    assert (flagged.contains_seasonal_snow | flagged.contains_cloud_or_shadow).all()
    both = pd.concat(frames)
    assert set(both.split) <= {"train", "validation", "test"}
    for row in both.itertuples():
        assert list(row.labels) == sorted(row.labels) and len(row.labels)
        assert set(row.labels) <= set(LABELS_19)
        p2, p1 = parse(row.patch_id), parse(row.s1_name)
        assert p2.kind == "s2v2" and p2.tile == p1.tile and p2.xy == p1.xy == parse(row.s2v1_name).xy
    def header(raw: bytes) -> bytes:  # safetensors: u64 length + JSON (names, dtypes, shapes, offsets)
        return raw[8:8 + int.from_bytes(raw[:8], "little")]

    from benmm.store.lmdbenv import close_env, shared_env  # py-lmdb: one handle per file and process

    sample_env = shared_env(reben_sample_root / synth.LMDB_DIR)
    with sample_env.begin() as txn:
        sample = {k[:2]: header(v) for k, v in txn.cursor()}
    close_env(root / synth.LMDB_DIR)  # the shared archive may be open as a store in this process
    env = lmdb.open(str(root / synth.LMDB_DIR), readonly=True, lock=False)
    with env.begin() as txn:
        assert txn.stat()["entries"] == 80
        for row in both.itertuples():
            for key in (row.patch_id, row.s1_name):
                raw = txn.get(key.encode())
                assert header(raw) == sample[key[:2].encode()]  # same band order, dtypes, shapes, offsets
                value = load(raw)
                assert {b: (a.dtype, a.shape) for b, a in value.items()} == {
                    b: (np.dtype(np.float32 if b in S1_BANDS else np.uint16), (BAND_SIZE[b],) * 2)
                    for b in (S1_BANDS if key.startswith("S1") else S2_BANDS)}
    env.close()
    from benmm.archive import open_archive

    arc = open_archive(root)
    assert len(arc) == 40 and all(arc.validate(n) == [] for n in arc)


# ---- labels and signal ----------------------------------------------------------------------------

def test_label_distribution_is_realistic() -> None:
    specs = synth.pair_specs(4000, seed=11)
    labels = [sample_labels(np.random.default_rng([11, s.index]), s.country, s.no19) for s in specs]
    counts = Counter(name for lab in labels for name in lab)
    per_patch = np.mean([len(lab) for lab in labels])
    assert 2.0 <= per_patch <= 4.0
    assert {n for lab in labels for n in to_19(lab)} == set(LABELS_19)
    top = {name for name, _ in counts.most_common(8)}
    assert {"Coniferous forest", "Mixed forest", "Non-irrigated arable land", "Pastures"} <= top
    assert min(counts.values()) < 0.005 * len(specs)  # rare classes exist
    for spec, lab in zip(specs, labels, strict=True):
        assert bool(to_19(lab)) != spec.no19
    assert sum(s.no19 for s in specs) >= 1 and sum(s.snow for s in specs) > 100
    finland = [lab for s, lab in zip(specs, labels, strict=True) if s.country == "Finland"]
    portugal = [lab for s, lab in zip(specs, labels, strict=True) if s.country == "Portugal"]
    assert np.mean(["Coniferous forest" in lab for lab in finland]) > 0.5
    assert np.mean(["Sclerophyllous vegetation" in lab for lab in portugal]) > 0.15
    assert np.mean(["Sclerophyllous vegetation" in lab for lab in finland]) == 0


def test_pixels_follow_the_class_map() -> None:
    pair = synth.render(synth.pair_specs(30, seed=2)[7], seed=2)
    assert {LABELS_43[i] for i in np.unique(pair.class_map)} == set(pair.labels43)
    s2 = pair.bands
    assert all(s2[b].dtype == np.uint16 and s2[b].shape == (BAND_SIZE[b],) * 2 for b in S2_BANDS)
    assert 100 < float(np.mean([s2[b].mean() for b in S2_BANDS])) < 10_000
    for b in S1_BANDS:
        assert s2[b].dtype == np.float32 and -45 < float(s2[b].mean()) < 5


def test_snow_and_cloud_patches_look_like_it() -> None:
    from dataclasses import replace

    spec = next(s for s in synth.pair_specs(40, seed=9) if not s.snow and not s.cloud)
    clear = synth.render(spec, seed=9).bands
    snowy = synth.render(replace(spec, snow=True), seed=9).bands
    cloudy = synth.render(replace(spec, cloud=True), seed=9).bands
    def gain(bands: dict[str, np.ndarray], band: str) -> float:
        return float(bands[band].mean()) - float(clear[band].mean())

    assert gain(snowy, "B03") > 500 and gain(cloudy, "B03") > 500  # bright in the visible
    assert gain(snowy, "B11") < 0.2 * gain(snowy, "B03")  # snow is dark in the SWIR ...
    assert gain(cloudy, "B11") > 0.3 * gain(cloudy, "B03")  # ... clouds are not


def test_pairs_keep_their_official_identity(synth_v1_root: Path) -> None:
    from benmm.archive import open_archive
    from benmm.archive.splits import official_split, pairs_table

    specs = synth.pair_specs(60, seed=0)
    table = pairs_table().set_index("s2_name")
    arc = open_archive(synth_v1_root)
    assert sorted(arc) == sorted(s.s2_name for s in specs)
    for spec in specs:
        row = table.loc[spec.s2_name]
        assert (row.s1_name, row.country, row.season) == (spec.s1_name, spec.country, spec.season)
        split = next((n for n in ("train", "val", "test") if spec.s2_name in official_split(n)), "")
        assert split == spec.split
        assert (arc[spec.s2_name].split or "") == spec.split


def _features(pairs: list[synth.SynthPair], band: str) -> np.ndarray:
    """Per-patch statistics of one band: mean, std, 10/50/90th percentiles (S2 in log DN)."""
    x = np.stack([p.bands[band] for p in pairs]).astype(np.float32)
    x = np.log1p(x) if band in S2_BANDS else x
    return np.stack([x.mean((1, 2)), x.std((1, 2)), *np.percentile(x, (10, 50, 90), axis=(1, 2))], axis=1)


def test_band_levels_match_the_official_v1_stats() -> None:
    """Models normalise with the v1 stats and then predict real patches: every synthetic band must sit
    where the real archive does (a 3x too dark B09 once made every real example look the same).
    The v1 stats describe the recommended patches (no snow / cloud), so those are compared."""
    from benmm.bands import stats_v1

    v1 = stats_v1()
    specs = [s for s in synth.pair_specs(150, seed=3) if s.split]
    pairs = [synth.render(s, seed=3).bands for s in specs]
    assert len(pairs) > 100
    for band in S2_BANDS + S1_BANDS:
        x = np.concatenate([p[band].ravel() for p in pairs]).astype(np.float64)
        mean, std = v1.mean[band], v1.std[band]
        if band in S2_BANDS:  # reflectance in DN: relative error
            assert abs(x.mean() / mean - 1) < 0.3, (band, x.mean(), mean)
        else:  # backscatter in dB: within half a v1 standard deviation
            assert abs(x.mean() - mean) < 0.5 * std, (band, x.mean(), mean)
        assert 0.35 < x.std() / std < 1.5, (band, x.std(), std)
    # B09 follows B8A as in the real L2A patches (v1 means 2246 vs 2266)
    b09 = np.mean([p["B09"].mean() for p in pairs])
    b8a = np.mean([p["B8A"].mean() for p in pairs])
    assert 0.9 < b09 / b8a < 1.05


@pytest.mark.slow  # ~5 s on an idle core, 15 s on the shared VM
def test_signal_is_learnable_and_both_modalities_help() -> None:
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import average_precision_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    specs = synth.pair_specs(360, seed=5)
    pairs = [synth.render(s, seed=5) for s in specs]
    y = np.stack([[name in to_19(p.labels43) for name in LABELS_19] for p in pairs]).astype(int)
    train, test = np.arange(len(pairs)) % 3 != 0, np.arange(len(pairs)) % 3 == 0
    classes = [c for c in range(19) if y[train, c].sum() >= 3 and 0 < y[test, c].sum() < test.sum()]
    assert len(classes) >= 10

    feats = {b: _features(pairs, b) for b in S2_BANDS + S1_BANDS}

    def macro_ap(bands: tuple[str, ...] | None) -> float:
        x = np.concatenate([feats[b] for b in bands], axis=1) if bands else None
        aps = []
        for c in classes:
            if x is None:  # label-frequency baseline: one constant score
                score = np.full(test.sum(), y[train, c].mean())
            else:
                model = make_pipeline(StandardScaler(), LogisticRegression(C=0.5, solver="liblinear"))
                score = model.fit(x[train], y[train, c]).predict_proba(x[test])[:, 1]
            aps.append(average_precision_score(y[test, c], score))
        return float(np.mean(aps))

    base, s1, s2, both = macro_ap(None), macro_ap(S1_BANDS), macro_ap(S2_BANDS), macro_ap(S2_BANDS + S1_BANDS)
    print(f"macro AP: frequency {base:.3f}  S1 {s1:.3f}  S2 {s2:.3f}  S1+S2 {both:.3f}")
    assert s1 > base + 0.1
    assert s2 > s1 + 0.05
    assert both > s2 + 0.03


# ---- determinism, bad input, atomicity ------------------------------------------------------------

def _hashes(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("layout", ["v1", "reben"])
def test_same_seed_same_bytes(make_synth, layout: str) -> None:  # type: ignore[no-untyped-def]
    a = _hashes(make_synth(pairs=12, seed=7, layout=layout, name="a"))
    b = _hashes(make_synth(pairs=12, seed=7, layout=layout, name="b"))
    c = _hashes(make_synth(pairs=12, seed=8, layout=layout, name="c"))
    assert a == b and len(a) == (12 * 16 if layout == "v1" else 3)
    assert a != c


def test_workers_do_not_change_the_bytes(tmp_path: Path) -> None:
    one = synth.synthesize(tmp_path / "one", pairs=10, seed=4, workers=1)
    two = synth.synthesize(tmp_path / "two", pairs=10, seed=4, workers=2)
    assert _hashes(one.path) == _hashes(two.path) and one.bytes == two.bytes


def test_bad_input(tmp_path: Path) -> None:
    with pytest.raises(synth.SynthError, match="positive"):
        synth.synthesize(tmp_path / "x", pairs=0)
    with pytest.raises(synth.SynthError, match="layout"):
        synth.synthesize(tmp_path / "x", pairs=1, layout="v3")  # type: ignore[arg-type]
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "keep.txt").write_text("mine")
    with pytest.raises(synth.SynthError, match=r"not empty.*--overwrite"):
        synth.synthesize(busy, pairs=2, workers=1)
    assert (busy / "keep.txt").read_text() == "mine"
    with pytest.raises(synth.SynthError, match="--overwrite only replaces an archive"):
        synth.synthesize(busy, pairs=2, workers=1, overwrite=True)  # not an archive: never deleted
    assert (busy / "keep.txt").read_text() == "mine"
    file = tmp_path / "file"
    file.write_text("")
    with pytest.raises(synth.SynthError, match="not a folder"):
        synth.synthesize(file, pairs=1)
    empty = tmp_path / "empty"
    empty.mkdir()
    assert synth.synthesize(empty, pairs=1, workers=1).pairs == 1


def test_interrupted_run_leaves_no_archive(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from benmm.errors import BenmmError

    calls = {"n": 0}
    real = synth._write_v1

    def crash(root: Path, pair: synth.SynthPair) -> int:
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt
        return real(root, pair)

    monkeypatch.setattr(synth, "_write_v1", crash)
    dst = tmp_path / "arc"
    with pytest.raises(KeyboardInterrupt):
        synth.synthesize(dst, pairs=6, workers=1)
    assert not dst.exists() and not (tmp_path / "arc.partial").exists()  # a failed run cleans up
    from benmm.archive import open_archive

    with pytest.raises(BenmmError):
        open_archive(dst)
    monkeypatch.setattr(synth, "_write_v1", real)
    synth.synthesize(dst, pairs=6, workers=1)
    assert not (tmp_path / "arc.partial").exists() and len(open_archive(dst)) == 6


def test_cli(tmp_path: Path) -> None:
    runner = CliRunner()
    dst = tmp_path / "cli"
    result = runner.invoke(app, ["synth", str(dst), "--pairs", "3", "--seed", "1", "--workers", "1"])
    assert result.exit_code == 0, result.output
    assert "3 pairs" in result.output and "pairs/s" in result.output
    assert len(list((dst / synth.S2_ROOT).iterdir())) == 3
    again = runner.invoke(app, ["synth", str(dst), "--pairs", "3"])
    assert again.exit_code == 2 and "--overwrite" in again.output and "Traceback" not in again.output
    bad = runner.invoke(app, ["synth", str(tmp_path / "z"), "--pairs", "0"])
    assert bad.exit_code == 2 and "positive" in bad.output
    assert runner.invoke(app, ["synth", "--help"]).exit_code == 0
