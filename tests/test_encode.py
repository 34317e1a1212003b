"""benmm encode: parallel = serial, kill-and-resume, invalid pairs, unwritable/full destination, CLI."""

from __future__ import annotations

import errno
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd
import pytest
from typer.testing import CliRunner

from benmm.cli.app import app
from benmm.errors import EncodeError, StoreError
from benmm.ingest.pipeline import encode, encode_summary
from benmm.store import Store
from faults import KillAt

if TYPE_CHECKING:
    from conftest import Synthetic

SRC = Path(__file__).resolve().parents[1] / "src"
TESTS = Path(__file__).resolve().parent


@pytest.fixture(scope="module")
def reference(v1_sample_store: Store) -> Store:
    """The v1 sample encoded in one uninterrupted serial run (shared for the session: read only)."""
    return v1_sample_store


@pytest.fixture(scope="module")
def synth_root(synthetic: Synthetic) -> Path:
    """A small synthetic v1 archive (real format, real pair names; shared for the session: read only)."""
    return synthetic.archive(pairs=24, seed=3, layout="v1")


@pytest.fixture(scope="module")
def synth_reference(synthetic: Synthetic, synth_root: Path) -> Store:
    """``synth_root`` encoded in one uninterrupted serial run (shared for the session: read only)."""
    return synthetic.encoded(synth_root)


def _encode_in_subprocess(src: Path, dst: Path, workers: int, die_at: str | None,
                          commit_pairs: int = 1) -> subprocess.Popen[bytes]:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(SRC), str(TESTS)]))
    hook = f"KillAt({die_at!r})" if die_at else None
    code = ("import sys; from benmm.ingest import encode_summary; from faults import KillAt; "
            f"encode_summary(sys.argv[1], sys.argv[2], workers={workers}, progress=False, "
            f"commit_pairs={commit_pairs}, on_event={hook})")
    return subprocess.Popen([sys.executable, "-c", code, str(src), str(dst)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)


def _no_orphans(proc: subprocess.Popen[bytes]) -> None:
    """The killed encoder's workers must die with it (they would hold the LMDB and burn CPU)."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    pytest.fail("encoder workers outlived the killed encoder")


def test_parallel_equals_serial_and_verifies(v1_sample_root: Path, reference: Store, tmp_path: Path) -> None:
    summary = encode_summary(v1_sample_root, tmp_path / "par.store", workers=2, progress=False,
                             commit_pairs=2)
    assert summary.written == 6 and summary.pairs == 6 and not summary.skipped
    assert summary.store.content_hash == reference.content_hash
    assert summary.store.verify() == reference.content_hash
    report = json.loads((tmp_path / "par.store" / "encode-report.json").read_text())
    assert report["written"] == 6 and report["skipped"] == {}


EVERY_STAGE = ((1, "commit:1"), (1, "in-txn:1"), (1, "commit:1"), (2, "in-txn:1"), (2, "commit:1"),
               (2, "metadata"), (1, "final"), (1, "dropped"), (1, "manifest"))


@pytest.mark.parametrize("stages", [
    pytest.param(((1, "commit:1"), (2, "in-txn:1"), (1, "final")), id="quick"),
    pytest.param(EVERY_STAGE, id="every-stage", marks=pytest.mark.slow),
])
def test_kill_then_resume_gives_the_same_store(v1_sample_root: Path, reference: Store, tmp_path: Path,
                                               stages: tuple[tuple[int, str], ...]) -> None:
    dst = tmp_path / "killed.store"
    # one pair per transaction; every run resumes the last one: kill after a commit, inside a
    # transaction (pairs written, not committed; with two workers: each dies holding LMDB's writer
    # lock, the encoder reports it), after commits while two workers write, then in each step of
    # sealing the store
    for workers, die_at in stages:
        proc = _encode_in_subprocess(v1_sample_root, dst, workers, die_at)
        out, _ = proc.communicate(timeout=120)
        if workers == 2 and die_at.startswith("in-txn"):
            assert proc.returncode == 1 and b"a worker process died" in out, out.decode()[-2000:]
        else:
            assert proc.returncode == -signal.SIGKILL, out.decode()[-2000:]
        _no_orphans(proc)
        with pytest.raises(StoreError, match=r"half-written"):
            Store.open(dst)  # a reader never accepts it
    summary = encode_summary(v1_sample_root, dst, workers=2, progress=False)
    assert summary.resumed + summary.written == 6
    assert summary.store.content_hash == reference.content_hash
    assert summary.store.verify() == reference.content_hash
    assert not (dst / ".benmm-encode").exists()


def test_a_dying_worker_is_a_clear_error_and_the_run_resumes(v1_sample_root: Path, reference: Store,
                                                             tmp_path: Path) -> None:
    dst = tmp_path / "w.store"
    with pytest.raises(EncodeError, match="a worker process died"):
        encode_summary(v1_sample_root, dst, workers=2, progress=False, commit_pairs=1,
                       on_event=KillAt("worker:1"))
    summary = encode_summary(v1_sample_root, dst, workers=2, progress=False)
    assert summary.resumed >= 1 and summary.store.content_hash == reference.content_hash


@pytest.mark.slow
def test_kill_at_random_times_then_resume(synth_root: Path, synth_reference: Store, tmp_path: Path) -> None:
    ref = synth_reference
    dst = tmp_path / "random.store"
    rng = random.Random(7)
    for _ in range(3):
        proc = _encode_in_subprocess(synth_root, dst, 2, None, commit_pairs=2)
        time.sleep(rng.uniform(0.5, 2.5))
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=60)
        _no_orphans(proc)
        if (dst / "benmm-store.json").exists() and not (dst / ".benmm-encode").exists():
            break
        if dst.exists():
            with pytest.raises(StoreError):
                Store.open(dst)
    summary = encode_summary(synth_root, dst, workers=2, progress=False)
    assert summary.pairs == len(ref)
    assert summary.store.content_hash == ref.content_hash == summary.store.verify()


def test_resume_refuses_another_source(v1_sample_root: Path, reben_sample_root: Path, tmp_path: Path) -> None:
    dst = tmp_path / "x.store"
    proc = _encode_in_subprocess(v1_sample_root, dst, 1, "commit:1")
    proc.communicate(timeout=120)
    with pytest.raises(EncodeError, match=r"interrupted encode of"):
        encode(reben_sample_root, dst, workers=1, progress=False)


def test_two_encodes_never_write_one_store(v1_sample_root: Path, tmp_path: Path) -> None:
    import fcntl

    dst = tmp_path / "x.store"
    proc = _encode_in_subprocess(v1_sample_root, dst, 1, "commit:1")
    proc.communicate(timeout=120)
    with open(dst / ".benmm-encode" / "lock", "w") as held:  # as a running encode holds it
        fcntl.flock(held, fcntl.LOCK_EX)
        with pytest.raises(EncodeError, match="another encode is writing this store"):
            encode(v1_sample_root, dst, workers=1, progress=False)
    assert len(encode(v1_sample_root, dst, workers=1, progress=False)) == 6


def test_finished_store_is_not_overwritten(v1_sample_root: Path, reben_sample_root: Path, reference: Store,
                                           synthetic: Synthetic, tmp_path: Path) -> None:
    finished = synthetic.copy(reference, tmp_path / "finished.store")  # encodes into it: a private copy
    again = encode_summary(v1_sample_root, finished, workers=1, progress=False)
    assert again.already_complete and again.store.content_hash == reference.content_hash
    with pytest.raises(EncodeError, match=r"another source"):
        encode(reben_sample_root, finished, workers=1, progress=False)
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "thesis.tex").write_text("precious")
    with pytest.raises(EncodeError, match=r"not an unfinished benmm store"):
        encode(v1_sample_root, tmp_path / "busy", workers=1, progress=False)
    assert (tmp_path / "busy" / "thesis.tex").read_text() == "precious"


def test_no_pairs_to_encode(reben_sample_root: Path, tmp_path: Path) -> None:
    src = tmp_path / "empty-reben"
    shutil.copytree(reben_sample_root, src)
    meta = pd.read_parquet(src / "metadata.parquet")
    (src / "metadata.parquet").chmod(0o644)
    meta[meta["split"] == "nope"].to_parquet(src / "metadata.parquet")
    (src / "metadata_for_patches_with_snow_cloud_or_shadow.parquet").chmod(0o644)
    (src / "metadata_for_patches_with_snow_cloud_or_shadow.parquet").unlink()
    with pytest.raises(EncodeError, match="holds no pairs"):
        encode(src, tmp_path / "none.store", workers=1, progress=False)
    assert not (tmp_path / "none.store").exists()


def test_unwritable_destination(v1_sample_root: Path, tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("x")
    with pytest.raises(EncodeError, match=r"cannot create the destination"):
        encode(v1_sample_root, tmp_path / "a-file" / "store", workers=1, progress=False)


def test_disk_full_is_a_clear_error_and_keeps_what_was_written(
        v1_sample_root: Path, reference: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import benmm.store.writer as sw

    real = os.posix_fallocate
    calls = {"n": 0}

    def full_after_three(fd: int, offset: int, length: int) -> None:
        calls["n"] += 1
        if calls["n"] > 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        real(fd, offset, length)

    monkeypatch.setattr(sw.os, "posix_fallocate", full_after_three)
    dst = tmp_path / "full.store"
    with pytest.raises(EncodeError, match=r"No space left on device.*run the same command again"):
        encode_summary(v1_sample_root, dst, workers=1, progress=False, commit_pairs=1)
    monkeypatch.setattr(sw.os, "posix_fallocate", real)
    summary = encode_summary(v1_sample_root, dst, workers=1, progress=False)
    assert summary.resumed >= 1 and summary.resumed + summary.written == 6
    assert summary.store.content_hash == reference.content_hash


def test_file_size_limit_gives_a_clean_cli_error(v1_sample_root: Path, tmp_path: Path) -> None:
    code = ("import resource, signal, sys; signal.signal(signal.SIGXFSZ, signal.SIG_IGN); "
            "resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, 200_000)); "
            "from benmm.cli.app import main; sys.argv = ['benmm'] + sys.argv[1:]; main()")
    proc = subprocess.run([sys.executable, "-c", code, "encode", str(v1_sample_root), str(tmp_path / "s"),
                           "--workers", "1", "--no-progress"], capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, PYTHONPATH=str(SRC)))
    assert proc.returncode == 2, proc.stderr
    err = " ".join(proc.stderr.split())
    assert "error:" in err and "cannot write" in err and "Traceback" not in err


def _damage(root: Path) -> Path:
    band = next((root / "BigEarthNet-S2-Example").glob("S2B_MSIL2A_20170924T93020_69_24/*_B03.tif"))
    band.write_bytes(band.read_bytes()[:5000])
    return band


def test_invalid_pair_fails_naming_the_file_then_skip_invalid_lists_it(v1_sample_copy: Path,
                                                                      tmp_path: Path) -> None:
    band = _damage(v1_sample_copy)
    dst = tmp_path / "bad.store"
    with pytest.raises(EncodeError, match=rf"invalid pair S2B_MSIL2A_20170924T93020_69_24: .*{band.name}"):
        encode(v1_sample_copy, dst, workers=2, progress=False)
    with pytest.raises(StoreError, match=r"half-written"):
        Store.open(dst)
    summary = encode_summary(v1_sample_copy, dst, workers=2, skip_invalid=True, progress=False)
    assert summary.pairs == 5 and list(summary.skipped) == ["S2B_MSIL2A_20170924T93020_69_24"]
    assert band.name in summary.skipped["S2B_MSIL2A_20170924T93020_69_24"]
    report = json.loads((dst / "encode-report.json").read_text())
    assert list(report["skipped"]) == ["S2B_MSIL2A_20170924T93020_69_24"]
    assert "S2B_MSIL2A_20170924T93020_69_24" not in summary.store
    assert summary.store.verify() == summary.store.content_hash


def test_encode_from_reben_copies_values_byte_for_byte(reben_sample_root: Path, tmp_path: Path) -> None:
    source = Store.open(reben_sample_root)
    store = encode(reben_sample_root, tmp_path / "reben.store", workers=2, progress=False)
    assert len(store) == len(source) == 24 and store.manifest is not None
    assert store.manifest["label_sets"] == [19]
    for name in source.names():
        assert store.raw(name) == source.raw(name)
        assert store.raw(store.s1_key(name)) == source.raw(source.s1_key(name))
    assert store.content_hash == source.verify() == store.verify()
    val = encode(reben_sample_root, tmp_path / "val.store", workers=1, split="val", progress=False)
    assert len(val) == 8 and set(val.metadata["split"]) == {"validation"}


def test_encode_synthetic_archive_in_parallel(synth_root: Path, synth_reference: Store,
                                              tmp_path: Path) -> None:
    one = synth_reference  # encode(synth_root, ..., workers=1)
    two = encode_summary(synth_root, tmp_path / "two.store", workers=2, progress=False, commit_pairs=4)
    assert len(one) == 24 and two.written == 24
    assert one.content_hash == two.store.content_hash
    assert set(one.metadata["split"].dropna()) <= {"train", "validation", "test"}
    assert one.metadata["labels43"].map(len).min() >= 1


def test_default_workers_is_one_more_than_the_cores(v1_sample_root: Path, reference: Store,
                                                   tmp_path: Path) -> None:
    summary = encode_summary(v1_sample_root, tmp_path / "d.store", progress=False)
    assert summary.workers == (os.cpu_count() or 1) + 1
    assert summary.written == 6 and summary.store.content_hash == reference.content_hash


def test_every_value_holds_its_own_pixels_across_reused_buffers(synth_root: Path, tmp_path: Path) -> None:
    """The encoder reads band files straight into value buffers that it reuses from chunk to chunk."""
    import tifffile

    from benmm.bands import S1_BANDS, S2_BANDS
    from benmm.store.blob import encode_blob

    store = encode_summary(synth_root, tmp_path / "s.store", workers=1, progress=False,
                           commit_pairs=5).store
    assert len(store) == 24
    for name in store.names():
        s1 = store.s1_key(name)
        s2_dir, s1_dir = synth_root / "BigEarthNet-v1.0" / name, synth_root / "BigEarthNet-S1-v1.0" / s1
        s2_bands = {b: tifffile.imread(s2_dir / f"{name}_{b}.tif") for b in S2_BANDS}
        s1_bands = {b: tifffile.imread(s1_dir / f"{s1}_{b}.tif") for b in S1_BANDS}
        assert store.raw(name) == encode_blob(s2_bands) and store.raw(s1) == encode_blob(s1_bands)


def test_cli_encode_and_verify(v1_sample_root: Path, v1_sample_copy: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(app, ["encode", str(v1_sample_root), str(tmp_path / "cli.store"), "-w", "2",
                                 "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "pairs in store" in result.output and "content hash" in result.output
    result = runner.invoke(app, ["verify", str(tmp_path / "cli.store")])
    assert result.exit_code == 0 and "matches the manifest" in " ".join(result.output.split())
    _damage(v1_sample_copy)
    result = runner.invoke(app, ["encode", str(v1_sample_copy), str(tmp_path / "bad.store"), "--no-progress"])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "_B03.tif" in "".join(result.output.split())
    result = runner.invoke(app, ["encode", str(v1_sample_copy), str(tmp_path / "bad.store"), "--no-progress",
                                 "--skip-invalid"])
    assert result.exit_code == 0, result.output
    out = " ".join(result.output.split())
    assert "skipped 1 invalid pair" in out and "S2B_MSIL2A_20170924T93020_69_24" in out
    shutil.rmtree(tmp_path / "cli.store")
