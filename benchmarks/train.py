"""Does loading limit training? Training samples/s fed by the real DataModule vs tensors in memory.

For each model (default ResNet50 S1+S2 early fusion and the K-Branch CNN, all 14 bands), one run
measures the same training step (forward, BCE, backward, AdamW step) twice:

* ``in memory``: batches already transformed and on the device (a fixed set of real batches cycled);
* ``DataModule``: batches from ``BigEarthNetDataModule.train_dataloader()`` (worker processes reading
  the store) moved to the device and transformed there (resample + normalise + flips), as in training.

``ratio = DataModule / in memory`` (target >= 0.95: loading keeps up with the model). The store is a
synthetic archive encoded once into ``$BENMM_BENCH_CACHE`` (default ``~/.cache/benmm-bench``), or any
store given with ``--store``.

    python benchmarks/train.py --steps 10 --batch-size 16            # CPU, small N
    python benchmarks/train.py --steps 50 --batch-size 256 --workers 8   # GPU
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

CACHE = Path(os.environ.get("BENMM_BENCH_CACHE", Path.home() / ".cache" / "benmm-bench"))


def bench_store(pairs: int) -> Path:
    from benmm.ingest.pipeline import encode
    from benmm.synth.archive import synthesize

    archive = CACHE / f"train-synth-{pairs}"
    store = CACHE / f"train-synth-{pairs}.store"
    if not archive.is_dir():
        synthesize(archive, pairs=pairs, seed=0, layout="v1")
    if not (store / "benmm-store.json").is_file():
        encode(archive, store, progress=False)
    return store


def to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    return {k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v
            for k, v in batch.items()}


def ready(dm: Any, raw: dict[str, Any], device: torch.device) -> dict[str, Any]:
    """A loader batch as the model sees it: on the device, transformed (by the workers on CPU runs,
    on the device otherwise: what the DataModule's on_after_batch_transfer does in training)."""
    batch = to_device(raw, device)
    return batch if dm.transform_in_workers() else dm.transform(batch, train=True)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def step(model: Any, opt: torch.optim.Optimizer, batch: dict[str, Any], amp: bool) -> None:
    with torch.autocast(device_type=batch["label"].device.type, dtype=torch.bfloat16, enabled=amp):
        logits = model(batch)
    loss = F.binary_cross_entropy_with_logits(logits.float(), batch["label"])
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


def measure(name: str, store: Path, args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    from benmm.data import BigEarthNetDataModule
    from benmm.models import create_model

    opts = {"width": 32} if name == "kbranch" else {}
    model = create_model(name, modality="s1s2", **opts).to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    dm = BigEarthNetDataModule(store, modality="s1s2", batch_size=args.batch_size, num_workers=args.workers,
                               resample="nearest", augment=True, keep_native=model.native_groups,
                               drop_last=True, pin_memory=device.type == "cuda")
    n = args.batch_size

    # in memory: a few real batches, transformed, on the device, cycled
    it = iter(dm.train_dataloader())
    cached = [ready(dm, next(it), device) for _ in range(min(4, args.steps))]
    del it
    for b in cached[: args.warmup]:
        step(model, opt, b, args.amp)
    sync(device)
    t0 = time.perf_counter()
    for i in range(args.steps):
        step(model, opt, cached[i % len(cached)], args.amp)
    sync(device)
    mem = args.steps * n / (time.perf_counter() - t0)

    # DataModule: the loader's workers read the store while the model trains
    loader = dm.train_dataloader()
    done = 0
    t0 = 0.0
    while done < args.steps + args.warmup:
        for raw in loader:
            batch = ready(dm, raw, device)
            step(model, opt, batch, args.amp)
            done += 1
            if done == args.warmup:
                sync(device)
                t0 = time.perf_counter()
            if done == args.steps + args.warmup:
                break
    sync(device)
    real = args.steps * n / (time.perf_counter() - t0)
    return {"model": name, "batch": n, "steps": args.steps, "in_memory": mem, "datamodule": real,
            "ratio": real / mem}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="resnet50,kbranch", help="comma-separated registered models")
    ap.add_argument("--store", type=Path, help="a store to read (default: a cached synthetic one)")
    ap.add_argument("--pairs", type=int, default=600, help="pairs of the synthetic store")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--steps", type=int, default=8, help="timed steps per measurement")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 2) - 1))
    ap.add_argument("--threads", type=int, help="torch compute threads (default: torch's)")
    ap.add_argument("--amp", action="store_true", help="bf16 autocast (GPUs)")
    ap.add_argument("--json", type=Path, help="also write the rows to this JSON file")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    store = args.store or bench_store(args.pairs)
    rows = [measure(name.strip(), store, args, device) for name in args.models.split(",") if name.strip()]
    from rich.console import Console
    from rich.table import Table

    cpu = f"CPU, {torch.get_num_threads()} threads"
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu
    table = Table(title=f"training samples/s, S1+S2 14 bands, {where}, {args.workers} loader workers")
    for col in ("model", "batch", "steps", "in memory", "DataModule", "ratio"):
        table.add_column(col, justify="left" if col == "model" else "right")
    for r in rows:
        table.add_row(r["model"], str(r["batch"]), str(r["steps"]), f"{r['in_memory']:.1f}",
                      f"{r['datamodule']:.1f}", f"{r['ratio']:.2f}")
    Console().print(table)
    if args.json:
        args.json.write_text(json.dumps({"device": where, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
