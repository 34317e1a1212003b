"""Uploads are bounded by what their headers declare, before any pixel is decoded (decompression bombs)."""

from __future__ import annotations

import io
import zipfile

import numpy as np
import pytest
import tifffile
from safetensors.numpy import save

from benmm.retrieval.service.upload import UploadError, read_patch_bytes


def _zip(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def test_a_small_zip_declaring_a_huge_tiff_is_refused_before_decoding() -> None:
    # 4000 x 4000 zeros, zlib-compressed: a few KB on the wire, 32 MB once decoded
    tif = io.BytesIO()
    tifffile.imwrite(tif, np.zeros((4000, 4000), np.uint16), compression="zlib")
    data = _zip({"X_B02.tif": tif.getvalue()})
    assert len(data) < 200_000
    with pytest.raises(UploadError, match=r"band B02 is 4000x4000, expected 120x120"):
        read_patch_bytes(data, "patch.zip")


def test_a_multi_page_tiff_is_refused() -> None:
    tif = io.BytesIO()
    tifffile.imwrite(tif, np.zeros((3, 120, 120), np.uint16), photometric="minisblack")
    with pytest.raises(UploadError, match="one image"):
        read_patch_bytes(_zip({"X_B02.tif": tif.getvalue()}), "patch.zip")


def test_npz_shapes_are_checked_from_the_headers() -> None:
    buf = io.BytesIO()
    np.savez_compressed(buf, B02=np.zeros((2000, 2000), np.float32))  # small compressed, 16 MB loaded
    with pytest.raises(UploadError, match=r"B02 is 2000x2000"):
        read_patch_bytes(buf.getvalue(), "q.npz")
    buf = io.BytesIO()
    np.savez_compressed(buf, junk=np.zeros(10**6, np.uint8))
    with pytest.raises(UploadError, match="at most 14400"):
        read_patch_bytes(buf.getvalue(), "q.npz")


def test_safetensors_shapes_are_checked_and_good_files_still_read() -> None:
    with pytest.raises(UploadError, match=r"band VV is 121x120"):
        read_patch_bytes(save({"VV": np.zeros((121, 120), np.float32)}), "q.safetensors")
    arrays = {"VV": np.ones((120, 120), np.float32), "B01": np.ones((20, 20), np.uint16)}
    good = read_patch_bytes(save(arrays), "q.safetensors")
    assert good["VV"].shape == (120, 120) and good["B01"].dtype == np.uint16
    with pytest.raises(UploadError, match=r"not a readable \.safetensors"):
        read_patch_bytes(b"\x08" + b"\x00" * 20, "q.safetensors")
