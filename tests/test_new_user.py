"""What a new user hit (issue 16): empty splits, sizes that only cost memory, and the messages they get."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from benmm.cli.app import app
from benmm.data.datamodule import BigEarthNetDataModule
from benmm.retrieval.build import build_index
from benmm.retrieval.synthetic import synthetic_embeddings
from benmm.store import Store

runner = CliRunner()


def _text(result: object) -> str:
    """The command's output with rich's line wrapping undone."""
    return " ".join(str(getattr(result, "output", "")).split())


@pytest.fixture(scope="module")
def real_store(v1_sample_store: Store) -> Store:
    """The 6 shipped real pairs: 4 train, 1 test, 1 without a split, no val pair."""
    return v1_sample_store


def test_an_empty_split_is_named(real_store: Store, tmp_path: Path) -> None:
    out = runner.invoke(app, ["train", str(real_store.path), "--recipe", "demo", "--out", str(tmp_path / "r"),
                              "--epochs", "1"])
    assert out.exit_code != 0 and "the val split has no samples" in _text(out), out.output
    out = runner.invoke(app, ["stats", str(real_store.path), "--split", "val",
                              "--out", str(tmp_path / "s.json")])
    assert out.exit_code != 0 and "the val split has no pairs" in _text(out), out.output
    assert not (tmp_path / "s.json").exists()
    out = runner.invoke(app, ["embed", "band-stats", str(real_store.path), str(tmp_path / "e"),
                              "--split", "val"])
    assert out.exit_code != 0 and "split='val'" in _text(out) and "Traceback" not in _text(out)


def test_a_batch_larger_than_the_split_is_clamped(real_store: Store) -> None:
    dm = BigEarthNetDataModule(real_store, modality="s2", batch_size=100_000, num_workers=0,
                               recommended=False)
    dm.setup("fit")
    loader = dm.loader("train", train=True)
    assert loader.batch_size == len(dm.dataset("train")) == 4
    assert sum(len(b["name"]) for b in loader) == 4


def test_search_k_is_clamped_to_the_archive() -> None:
    x, items = synthetic_embeddings(50, dim=16, latent=4, seed=0)
    ix = build_index(x, items, kind="flat")
    dist, idx = ix.search(x[:2], k=10**9)  # FAISS would allocate [2, 10^9] results
    assert dist.shape == idx.shape == (2, 50) and (idx >= 0).all()
    dist, idx = ix.search_name(items["name"].iloc[0], k=10**9)
    assert idx.shape == (1, 49)


def test_reben_metadata_without_labels_is_refused(reben_sample_copy: Path, tmp_path: Path) -> None:
    import pandas as pd

    meta = pd.read_parquet(reben_sample_copy / "metadata.parquet")
    meta.drop(columns=["labels"]).to_parquet(reben_sample_copy / "metadata.parquet")
    # the snow/cloud file still has `labels`: concatenating the two must not hide the gap
    out = runner.invoke(app, ["encode", str(reben_sample_copy), str(tmp_path / "s.store")])
    assert out.exit_code == 2 and "metadata lacks column(s) labels" in _text(out), out.output
    assert not (tmp_path / "s.store" / "benmm-store.json").exists()


def test_a_truncated_reben_lmdb_is_reported_once_not_a_crash(reben_sample_copy: Path) -> None:
    mdb = reben_sample_copy / "BigEarthNet-V2-LMDB" / "data.mdb"
    with open(mdb, "r+b") as fh:
        fh.truncate(100_000)
    for command in ("info", "check"):  # both died of SIGBUS reading pages past the end of the file
        out = runner.invoke(app, [command, str(reben_sample_copy)])
        assert "the file is truncated" in _text(out), out.output
        assert _text(out).count("the file is truncated") == 1 and "Traceback" not in _text(out)


def test_damaged_files_are_messages(tmp_path: Path, real_store: Store) -> None:
    import shutil

    store = tmp_path / "c.store"
    shutil.copytree(real_store.path, store)
    (store / "metadata.parquet").write_bytes(b"garbage")
    out = runner.invoke(app, ["verify", str(store)])
    assert out.exit_code == 2 and "not a readable parquet file" in _text(out), out.output
    junk = tmp_path / "w.safetensors"
    junk.write_bytes(b"junk")
    for args in (["evaluate", str(junk), str(real_store.path), "--out", str(tmp_path / "ev")],
                 ["predict", str(junk), str(real_store.path)]):
        out = runner.invoke(app, args)
        assert out.exit_code == 2 and "not a readable .safetensors weights file" in _text(out), out.output


def test_checkpoints_are_written_atomically(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import errno

    import torch

    from benmm.train import checkpoint_io

    io = checkpoint_io.AtomicCheckpointIO()
    target = tmp_path / "checkpoints" / "best.ckpt"
    io.save_checkpoint({"epoch": 1, "w": torch.ones(3)}, target)
    assert torch.load(target)["epoch"] == 1

    def full_disk(obj: object, path: object) -> None:
        with open(str(path), "wb") as fh:
            fh.write(b"half a checkpoint")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpoint_io.torch, "save", full_disk)
    with pytest.raises(OSError, match="No space left"):
        io.save_checkpoint({"epoch": 2}, target)
    monkeypatch.undo()
    assert torch.load(target)["epoch"] == 1  # the earlier checkpoint is intact, nothing truncated
    assert [p.name for p in target.parent.iterdir()] == ["best.ckpt"]  # and no temporary file is left


def test_unwritable_outputs_are_one_line_errors(real_store: Store, tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    for args in (["stats", str(real_store.path), "--split", "train", "--out", str(blocker / "s.json")],
                 ["embed", "band-stats", str(real_store.path), str(blocker / "emb")],
                 ["synth", str(blocker / "syn"), "--pairs", "10"],
                 ["evaluate", str(tmp_path / "x.ckpt"), str(real_store.path), "--out", str(blocker / "ev")]):
        out = runner.invoke(app, args)
        assert out.exit_code == 2, (args, _text(out))
        text = _text(out)
        assert "Traceback" not in text and ("Not a directory" in text or "File exists" in text), (args, text)
        assert "━" not in text, (args, text)  # failed before the work: no progress bar ran
    assert not list(tmp_path.glob("*.partial"))


def _s1_folder(root: Path) -> Path:
    return sorted((root / "BigEarthNet-S1-Example").iterdir())[0]


def test_check_finds_an_all_nan_s1_band(v1_sample_copy: Path) -> None:
    import numpy as np
    import tifffile

    s1 = _s1_folder(v1_sample_copy)
    vh = s1 / f"{s1.name}_VH.tif"
    with tifffile.TiffFile(vh) as tif:
        arr = tif.pages.first.asarray()
    with open(vh, "r+b") as fh:  # overwrite the pixels in place: tags and layout stay those of the real file
        with tifffile.TiffFile(vh) as tif:
            offset = tif.pages.first.dataoffsets[0]
        fh.seek(offset)
        fh.write(np.full(arr.shape, np.nan, arr.dtype).tobytes())
    out = runner.invoke(app, ["check", str(v1_sample_copy)])
    assert out.exit_code == 1 and "band VH holds no value (every pixel is NaN)" in _text(out), _text(out)


def test_a_duplicate_s1_folder_is_called_a_duplicate(v1_sample_copy: Path) -> None:
    import shutil

    s1 = _s1_folder(v1_sample_copy)
    # the same patch from another acquisition time: a second S1 folder pointing at the same S2 partner
    twin = s1.with_name(s1.name[:17] + "20990101T000000" + s1.name[32:])
    shutil.copytree(s1, twin)
    for f in twin.iterdir():
        f.rename(twin / f.name.replace(s1.name, twin.name))
    out = runner.invoke(app, ["check", str(v1_sample_copy)])
    text = _text(out)
    assert out.exit_code == 1 and "a second Sentinel-1 folder for" in text, text
    assert "1 problem(s) of the archive itself" in text, text


def test_reben_metadata_errors_name_file_and_patch(reben_sample_copy: Path) -> None:
    import pandas as pd

    path = reben_sample_copy / "metadata.parquet"
    meta = pd.read_parquet(path)
    bad = meta.copy()
    bad.loc[2, "split"] = "tset"
    bad.to_parquet(path)
    out = runner.invoke(app, ["info", str(reben_sample_copy)])  # aborted before, naming neither
    assert out.exit_code == 0 and f"{meta.patch_id[2]}: unknown split 'tset'" in _text(out), _text(out)
    pd.concat([meta, meta.iloc[:1]]).to_parquet(path)
    out = runner.invoke(app, ["encode", str(reben_sample_copy), str(reben_sample_copy.parent / "d.store")])
    assert out.exit_code == 2 and "appear twice in the metadata" in _text(out), _text(out)
    assert "incomplete download" not in _text(out)


def test_search_a_v1_s2_folder_in_its_tree_finds_the_s1_partner(retrieval_index_dir: Path,
                                                                 v1_sample_root: Path) -> None:
    s2 = sorted((v1_sample_root / "BigEarthNet-S2-Example").iterdir())[0]  # S1+S2 index, S2 folder given
    out = runner.invoke(app, ["search", str(retrieval_index_dir), "--patch", str(s2), "-k", "3", "--json"])
    assert out.exit_code == 0, _text(out)
    import json

    assert len(json.loads(out.output)["results"]) == 3


def test_binary_index_on_small_embeddings_suggests_bits(tmp_path: Path, reben_sample_root: Path) -> None:
    emb = tmp_path / "emb"
    made = runner.invoke(app, ["embed", "band-stats", str(reben_sample_root), str(emb), "--all"])
    assert made.exit_code == 0, _text(made)
    out = runner.invoke(app, ["index", str(emb), str(tmp_path / "ix"), "--kind", "binary"])
    assert out.exit_code == 2 and "use --bits" in _text(out) and "--kind flat" in _text(out), _text(out)


def test_serve_fails_before_its_banner_and_says_what_is_off(retrieval_index_dir: Path, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    import socket

    out = runner.invoke(app, ["serve", str(tmp_path / "no-index")])
    assert out.exit_code == 2 and "benmm retrieval on" not in out.output, _text(out)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        out = runner.invoke(app, ["serve", str(retrieval_index_dir), "--port", str(port)])
    assert out.exit_code == 2 and "is another server running there" in _text(out), _text(out)
    assert "benmm retrieval on" not in out.output

    import uvicorn

    ran: dict[str, object] = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: ran.update(kw))
    broken = tmp_path / "broken.ckpt"
    broken.write_bytes(b"not a checkpoint")
    out = runner.invoke(app, ["serve", str(retrieval_index_dir), "--port", "0",
                              "--store", str(tmp_path / "gone"), "--checkpoint", str(broken)])
    text = _text(out)
    assert out.exit_code == 0 and ran, text
    assert "warning: thumbnails are off: store" in text and "serve with --store PATH" in text, text
    assert "warning: uploads are off: checkpoint" in text and "serve with --checkpoint PATH" in text, text
    assert len(text) < 900 and "WeightsUnpickler" not in text  # one line each, not torch's page of text


def test_the_flags_users_look_for(synthetic, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    import json

    store = synthetic.store(pairs=60, seed=0, layout="v1")
    stats = tmp_path / "stats.json"
    out = runner.invoke(app, ["stats", str(store.path), "--out", str(stats)])
    assert out.exit_code == 0 and f"--stats {stats}" in _text(out), _text(out)  # what it tells users
    run = tmp_path / "run"
    out = runner.invoke(app, ["train", str(store.path), "--recipe", "demo", "--epochs", "1",
                              "--out", str(run), "--labels", "43", "--order", "alphabetical",
                              "--stats", str(stats), "-w", "0"])
    assert out.exit_code == 0, _text(out)
    data = json.loads((run / "recipe.json").read_text())["data"]
    assert (data["labels"], data["order"], data["stats"]) == (43, "alphabetical", str(stats))
    ckpt = run / "checkpoints" / "best.ckpt"
    out = runner.invoke(app, ["evaluate", str(ckpt), str(store.path), "--split", "all", "--json",
                              "--out", str(tmp_path / "ev")])
    assert out.exit_code == 0, _text(out)
    for args, message in (
            (["train", str(store.path), "--bands", "", "--out", str(tmp_path / "r2")], "--bands is empty"),
            (["train", str(store.path), "--labels", "42", "--out", str(tmp_path / "r3")],
             "label sets are 19 and 43"),
            (["stats", str(store.path), "--bands", "B2"], "did you mean 'B02'"),
            (["predict", str(ckpt), str(store.path), "--threshold", "-1"], "greater than or equal to 0")):
        out = runner.invoke(app, args)
        assert out.exit_code == 2 and message in _text(out), (args, _text(out))
