"""benmm encode straight from reBEN's tarballs (BigEarthNet-S2/S1, Reference_Maps + metadata.parquet):
the same store as the folder encode of the release (with and without reference maps), synth --pack for
the release, bad input with the member named, kill and resume."""

from __future__ import annotations

import io
import os
import shutil
import signal
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import pytest
import tifffile
from typer.testing import CliRunner

from benmm.archive.refmaps import REFERENCE_MAPS_DIR, map_key
from benmm.archive.v2 import EXCLUDED_METADATA, METADATA, s2_tiff_dir
from benmm.cli.app import app
from benmm.errors import EncodeError, StoreError
from benmm.ingest.pipeline import encode_summary
from benmm.store import Store
from benmm.synth.pack import pack_reben
from benmm.synth.release import release_files

if TYPE_CHECKING:
    from conftest import Synthetic

PAIRS, SEED = 6, 11  # test_refmaps.py's release: one synthesis per session
SRC = Path(__file__).resolve().parents[1] / "src"
TESTS = Path(__file__).resolve().parent


@pytest.fixture(scope="module")
def release(synthetic: Synthetic) -> Path:
    return synthetic.archive(pairs=PAIRS, seed=SEED, layout="reben-release")


@pytest.fixture(scope="module")
def folder_store(synthetic: Synthetic, release: Path) -> Store:
    return synthetic.encoded(release)


@pytest.fixture(scope="module")
def tars(release: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The release packed as plain tarballs (the fastest to rewrite in a test): role -> tarball, and
    ``meta`` -> its metadata.parquet (copied beside them)."""
    out = tmp_path_factory.mktemp("reben-tar")
    s1, s2, maps = pack_reben(release, "tar", out)
    return {"s2": s2, "s1": s1, "map": maps, "meta": out / METADATA}


def _encode(srcs: list[Path], dst: Path, meta: list[Path], **kw: object) -> object:
    return encode_summary(srcs, dst, progress=False, metadata=meta, **kw)  # type: ignore[arg-type]


def test_zst_tarballs_encode_to_the_folder_store(release: Path, folder_store: Store, tmp_path: Path) -> None:
    zst = pack_reben(release, "tar.zst", tmp_path / "zst")
    assert sorted(os.listdir(tmp_path / "zst")) == ["BigEarthNet-S1.tar.zst", "BigEarthNet-S2.tar.zst",
                                                    "Reference_Maps.tar.zst", METADATA, EXCLUDED_METADATA]
    s = encode_summary(zst[::-1], tmp_path / "z.store", progress=False,  # maps first: any order
                       metadata=[tmp_path / "zst" / METADATA])
    assert s.pairs == s.written == PAIRS and not s.skipped
    assert s.store.content_hash == folder_store.content_hash == s.store.verify()
    assert s.store.metadata.equals(folder_store.metadata)
    m = s.store.manifest
    assert m is not None and m["source"]["kind"] == "reben-tar" and m["reference_maps"]["count"] == PAIRS
    assert m["footprints"] == folder_store.manifest["footprints"]  # type: ignore[index]
    name = s.store.names()[0]
    assert s.store.raw(map_key(name)) == folder_store.raw(map_key(name))


def test_pack_lays_out_the_release(release: Path, tars: dict[str, Path]) -> None:
    listing = release_files(release)
    for role, tarball in (("s2", "BigEarthNet-S2.tar.zst"), ("map", "Reference_Maps.tar.zst")):
        with tarfile.open(tars[role]) as tar:
            members = tar.getmembers()
        files = [m.name for m in members if m.isfile()]
        assert files == listing[tarball]
        seen: set[str] = set()
        for m in members:  # every folder's entry before the files in it
            assert m.name.rsplit("/", 1)[0] in seen or "/" not in m.name
            if m.isdir():
                seen.add(m.name.rstrip("/"))


def test_without_reference_maps(release: Path, tars: dict[str, Path], tmp_path: Path,
                                folder_store: Store) -> None:
    bare = tmp_path / "bare"
    shutil.copytree(release, bare, ignore=shutil.ignore_patterns(REFERENCE_MAPS_DIR))
    want = encode_summary(bare, tmp_path / "f.store", workers=1, progress=False).store
    s = _encode([tars["s1"], tars["s2"]], tmp_path / "t.store", [tars["meta"]])
    assert s.store.content_hash == want.content_hash != folder_store.content_hash  # type: ignore[attr-defined]
    assert not s.store.has_reference_maps  # type: ignore[attr-defined]


def test_snow_cloud_file_beside_metadata_or_given(release: Path, tars: dict[str, Path], folder_store: Store,
                                                  tmp_path: Path) -> None:
    meta = pd.read_parquet(release / METADATA)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    meta.iloc[1:].to_parquet(tmp_path / "a" / METADATA)
    meta.iloc[:1].to_parquet(tmp_path / "b" / EXCLUDED_METADATA)
    srcs = [tars["s2"], tars["s1"], tars["map"]]
    s = _encode(srcs, tmp_path / "one.store", [tmp_path / "a" / METADATA])
    assert s.pairs == PAIRS - 1  # type: ignore[attr-defined]
    s = _encode(srcs, tmp_path / "two.store", [tmp_path / "a" / METADATA, tmp_path / "b" / EXCLUDED_METADATA])
    assert s.store.content_hash == folder_store.content_hash  # type: ignore[attr-defined]
    shutil.copy(tmp_path / "b" / EXCLUDED_METADATA, tmp_path / "a")
    s = _encode(srcs, tmp_path / "beside.store", [tmp_path / "a" / METADATA])
    assert s.store.content_hash == folder_store.content_hash  # type: ignore[attr-defined]


def _repack(src: Path, dst: Path, drop: str = "", replace: tuple[str, bytes] | None = None) -> Path:
    """``src`` without the members whose path contains ``drop``; the member ending in ``replace[0]``
    holding ``replace[1]``."""
    with tarfile.open(src) as tin, tarfile.open(dst, "w", format=tarfile.GNU_FORMAT) as tout:
        for m in tin:
            if drop and drop in m.name:
                continue
            data = tin.extractfile(m).read() if m.isfile() else None  # type: ignore[union-attr]
            if data is not None and replace and m.name.endswith(replace[0]):
                data = replace[1]
                m.size = len(data)
            tout.addfile(m, io.BytesIO(data) if data is not None else None)
    return dst


def test_metadata_patch_missing_from_the_tarball_as_for_folders(release: Path, tars: dict[str, Path],
                                                                 tmp_path: Path) -> None:
    pid = sorted(pd.read_parquet(release / METADATA)["patch_id"])[2]
    s2 = _repack(tars["s2"], tmp_path / "s2.tar", drop=f"/{pid}/")
    srcs, dst = [s2, tars["s1"], tars["map"]], tmp_path / "m.store"
    with pytest.raises(EncodeError, match=rf"invalid pair {pid}: .*s2\.tar: holds no "
                       rf"BigEarthNet-S2/\w+/{pid}/ \(named by .*{METADATA}\)"):
        _encode(srcs, dst, [tars["meta"]])
    s = _encode(srcs, dst, [tars["meta"]], skip_invalid=True)  # resumes, skips the pair
    # the folder encode of the release without that patch folder skips it too, to the same store
    folder = tmp_path / "rel"
    shutil.copytree(release, folder)
    shutil.rmtree(s2_tiff_dir(folder, pid))
    want = encode_summary(folder, tmp_path / "f.store", workers=1, progress=False, skip_invalid=True)
    assert list(want.skipped) == list(s.skipped) == [pid]  # type: ignore[attr-defined]
    assert s.store.content_hash == want.store.content_hash  # type: ignore[attr-defined]


def test_missing_reference_map_makes_the_pair_invalid(release: Path, tars: dict[str, Path],
                                                     tmp_path: Path) -> None:
    pid = sorted(pd.read_parquet(release / METADATA)["patch_id"])[0]
    maps = _repack(tars["map"], tmp_path / "maps.tar", drop=f"/{pid}/")
    with pytest.raises(EncodeError, match=rf"invalid pair {pid}: .*maps\.tar: holds no "
                       rf"Reference_Maps/\w+/{pid}/ \(named by"):
        _encode([tars["s2"], tars["s1"], maps], tmp_path / "m.store", [tars["meta"]])


def test_patches_the_metadata_does_not_name_are_passed_over(release: Path, tars: dict[str, Path],
                                                            tmp_path: Path) -> None:
    meta = pd.read_parquet(release / METADATA)
    folder = tmp_path / "rel"
    shutil.copytree(release, folder)
    meta.iloc[1:].to_parquet(folder / METADATA)  # as the folder encode: those folders are never read
    want = encode_summary(folder, tmp_path / "f.store", workers=1, progress=False).store
    s = _encode([tars["s2"], tars["s1"], tars["map"]], tmp_path / "t.store", [folder / METADATA])
    assert s.pairs == len(meta) - 1 and s.store.content_hash == want.content_hash  # type: ignore[attr-defined]
    assert meta["patch_id"].iloc[0] not in s.store.names()  # type: ignore[attr-defined]


def _tif(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    tifffile.imwrite(buf, arr, compression="zlib", predictor=True)
    return buf.getvalue()


@pytest.mark.parametrize(("arr", "why"), [
    (np.full((60, 60), 111, np.uint16), "reference map is 60x60, expected 120x120"),
    (np.full((120, 120), 7, np.uint16),
     r"reference map holds 14400 pixels with code\(s\) 7, which are not CLC")])
def test_bad_reference_map_names_the_member(release: Path, tars: dict[str, Path], tmp_path: Path,
                                            arr: np.ndarray, why: str) -> None:
    pid = sorted(pd.read_parquet(release / METADATA)["patch_id"])[1]
    maps = _repack(tars["map"], tmp_path / "maps.tar", replace=(f"{pid}_reference_map.tif", _tif(arr)))
    member = rf"maps\.tar:Reference_Maps/\w+/{pid}/{pid}_reference_map\.tif"
    with pytest.raises(EncodeError, match=rf"{member}: {why}"):
        _encode([tars["s2"], tars["s1"], maps], tmp_path / "b.store", [tars["meta"]])
    s = _encode([tars["s2"], tars["s1"], maps], tmp_path / "b.store", [tars["meta"]], skip_invalid=True)
    assert list(s.skipped) == [pid] and s.pairs == PAIRS - 1  # type: ignore[attr-defined]


def _tiny(path: Path, member: str) -> Path:
    with tarfile.open(path, "w") as tar:
        tar.addfile(tarfile.TarInfo(member), io.BytesIO(b""))
    return path


def test_bad_combinations_are_one_line_errors(tars: dict[str, Path], tmp_path: Path) -> None:
    s2, s1, meta, dst = tars["s2"], tars["s1"], tars["meta"], tmp_path / "x.store"
    with pytest.raises(EncodeError, match=r"s2\.tar|BigEarthNet-S2\.tar: reBEN tarballs need their metadata: "
                       "add --metadata metadata.parquet"):
        encode_summary([s2, s1], dst, progress=False)
    with pytest.raises(EncodeError, match=r"both hold BigEarthNet-S1/; give each reBEN tarball once"):
        _encode([s1, s2, s1], dst, [meta])
    with pytest.raises(EncodeError, match=r"the BigEarthNet-S1 tarball is missing"):
        _encode([s2, tars["map"]], dst, [meta])
    v1 = _tiny(tmp_path / "BigEarthNet-S2-v1.0.tar", "BigEarthNet-v1.0/p/p_B01.tif")
    with pytest.raises(EncodeError, match=r"v1\.0\.tar is a BigEarthNet v1\.0 tarball and "
                       r".*BigEarthNet-S1\.tar a reBEN \(v2\.0\) one; give the tarballs of one release"):
        _encode([v1, s1], dst, [meta])
    v1s1 = _tiny(tmp_path / "BigEarthNet-S1-v1.0.tar", "BigEarthNet-S1-v1.0/p/p_VV.tif")
    with pytest.raises(EncodeError, match=r"--metadata .*: the v1 tarballs .* need no metadata file"):
        _encode([v1, v1s1], dst, [meta])
    assert not dst.exists()  # nothing was started


def _encode_killed(srcs: list[Path], meta: Path, dst: Path, die_at: str
                   ) -> subprocess.CompletedProcess[bytes]:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(SRC), str(TESTS)]))
    code = ("import sys; from benmm.ingest import encode_summary; from faults import KillAt; "
            "encode_summary(sys.argv[1:4], sys.argv[5], progress=False, commit_pairs=1, "
            f"metadata=[sys.argv[4]], on_event=KillAt({die_at!r}))")
    return subprocess.run([sys.executable, "-c", code, *map(str, srcs), str(meta), str(dst)], env=env,
                          capture_output=True, timeout=120)


def test_kill_then_resume_to_the_folder_hash(tars: dict[str, Path], folder_store: Store,
                                             tmp_path: Path) -> None:
    dst, srcs = tmp_path / "k.store", [tars["map"], tars["s1"], tars["s2"]]
    for point in ("in-txn:9", "final"):  # inside an S1 transaction (S2 tarball read), then while sealing
        out = _encode_killed(srcs, tars["meta"], dst, point)
        assert out.returncode == -signal.SIGKILL, out.stderr.decode()[-2000:]
        with pytest.raises(StoreError, match="half-written"):
            Store.open(dst)
    s = _encode(srcs, dst, [tars["meta"]])
    assert s.store.content_hash == folder_store.content_hash == s.store.verify()  # type: ignore[attr-defined]
    assert not (dst / ".benmm-encode").exists()


def test_cli_encode_reben_tarballs(tars: dict[str, Path], folder_store: Store, tmp_path: Path) -> None:
    runner = CliRunner()
    args = ["encode", str(tars["map"]), str(tars["s2"]), str(tars["s1"]), str(tmp_path / "c.store"),
            "--metadata", str(tars["meta"]), "--no-progress"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert str(folder_store.content_hash) in "".join(result.output.split())
    result = runner.invoke(app, ["encode", str(tars["s2"]), str(tars["s1"]), str(tmp_path / "d.store")])
    assert result.exit_code == 2 and "Traceback" not in result.output and "--metadata" in result.output


def test_split_keeps_the_folder_encodes_pairs(synthetic: Synthetic, release: Path, tars: dict[str, Path],
                                              tmp_path: Path) -> None:
    want = synthetic.encoded(release, split="train")
    s = _encode([tars["s2"], tars["s1"], tars["map"]], tmp_path / "tr.store", [tars["meta"]], split="train")
    assert 0 < s.pairs < PAIRS and s.store.content_hash == want.content_hash  # type: ignore[attr-defined]


def test_cli_synth_packs_the_release(tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(app, ["synth", str(tmp_path / "r"), "-n", "2", "-w", "1", "--layout",
                                 "reben-release", "--pack", "tar.zst"])
    assert result.exit_code == 0, result.output
    assert sorted(os.listdir(tmp_path / "r")) == ["BigEarthNet-S1.tar.zst", "BigEarthNet-S2.tar.zst",
                                                  "Reference_Maps.tar.zst", METADATA, EXCLUDED_METADATA]
    args = ["synth", str(tmp_path / "x"), "-n", "2", "--layout", "reben", "--pack", "tar"]
    result = runner.invoke(app, args)
    assert result.exit_code == 2 and "(not --layout reben)" in " ".join(result.output.split())
