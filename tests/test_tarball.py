"""benmm encode straight from the v1 tarballs: same store as the folders (real example tarballs and
synthetic ones in every format), the tar stream parser against tarfile, bad input, kill and resume."""

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

import pytest
from typer.testing import CliRunner

from benmm.archive.tarball import TarballReader, tar_format
from benmm.archive.tarstream import iter_tar
from benmm.cli.app import app
from benmm.errors import ArchiveError, EncodeError, StoreError
from benmm.ingest.pipeline import encode_summary
from benmm.store import Store
from benmm.synth.pack import PACKS, pack_v1

if TYPE_CHECKING:
    from conftest import Synthetic

DATA = Path(__file__).parent / "data" / "bigearthnet-v1"
EXAMPLES = [DATA / "BigEarthNet-S2-Example.tar.bz2", DATA / "BigEarthNet-S1-Example.tar.bz2"]
SRC = Path(__file__).resolve().parents[1] / "src"
TESTS = Path(__file__).resolve().parent


@pytest.fixture(scope="module")
def small(synthetic: Synthetic) -> Path:
    """A 4-pair synthetic v1 archive (shared, read only)."""
    return synthetic.archive(pairs=4, seed=11, layout="v1")


@pytest.fixture(scope="module")
def small_store(synthetic: Synthetic, small: Path) -> Store:
    return synthetic.encoded(small)


@pytest.fixture(scope="module")
def packed(small: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[Path]]:
    """``small`` packed in every format (S2 tarball first)."""
    root = tmp_path_factory.mktemp("packed")
    return {fmt: pack_v1(small, fmt, root / fmt) for fmt in PACKS}


def test_example_tarballs_encode_to_the_folder_store(v1_sample_store: Store, tmp_path: Path) -> None:
    s = encode_summary(EXAMPLES[::-1], tmp_path / "a.store", progress=False)  # S1 first: any order
    assert s.pairs == s.written == 6 and not s.skipped
    assert s.store.content_hash == v1_sample_store.content_hash == s.store.verify()
    assert s.store.metadata.equals(v1_sample_store.metadata)
    assert s.store.manifest is not None and s.store.manifest["source"]["kind"] == "v1-tar"


@pytest.mark.parametrize("fmt", PACKS)
def test_every_format_encodes_to_the_folder_store(packed: dict[str, list[Path]], small_store: Store,
                                                  fmt: str, tmp_path: Path) -> None:
    assert [tar_format(p) for p in packed[fmt]] == [fmt, fmt]
    s = encode_summary(packed[fmt], tmp_path / "s.store", progress=False, commit_pairs=2)
    assert s.pairs == 4 and s.store.content_hash == small_store.content_hash


def test_format_comes_from_the_magic_bytes_not_the_suffix(packed: dict[str, list[Path]], small_store: Store,
                                                          tmp_path: Path) -> None:
    s2, s1 = (shutil.copy(p, tmp_path / f"{i}.tar.gz") for i, p in enumerate(packed["tar.zst"]))
    assert tar_format(s2) == "tar.zst"
    assert encode_summary([s2, s1], tmp_path / "m.store", progress=False).store.content_hash == \
        small_store.content_hash


def test_pack_lays_out_members_like_the_published_tarballs(packed: dict[str, list[Path]]) -> None:
    def shape(path: Path) -> tuple[list[int], list[str], str]:
        with tarfile.open(path) as tar:
            names = tar.getnames()
            first = tar.getmembers()[0]
        # depth of each entry, the top folder first, then one folder per patch followed by its files
        return [n.count("/") for n in names[:3]], sorted({n.split("/")[0] for n in names}), \
            "dir" if first.isdir() else "file"

    real = shape(EXAMPLES[0])
    s2, s1 = packed["tar"]
    assert shape(s2) == ([0, 1, 2], ["BigEarthNet-v1.0"], "dir") and real[0] == [0, 1, 2] and real[2] == "dir"
    assert shape(s1)[1] == ["BigEarthNet-S1-v1.0"]
    assert (s2.name, s1.name) == ("BigEarthNet-S2-v1.0.tar", "BigEarthNet-S1-v1.0.tar")
    with tarfile.open(EXAMPLES[0]) as tar:
        assert len(tar.getnames()) == 1 + 6 * 14  # top folder, then per patch: its folder + 13 files


@pytest.mark.parametrize("form", [tarfile.PAX_FORMAT, tarfile.GNU_FORMAT, tarfile.USTAR_FORMAT])
def test_tar_stream_parser_agrees_with_tarfile(form: int) -> None:
    buf = io.BytesIO()
    long = "BigEarthNet-S1-v1.0/" + "S1A_IW_GRDH_1SDV_20170613T165043_33UUP_61_39/" * 2 + "x_metadata.json"
    files = {"top/a.tif": os.urandom(1000), long: b"{}", "top/empty": b"", "top/b": os.urandom(513)}
    with tarfile.open(fileobj=buf, mode="w", format=form) as tar:
        folder = tarfile.TarInfo("top")
        folder.type = tarfile.DIRTYPE
        tar.addfile(folder)
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        link = tarfile.TarInfo("top/link")
        link.type, link.linkname = tarfile.SYMTYPE, "a.tif"
        tar.addfile(link)
    raw = buf.getvalue()
    with tarfile.open(fileobj=io.BytesIO(raw)) as tar:
        want = {m.name: tar.extractfile(m).read() for m in tar if m.isfile()}  # type: ignore[union-attr]
    blocks = iter([raw[i:i + 700] for i in range(0, len(raw), 700)])  # blocks cut across headers
    got = {e.path: e.data for e in iter_tar(lambda: next(blocks, b""))}
    assert got == want == files
    skipped = [e for e in iter_tar(iter([raw, b""]).__next__, want=lambda p: p.endswith(".tif"))]
    assert [e.data is None for e in skipped] == [False, True, True, True]


def test_truncated_tarball_names_member_and_offset_and_resumes(packed: dict[str, list[Path]],
                                                               small_store: Store, tmp_path: Path) -> None:
    s2, s1 = packed["tar.gz"]
    cut = tmp_path / "BigEarthNet-S1-v1.0.tar.gz"
    cut.write_bytes(s1.read_bytes()[: s1.stat().st_size // 2])
    with pytest.raises(ArchiveError, match=r"truncated or corrupt \(tar\.gz; [\d,]+ of [\d,]+ bytes.*"
                       r"in member BigEarthNet-S1-v1\.0/S1\w+/S1\w+\.\w+ \(its header at byte [\d,]+ of"):
        encode_summary([s2, cut], tmp_path / "t.store", progress=False, commit_pairs=1)
    with pytest.raises(StoreError, match="half-written"):
        Store.open(tmp_path / "t.store")
    shutil.copy(s1, cut)  # the download fixed: the rerun resumes (the S2 tarball is not read again)
    s = encode_summary([s2, cut], tmp_path / "t.store", progress=False)
    assert s.resumed > 0 and s.store.content_hash == small_store.content_hash


@pytest.mark.parametrize("fmt", ["tar", "tar.zst", "tar.bz2"])
def test_corrupt_tarball_is_a_clear_error(packed: dict[str, list[Path]], fmt: str, tmp_path: Path) -> None:
    s2, s1 = packed[fmt]
    raw = bytearray(s2.read_bytes())
    at = 1024 if fmt == "tar" else len(raw) // 2  # tar: the second member's header; else the stream
    raw[at:at + 64] = bytes(64) if fmt != "tar" else b"\xff" * 64
    bad = tmp_path / s2.name
    bad.write_bytes(bytes(raw))
    with pytest.raises(ArchiveError, match=rf"{bad.name}: truncated or corrupt \({fmt};.* at byte|"
                       rf"{bad.name}: truncated or corrupt \({fmt};.* in member"):
        encode_summary([bad, s1], tmp_path / "c.store", progress=False)


def test_not_a_bigearthnet_tarball(packed: dict[str, list[Path]], tmp_path: Path) -> None:
    s2, s1 = packed["tar"]
    other = tmp_path / "photos.tar"
    with tarfile.open(other, "w") as tar:
        info = tarfile.TarInfo("holiday/img.jpg")
        tar.addfile(info, io.BytesIO(b""))
    with pytest.raises(ArchiveError, match=r"photos\.tar: holds holiday/, not a BigEarthNet tarball; "
                       r"expected BigEarthNet-v1\.0/"):
        encode_summary([s2, other], tmp_path / "x.store", progress=False)
    junk = tmp_path / "junk.tar.gz"
    junk.write_bytes(b"PK\x03\x04" + bytes(600))
    with pytest.raises(ArchiveError, match=r"junk\.tar\.gz: not a tarball \(.*starts with the bytes "
                       r"50 4b 03 04"):
        encode_summary([s2, junk], tmp_path / "x.store", progress=False)
    reben = tmp_path / "BigEarthNet-S2.tar"
    with tarfile.open(reben, "w") as tar:
        tar.addfile(tarfile.TarInfo("BigEarthNet-S2/T33UUP/patch/patch_B01.tif"), io.BytesIO(b""))
    with pytest.raises(EncodeError, match=r"v1\.0\.tar is a BigEarthNet v1\.0 tarball and "
                       r".*BigEarthNet-S2\.tar a reBEN \(v2\.0\) one; give the tarballs of one release"):
        encode_summary([reben, s1], tmp_path / "x.store", progress=False)


def test_s1_tarball_given_twice(packed: dict[str, list[Path]], tmp_path: Path) -> None:
    s1 = packed["tar"][1]
    with pytest.raises(EncodeError, match=r"both hold Sentinel-1 patches \(BigEarthNet-S1-v1\.0/\); give one "
                       "Sentinel-2 and one Sentinel-1 tarball"):
        encode_summary([s1, s1], tmp_path / "x.store", progress=False)
    with pytest.raises(EncodeError, match="give the two tarballs"):
        encode_summary([s1], tmp_path / "x.store", progress=False)


def _repack(src: Path, dst: Path, drop: str = "", damage: str = "") -> Path:
    """``src`` (a plain tarball) without the members whose path contains ``drop``; the member ending in
    ``damage`` cut to half its size."""
    with tarfile.open(src) as tin, tarfile.open(dst, "w", format=tarfile.GNU_FORMAT) as tout:
        for m in tin:
            if drop and drop in m.name:
                continue
            data = tin.extractfile(m).read() if m.isfile() else None  # type: ignore[union-attr]
            if data is not None and damage and m.name.endswith(damage):
                data = data[: len(data) // 2]
                m.size = len(data)
            tout.addfile(m, io.BytesIO(data) if data is not None else None)
    return dst


def test_missing_partner_then_skip_invalid(packed: dict[str, list[Path]], small: Path,
                                           tmp_path: Path) -> None:
    s2, s1 = packed["tar"]
    victim = sorted(os.listdir(small / "BigEarthNet-S1-v1.0"))[0]
    s1_less = _repack(s1, tmp_path / "s1.tar", drop=victim)
    dst = tmp_path / "p.store"
    with pytest.raises(EncodeError, match=r"invalid pair S2\w+: .*BigEarthNet-v1\.0/S2\w+/S2\w+_labels_"
                       r"metadata\.json: no Sentinel-1 patch in .*s1\.tar names it .*missing"):
        encode_summary([s2, s1_less], dst, progress=False)
    s = encode_summary([s2, s1_less], dst, progress=False, skip_invalid=True)  # resumes, skips the pair
    assert s.pairs == 3 and len(s.skipped) == 1 and s.store.verify() == s.store.content_hash
    assert victim not in {s.store.s1_key(n) for n in s.store.names()}


def test_bad_band_names_the_member(packed: dict[str, list[Path]], small: Path, tmp_path: Path) -> None:
    s2, s1 = packed["tar"]
    patch = sorted(os.listdir(small / "BigEarthNet-v1.0"))[1]
    bad = _repack(s2, tmp_path / "s2.tar", damage=f"{patch}_B8A.tif")
    with pytest.raises(EncodeError, match=rf"invalid patch {patch}: .*s2\.tar:BigEarthNet-v1\.0/{patch}/"
                       rf"{patch}_B8A\.tif: "):
        encode_summary([bad, s1], tmp_path / "b.store", progress=False)
    s = encode_summary([bad, s1], tmp_path / "b.store", progress=False, skip_invalid=True)
    assert s.pairs == 3 and list(s.skipped) == [patch] and "_B8A.tif" in s.skipped[patch]


def _encode_killed(srcs: list[Path], dst: Path, die_at: str) -> subprocess.CompletedProcess[bytes]:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(SRC), str(TESTS)]))
    code = ("import sys; from benmm.ingest import encode_summary; from faults import KillAt; "
            f"encode_summary(sys.argv[1:3], sys.argv[3], progress=False, commit_pairs=1, "
            f"on_event=KillAt({die_at!r}))")
    return subprocess.run([sys.executable, "-c", code, *map(str, srcs), str(dst)], env=env,
                          capture_output=True, timeout=120)


def test_kill_at_any_point_then_resume(packed: dict[str, list[Path]], small_store: Store,
                                       tmp_path: Path) -> None:
    dst = tmp_path / "k.store"
    srcs = packed["tar.zst"]
    # after the first S2 commit, inside an S1 transaction (S2 tarball done), then while sealing
    for point in ("commit:1", "in-txn:6", "final"):
        out = _encode_killed(srcs, dst, point)
        assert out.returncode == -signal.SIGKILL, out.stderr.decode()[-2000:]
        with pytest.raises(StoreError, match="half-written"):
            Store.open(dst)
    s = encode_summary(srcs, dst, progress=False)
    assert s.store.content_hash == small_store.content_hash == s.store.verify()
    assert not (dst / ".benmm-encode").exists()


def test_cli_encode_tarballs_and_synth_pack(v1_sample_store: Store, tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(app, ["encode", *map(str, EXAMPLES), str(tmp_path / "cli.store"), "--no-progress"])
    assert result.exit_code == 0, result.output
    assert v1_sample_store.content_hash in "".join(result.output.split())
    result = runner.invoke(app, ["encode", str(EXAMPLES[1]), str(EXAMPLES[1]), str(tmp_path / "y.store")])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "both hold" in " ".join(result.output.split())  # rich wraps long paths
    result = runner.invoke(app, ["synth", str(tmp_path / "syn"), "-n", "2", "-w", "1", "--pack", "tar.zst"])
    assert result.exit_code == 0, result.output
    assert sorted(os.listdir(tmp_path / "syn")) == ["BigEarthNet-S1-v1.0.tar.zst",
                                                    "BigEarthNet-S2-v1.0.tar.zst"]
    result = runner.invoke(app, ["synth", str(tmp_path / "syn2"), "-n", "2", "--pack", "zip"])
    assert result.exit_code == 2 and "--pack zip" in result.output


def test_reader_reports_bytes_read(packed: dict[str, list[Path]]) -> None:
    reader = TarballReader(packed["tar.gz"][0], want=lambda p: False)
    assert sum(1 for _ in reader) == 4 * 13 and reader.compressed == reader.total


def test_split_keeps_the_folder_encodes_pairs(packed: dict[str, list[Path]], synthetic: Synthetic,
                                              small: Path, tmp_path: Path) -> None:
    ref = synthetic.encoded(small, split="train")
    s = encode_summary(packed["tar.bz2"], tmp_path / "train.store", split="train", progress=True)
    assert 0 < s.pairs < 4 and s.store.content_hash == ref.content_hash


@pytest.mark.parametrize("fmt", ["tar.gz", "tar.zst", "tar.bz2"])
def test_concatenated_streams_are_read_one_after_another(fmt: str, tmp_path: Path) -> None:
    """pigz / pzstd / pbzip2 write several gzip members, zstd frames or bzip2 streams."""
    import bz2
    import gzip

    import zstandard

    buf = io.BytesIO()
    files = {f"top/f{i}": os.urandom(3000) for i in range(3)}
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    raw, half = buf.getvalue(), len(buf.getvalue()) // 2
    compress = {"tar.gz": gzip.compress, "tar.bz2": bz2.compress,
                "tar.zst": zstandard.ZstdCompressor().compress}[fmt]
    path = tmp_path / f"x.{fmt}"
    path.write_bytes(compress(raw[:half]) + compress(raw[half:]))
    assert {m.path: m.data for m in TarballReader(path)} == files
