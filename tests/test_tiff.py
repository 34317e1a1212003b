"""The fast band reader equals tifffile on every real band file, falls back for other layouts, and
names the file in every error."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile

from benmm.archive import tiff
from benmm.archive.tiff import read_band, read_band_into, read_tiff
from benmm.bands import BAND_DTYPE, BAND_SIZE
from benmm.errors import ArchiveError, BandError


def _band_files(root: Path) -> list[tuple[Path, str]]:
    files = sorted(root.glob("BigEarthNet-S*-Example/*/*.tif"))
    return [(f, f.stem.rsplit("_", 1)[1]) for f in files]


def test_every_real_band_equals_tifffile(v1_sample_root: Path) -> None:
    files = _band_files(v1_sample_root)
    assert len(files) == 6 * 14
    for path, band in files:
        ours = read_band(path, band)
        ref = tifffile.imread(path)
        assert ours.dtype == BAND_DTYPE[band] == ref.dtype, path
        assert ours.shape == (BAND_SIZE[band],) * 2 == ref.shape, path
        np.testing.assert_array_equal(ours, ref, err_msg=str(path))
        assert ours.flags.writeable


def test_real_files_take_the_fast_path(v1_sample_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(path: Path) -> np.ndarray:
        raise AssertionError(f"fallback used for {path}")

    monkeypatch.setattr(tiff, "_fallback", boom)
    for path, band in _band_files(v1_sample_root):
        read_band(path, band)


@pytest.mark.parametrize("kwargs", [
    {"compression": "zlib"},
    {"tile": (16, 16)},
    {"byteorder": ">"},
    {"bigtiff": True},
    {"rowsperstrip": 7},
])
@pytest.mark.parametrize(("band", "dtype"), [("B05", np.uint16), ("VV", np.float32)])
def test_fallback_layouts_read_like_tifffile(tmp_path: Path, kwargs: dict[str, object], band: str,
                                             dtype: type) -> None:
    side = BAND_SIZE[band]
    rng = np.random.default_rng(0)
    data = (rng.random((side, side)) * 1000).astype(dtype)
    path = tmp_path / f"x_{band}.tif"
    tifffile.imwrite(path, data, **kwargs)  # type: ignore[arg-type]
    out = read_band(path, band)
    assert out.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(out, data)


def test_fallback_reads_predictor(tmp_path: Path) -> None:
    data = np.arange(3600, dtype=np.uint16).reshape(60, 60)
    path = tmp_path / "p_B05.tif"
    tifffile.imwrite(path, data, predictor=2, compression="zlib")  # horizontal differencing
    np.testing.assert_array_equal(read_band(path, "B05"), data)


def test_fallback_is_used_for_compressed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "c_B01.tif"
    tifffile.imwrite(path, np.ones((20, 20), np.uint16), compression="zlib")
    calls = []
    real = tiff._fallback
    monkeypatch.setattr(tiff, "_fallback", lambda p: calls.append(p) or real(p))
    read_band(path, "B01")
    assert calls == [path]


def _into(path: Path, band: str, drop_cache: bool = False) -> tuple[np.ndarray, bytearray]:
    side = BAND_SIZE[band]
    buf = bytearray(side * side * BAND_DTYPE[band].itemsize)
    return read_band_into(str(path), band, memoryview(buf), drop_cache), buf


@pytest.mark.parametrize("drop_cache", [False, True])
def test_read_band_into_equals_tifffile_and_fills_the_buffer(v1_sample_root: Path, drop_cache: bool,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tiff, "_START", {})
    files = _band_files(v1_sample_root)
    for _ in range(2):  # first file of each band: full path; the rest: straight into the buffer
        for path, band in files:
            arr, buf = _into(path, band, drop_cache)
            ref = tifffile.imread(path)
            np.testing.assert_array_equal(arr, ref, err_msg=str(path))
            assert bytes(buf) == ref.astype(ref.dtype.newbyteorder("<")).tobytes()
    assert set(tiff._START) == set(BAND_SIZE)


def test_read_band_into_reads_real_files_without_the_full_path(v1_sample_root: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    files = _band_files(v1_sample_root)
    first = {band: path for path, band in reversed(files)}
    for band, path in first.items():
        _into(path, band)  # primes the per-band start
    monkeypatch.setattr(tiff, "read_band", lambda *a: (_ for _ in ()).throw(AssertionError(a)))
    for path, band in files:
        _into(path, band)


@pytest.mark.parametrize("kwargs", [{"compression": "zlib"}, {"byteorder": ">"}, {"rowsperstrip": 7},
                                    {"description": "x" * 100}])
def test_read_band_into_after_real_files_reads_other_layouts(v1_sample_root: Path, tmp_path: Path,
                                                             kwargs: dict[str, object]) -> None:
    real = next(p for p, b in _band_files(v1_sample_root) if b == "VV")
    _into(real, "VV")
    data = np.random.default_rng(1).normal(-12, 4, (120, 120)).astype(np.float32)
    path = tmp_path / "x_VV.tif"
    tifffile.imwrite(path, data, **kwargs)  # type: ignore[arg-type]
    arr, buf = _into(path, "VV")
    np.testing.assert_array_equal(arr, data)
    assert bytes(buf) == data.astype("<f4").tobytes()
    np.testing.assert_array_equal(_into(real, "VV")[0], tifffile.imread(real))


@pytest.mark.parametrize("cut", [1, 100, 20000])
def test_read_band_into_truncated_file_names_the_file(v1_sample_copy: Path, cut: int) -> None:
    files = [(p, b) for p, b in _band_files(v1_sample_copy) if b == "B02"]
    _into(*files[0])
    path = files[1][0]
    data = path.read_bytes()
    path.write_bytes(data[:len(data) - cut])
    with pytest.raises(ArchiveError, match="truncated") as exc:
        _into(path, "B02")
    assert str(path) in str(exc.value)


def test_read_band_into_wrong_band_and_buffer(v1_sample_root: Path) -> None:
    path = next(p for p, b in _band_files(v1_sample_root) if b == "B02")
    with pytest.raises(ArchiveError, match="expected 60x60"):
        _into(path, "B05")
    with pytest.raises(ValueError, match="bytes"):
        read_band_into(str(path), "B02", memoryview(bytearray(10)))
    with pytest.raises(ArchiveError, match="missing"):
        _into(path.with_name("nope_B02.tif"), "B02")


def test_truncated_file_names_the_file(v1_sample_copy: Path) -> None:
    path, band = _band_files(v1_sample_copy)[0]
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ArchiveError, match="truncated") as exc:
        read_band(path, band)
    assert str(path) in str(exc.value)


@pytest.mark.parametrize("keep", [0, 5, 12])
def test_truncated_header_names_the_file(v1_sample_copy: Path, keep: int) -> None:
    path, band = _band_files(v1_sample_copy)[0]
    path.write_bytes(path.read_bytes()[:keep])
    with pytest.raises(ArchiveError) as exc:
        read_band(path, band)
    assert str(path) in str(exc.value)


def test_garbage_file_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "x_B02.tif"
    path.write_bytes(b"this is not a tiff at all" * 10)
    with pytest.raises(ArchiveError, match="not a readable GeoTIFF") as exc:
        read_band(path, "B02")
    assert str(path) in str(exc.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ArchiveError, match="missing") as exc:
        read_band(tmp_path / "nope_B02.tif", "B02")
    assert "nope_B02.tif" in str(exc.value)


@pytest.mark.parametrize("shape", [(61, 60), (60, 61), (120, 120)])
def test_wrong_shape(tmp_path: Path, shape: tuple[int, int]) -> None:
    path = tmp_path / "x_B8A.tif"
    tifffile.imwrite(path, np.zeros(shape, np.uint16))
    with pytest.raises(ArchiveError, match=r"B8A is \d+x\d+, expected 60x60") as exc:
        read_band(path, "B8A")
    assert str(path) in str(exc.value)


def test_wrong_dtype(tmp_path: Path) -> None:
    path = tmp_path / "x_VV.tif"
    tifffile.imwrite(path, np.zeros((120, 120), np.uint16))
    with pytest.raises(ArchiveError, match="dtype uint16, expected float32") as exc:
        read_band(path, "VV")
    assert str(path) in str(exc.value)


def test_multiband_file_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "x_B02.tif"
    tifffile.imwrite(path, np.zeros((3, 120, 120), np.uint16), photometric="minisblack")
    with pytest.raises(ArchiveError, match="expected 120x120"):
        read_band(path, "B02")


def test_unknown_band(tmp_path: Path) -> None:
    with pytest.raises(BandError, match="B10"):
        read_band(tmp_path / "x.tif", "B10")


def test_read_tiff_does_not_check(tmp_path: Path) -> None:
    path = tmp_path / "any.tif"
    tifffile.imwrite(path, np.arange(35, dtype=np.int32).reshape(5, 7))
    np.testing.assert_array_equal(read_tiff(path), np.arange(35).reshape(5, 7))


# ---- the layout cache ------------------------------------------------------------------------------
def test_layout_cache_is_shared_by_real_bands_and_exact(v1_sample_root: Path) -> None:
    tiff._LAYOUTS.clear()
    files = _band_files(v1_sample_root)
    for _ in range(2):  # first pass fills the cache, second reads every file through it
        for path, band in files:
            np.testing.assert_array_equal(read_band(path, band), tifffile.imread(path), err_msg=str(path))
    # the 84 files (different geo tags per patch) share a handful of layouts
    assert 1 <= len(tiff._LAYOUTS) <= 6


def _strips_file(path: Path, data: np.ndarray) -> tuple[bytes, int, int]:
    """Write ``data`` in 4 strips; return (bytes, offset of the StripOffsets array, first strip)."""
    tifffile.imwrite(path, data, rowsperstrip=data.shape[0] // 4)
    with tifffile.TiffFile(path) as tf:
        page = tf.pages[0]
        array_at = page.tags[273].valueoffset  # type: ignore[union-attr]
        start = page.dataoffsets[0]  # type: ignore[union-attr]
    raw = path.read_bytes()
    assert array_at < start  # the strip offsets array lies in the header, before the image data
    return raw, array_at, start


def test_same_ifd_other_strip_offsets_does_not_share_an_entry(tmp_path: Path) -> None:
    tiff._LAYOUTS.clear()
    a = np.arange(120 * 120, dtype=np.uint16).reshape(120, 120)
    raw, array_at, start = _strips_file(tmp_path / "a_B02.tif", a)
    np.testing.assert_array_equal(read_band(tmp_path / "a_B02.tif", "B02"), a)
    # the same file with 16 bytes of padding before the image data: identical IFD entries, only the
    # out-of-line StripOffsets array differs
    pad = 16
    offsets = np.frombuffer(raw, "<u4", count=4, offset=array_at) + pad
    shifted = bytearray(raw[:start] + bytes(pad) + raw[start:])
    shifted[array_at:array_at + 16] = offsets.astype("<u4").tobytes()
    (tmp_path / "b_B02.tif").write_bytes(bytes(shifted))
    assert tiff._ifd_key(bytearray(raw)) == tiff._ifd_key(shifted)  # same key: the arrays decide
    out = read_band(tmp_path / "b_B02.tif", "B02")
    np.testing.assert_array_equal(out, tifffile.imread(tmp_path / "b_B02.tif"))
    np.testing.assert_array_equal(out, a)


def test_other_dtype_gets_its_own_entry(tmp_path: Path) -> None:
    tiff._LAYOUTS.clear()
    data = np.arange(400, dtype=np.uint16).reshape(20, 20)
    tifffile.imwrite(tmp_path / "u.tif", data)
    tifffile.imwrite(tmp_path / "i.tif", data.astype(np.int16) - 200)
    assert read_tiff(tmp_path / "u.tif").dtype == np.uint16
    signed = read_tiff(tmp_path / "i.tif")
    assert signed.dtype == np.int16
    np.testing.assert_array_equal(signed, data.astype(np.int16) - 200)
    assert len(tiff._LAYOUTS) == 2


def test_cached_layout_still_detects_truncation(v1_sample_copy: Path) -> None:
    path, band = _band_files(v1_sample_copy)[0]
    read_band(path, band)  # layout cached
    key = tiff._ifd_key(bytearray(path.read_bytes()))
    assert key in tiff._LAYOUTS
    path.write_bytes(path.read_bytes()[:-10])  # IFD intact, image data cut short
    with pytest.raises(ArchiveError, match="truncated") as exc:
        read_band(path, band)
    assert str(path) in str(exc.value)


def test_cached_layout_then_fallback_layout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = np.arange(3600, dtype=np.uint16).reshape(60, 60)
    tifffile.imwrite(tmp_path / "plain_B05.tif", data)
    tifffile.imwrite(tmp_path / "zip_B05.tif", data, compression="zlib")
    read_band(tmp_path / "plain_B05.tif", "B05")
    calls: list[object] = []
    real = tiff._fallback
    monkeypatch.setattr(tiff, "_fallback", lambda p: calls.append(p) or real(p))
    np.testing.assert_array_equal(read_band(tmp_path / "zip_B05.tif", "B05"), data)
    np.testing.assert_array_equal(read_band(tmp_path / "plain_B05.tif", "B05"), data)
    assert calls == [tmp_path / "zip_B05.tif"]
