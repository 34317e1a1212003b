"""`benmm info` and `benmm check` through the CLI: real samples, a damaged copy, bad paths."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import tifffile
from typer.testing import CliRunner

from benmm import labels as L
from benmm.cli.app import app
from conftest import V1_SAMPLE_S2

runner = CliRunner()
S2_EX, S1_EX = "BigEarthNet-S2-Example", "BigEarthNet-S1-Example"


def _run(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, list(args))
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, result.output if "--json" in args else " ".join(result.output.split())


def test_info_v1_sample(v1_sample_root: Path) -> None:
    code, out = _run("info", str(v1_sample_root))
    assert code == 0
    assert "pairs: 6" in out and "paired: 6 by json" in out
    assert "Non-irrigated arable land" in out and "Arable land" in out
    assert "no problems found" in out


def test_info_v1_json(v1_sample_root: Path) -> None:
    code, out = _run("info", str(v1_sample_root), "--json")
    assert code == 0
    s = json.loads(out)
    assert s["kind"] == "v1" and s["pairs"] == 6 and s["problems"] == []
    assert list(s["labels19"]) == list(L.LABELS_19) and list(s["labels43"]) == list(L.LABELS_43)
    # histogram = pairs per label, computed here from the JSONs
    want: dict[str, int] = dict.fromkeys(L.LABELS_43, 0)
    for name in V1_SAMPLE_S2:
        data = json.loads((v1_sample_root / S2_EX / name / f"{name}_labels_metadata.json").read_text())
        for label in set(data["labels"]):
            want[label] += 1
    assert s["labels43"] == want
    assert sum(s["splits"].values()) == 6 and sum(s["countries"].values()) == 6
    assert s["countries"] == {"Austria": 1, "Finland": 2, "Ireland": 2, "Portugal": 1}


def test_info_reben_sample(reben_sample_root: Path) -> None:
    code, out = _run("info", str(reben_sample_root), "--json")
    assert code == 0
    s = json.loads(out)
    assert s["kind"] == "reben" and s["pairs"] == 24
    assert s["splits"] == {"test": 8, "train": 8, "val": 8}
    assert s["excluded"] == {"seasonal snow": 3, "cloud or shadow": 3}
    assert "labels43" not in s and s["labels19"]["Pastures"] > 0
    code, out = _run("info", str(reben_sample_root))
    assert code == 0 and "reBEN" in out and "pairs: 24" in out


def test_check_clean_samples(v1_sample_root: Path, reben_sample_root: Path, tmp_path: Path) -> None:
    for root in (v1_sample_root, reben_sample_root):
        report = tmp_path / "r.csv"
        code, out = _run("check", str(root), "--report", str(report))
        assert code == 0, out
        assert "0 problem(s)" in out
        assert list(csv.reader(report.open())) == [["pair", "path", "reason"]]


def _damage(root: Path) -> dict[str, str]:
    """Damage the copy in every way the issue names; returns path -> expected words of the reason."""
    n = V1_SAMPLE_S2
    s2 = root / S2_EX
    expect: dict[str, str] = {}
    p = s2 / n[0] / f"{n[0]}_B04.tif"
    p.write_bytes(p.read_bytes()[:5000])
    expect[str(p)] = "truncated"
    p = s2 / n[1] / f"{n[1]}_B8A.tif"
    tifffile.imwrite(p, np.zeros((61, 60), np.uint16))
    expect[str(p)] = "expected 60x60"
    p = s2 / n[2] / f"{n[2]}_B11.tif"
    p.unlink()
    expect[str(p)] = "missing"
    p = s2 / n[3] / f"{n[3]}_labels_metadata.json"
    p.write_text('{"labels": [')
    expect[str(p)] = "malformed"
    p = s2 / n[4] / f"{n[4]}_labels_metadata.json"
    data = json.loads(p.read_text())
    data["labels"] = ["Mixed forests"]
    p.write_text(json.dumps(data))
    expect[str(p)] = "unknown label 'Mixed forests'"
    shutil.rmtree(s2 / n[5])  # leaves its S1 partner alone
    s1 = next(d for d in (root / S1_EX).iterdir() if d.name.endswith(n[5].split("_", 3)[3]))
    expect[str(s1)] = "missing"
    return expect


def test_check_damaged_copy_lists_every_problem(v1_sample_copy: Path, tmp_path: Path) -> None:
    expect = _damage(v1_sample_copy)
    report = tmp_path / "problems.csv"
    code, out = _run("check", str(v1_sample_copy), "--report", str(report), "--workers", "1")
    assert code == 1
    rows = list(csv.DictReader(report.open()))
    got = {r["path"]: r["reason"] for r in rows}
    assert set(got) == set(expect), rows
    for path, words in expect.items():
        assert words in got[path], (path, got[path])
    assert "6 problem(s)" in out
    jsonl = tmp_path / "problems.jsonl"
    code, _ = _run("check", str(v1_sample_copy), "-r", str(jsonl), "--workers", "2")
    assert code == 1
    lines = [json.loads(x) for x in jsonl.read_text().splitlines()]
    assert {x["path"] for x in lines} == set(expect)


def test_info_on_damaged_copy_reports_problems(v1_sample_copy: Path) -> None:
    _damage(v1_sample_copy)
    code, out = _run("info", str(v1_sample_copy), "--json")
    assert code == 0
    assert len(json.loads(out)["problems"]) == 6


def test_not_an_archive_is_a_clean_error(tmp_path: Path) -> None:
    for cmd in ("info", "check"):
        code, out = _run(cmd, str(tmp_path))
        assert code == 2
        assert "not a BigEarthNet archive" in out and "expected" in out
        code, out = _run(cmd, str(tmp_path / "missing"))
        assert code == 2 and "no such file or folder" in out


def test_help_texts() -> None:
    code, out = _run("check", "--help")
    assert code == 0 and "Exit codes" in out and "--report" in out and "--workers" in out
    code, out = _run("info", "--help")
    assert code == 0 and "--json" in out


def test_info_and_check_on_a_store(v1_sample_root: Path, tmp_path: Path) -> None:
    import benmm

    store = benmm.encode(v1_sample_root, tmp_path / "s.store", workers=1, progress=False)
    assert type(store).__name__ == "Store"
    code, out = _run("info", str(tmp_path / "s.store"), "--json")
    assert code == 0
    s = json.loads(out)
    code, out = _run("info", str(v1_sample_root), "--json")
    v1 = json.loads(out)
    assert s["kind"] == "store" and s["pairs"] == 6 and s["problems"] == []
    for key in ("labels19", "labels43", "splits", "countries", "seasons", "excluded"):
        assert s[key] == v1[key], key
    code, out = _run("check", str(tmp_path / "s.store"), "--workers", "1")
    assert code == 0 and "0 problem(s)" in out
