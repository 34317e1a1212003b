"""benchmarks/train.py runs its table on CPU (tiny settings): every variant's row has positive rates."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).parent.parent / "benchmarks" / "train.py"


def test_train_benchmark_runs_on_cpu(synthetic, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("bench_train", SCRIPT)
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    sys.modules["bench_train"] = bench
    spec.loader.exec_module(bench)
    store = synthetic.store(pairs=60, seed=0, layout="v1")
    rows = bench.main(["--device", "cpu", "--store", str(store.path), "--models", "timm:test_resnet",
                       "--variants", "fp32,bf16+cl", "--batch-size", "4", "--steps", "1", "--warmup", "0",
                       "--workers", "0", "--json", str(tmp_path / "rows.json")])
    assert [r["variant"] for r in rows] == ["fp32", "bf16+cl"]
    assert all(r["in_memory"] > 0 and r["datamodule"] > 0 and r["ratio"] > 0 for r in rows)
    assert (tmp_path / "rows.json").is_file()
    with pytest.raises(SystemExit, match="unknown variant"):
        bench.main(["--device", "cpu", "--variants", "fp16"])
