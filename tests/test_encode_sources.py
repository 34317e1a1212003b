"""Every archive kind `open_archive` knows also encodes: the reBEN GeoTIFF release gives the same store
as the reBEN LMDB of the same patches."""

from __future__ import annotations

from pathlib import Path

from benmm.archive import open_archive
from benmm.ingest import encode
from benmm.ingest.sources import ArchiveSource, StoreSource, open_source
from test_archive_v2 import _write_tiff_layout


def test_reben_geotiff_folder_encodes_to_the_lmdb_folders_store(reben_sample_root: Path,
                                                                tmp_path: Path) -> None:
    tif = tmp_path / "reben-tif"
    _write_tiff_layout(reben_sample_root, tif)
    assert open_archive(tif).backend == "tiff"
    assert isinstance(open_source(tif, None)[0], ArchiveSource)
    assert isinstance(open_source(reben_sample_root, None)[0], StoreSource)
    from_lmdb = encode(reben_sample_root, tmp_path / "a.store", workers=1, progress=False)
    from_tiff = encode(tif, tmp_path / "b.store", workers=2, progress=False)
    assert len(from_tiff) == len(from_lmdb) > 0
    assert from_tiff.content_hash == from_lmdb.content_hash == from_tiff.verify()
    only_train = encode(tif, tmp_path / "c.store", workers=1, progress=False, split="train")
    assert 0 < len(only_train) < len(from_tiff)
    assert set(only_train.metadata["split"]) == {"train"}
