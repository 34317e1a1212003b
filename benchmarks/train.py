"""Does loading limit training? Training samples/s fed by the real DataModule vs tensors in memory, with
bf16-mixed, channels_last and torch.compile each on and off.

For each model (default ResNet50 S1+S2 early fusion and the K-Branch CNN, all 14 bands) and each variant
(``fp32`` or ``bf16`` autocast = Lightning's bf16-mixed; ``+cl`` = channels_last model and inputs;
``+compile`` = ``torch.compile(model)``, its compile time reported apart), one run measures the same
training step (forward, BCE, backward, AdamW step) twice:

* ``in memory``: batches already transformed and on the device (a fixed set of real batches cycled);
* ``DataModule``: batches from ``BigEarthNetDataModule.train_dataloader()`` (worker processes reading
  the store) moved to the device and transformed there (resample + normalise + flips), as in training.

``ratio = DataModule / in memory`` (target >= 0.95: loading keeps up with the model). The store is a
synthetic archive encoded once into ``$BENMM_BENCH_CACHE`` (default ``~/.cache/benmm-bench``), or any
store given with ``--store``.

    python benchmarks/train.py --device cpu                     # the same table, tiny settings (minutes)
    python benchmarks/train.py --device cuda --steps 50 --batch-size 256 --workers 8   # GPU
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


#: every combination of bf16 autocast, channels_last and torch.compile
VARIANTS = ("fp32", "fp32+cl", "fp32+compile", "fp32+cl+compile", "bf16", "bf16+cl", "bf16+compile",
            "bf16+cl+compile")
#: per device: models, batch, steps, warm-up steps, synthetic pairs (CPU: tiny, to run the table quickly)
DEFAULTS = {"cuda": ("resnet50,kbranch", 256, 30, 3, 2000), "cpu": ("timm:test_resnet,kbranch", 8, 3, 1, 120)}


def channels_last(batch: dict[str, Any]) -> dict[str, Any]:
    return {k: v.contiguous(memory_format=torch.channels_last) if isinstance(v, torch.Tensor) and v.ndim == 4
            else v for k, v in batch.items()}


def step(model: Any, opt: torch.optim.Optimizer, batch: dict[str, Any], amp: bool) -> None:
    with torch.autocast(device_type=batch["label"].device.type, dtype=torch.bfloat16, enabled=amp):
        logits = model(batch)
    loss = F.binary_cross_entropy_with_logits(logits.float(), batch["label"])
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


def measure(name: str, variant: str, store: Path, args: argparse.Namespace, device: torch.device
            ) -> dict[str, Any]:
    from benmm.data import BigEarthNetDataModule
    from benmm.models import create_model

    amp, use_cl, use_compile = variant.startswith("bf16"), "+cl" in variant, "+compile" in variant
    opts = {"width": 32 if device.type == "cuda" else 8} if name == "kbranch" else {}
    torch.manual_seed(0)
    net = create_model(name, modality="s1s2", **opts).to(device).train()
    if use_cl:
        net = net.to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-4)
    model: Any = torch.compile(net) if use_compile else net
    shape = channels_last if use_cl else (lambda b: b)
    t_compile = time.perf_counter()
    dm = BigEarthNetDataModule(store, modality="s1s2", batch_size=args.batch_size, num_workers=args.workers,
                               resample="nearest", augment=True, keep_native=model.native_groups,
                               drop_last=True, pin_memory=device.type == "cuda")
    n = args.batch_size

    # in memory: a few real batches, transformed, on the device, cycled
    it = iter(dm.train_dataloader())
    cached = [shape(ready(dm, next(it), device)) for _ in range(min(4, args.steps))]
    del it
    for b in cached[: max(1, args.warmup)]:
        step(model, opt, b, amp)
    sync(device)
    compile_s = time.perf_counter() - t_compile if use_compile else 0.0
    for b in cached[: args.warmup]:
        step(model, opt, b, amp)
    sync(device)
    t0 = time.perf_counter()
    for i in range(args.steps):
        step(model, opt, cached[i % len(cached)], amp)
    sync(device)
    mem = args.steps * n / (time.perf_counter() - t0)

    # DataModule: the loader's workers read the store while the model trains
    loader = dm.train_dataloader()
    done = 0
    t0 = 0.0
    while done < args.steps + args.warmup:
        for raw in loader:
            batch = shape(ready(dm, raw, device))
            step(model, opt, batch, amp)
            done += 1
            if done == args.warmup:
                sync(device)
                t0 = time.perf_counter()
            if done == args.steps + args.warmup:
                break
    sync(device)
    real = args.steps * n / (time.perf_counter() - t0)
    return {"model": name, "variant": variant, "batch": n, "steps": args.steps, "in_memory": mem,
            "datamodule": real, "ratio": real / mem, "compile_s": compile_s}


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", choices=("auto", "cuda", "cpu"), default="auto",
                    help="cuda when a GPU is there (auto), else cpu with tiny defaults")
    ap.add_argument("--models", help="comma-separated registered models (default: per device)")
    ap.add_argument("--variants", default=",".join(VARIANTS),
                    help=f"comma-separated among {', '.join(VARIANTS)} (default: all)")
    ap.add_argument("--store", type=Path, help="a store to read (default: a cached synthetic one)")
    ap.add_argument("--pairs", type=int, help="pairs of the synthetic store (default: per device)")
    ap.add_argument("--batch-size", type=int)
    ap.add_argument("--steps", type=int, help="timed steps per measurement")
    ap.add_argument("--warmup", type=int)
    ap.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 2) - 1))
    ap.add_argument("--threads", type=int, help="torch compute threads (default: torch's)")
    ap.add_argument("--json", type=Path, help="also write the rows to this JSON file")
    args = ap.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device is visible to torch")
    kind = "cuda" if args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available()) else "cpu"
    models, batch, steps, warmup, pairs = DEFAULTS[kind]
    args.models = args.models or models
    args.batch_size = args.batch_size or batch
    args.steps = args.steps or steps
    args.warmup = warmup if args.warmup is None else args.warmup
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        raise SystemExit(f"unknown variant(s) {', '.join(unknown)}; variants: {', '.join(VARIANTS)}")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(kind)
    store = args.store or bench_store(args.pairs or pairs)
    rows = [measure(name.strip(), variant, store, args, device)
            for name in args.models.split(",") if name.strip() for variant in variants]
    from rich.console import Console
    from rich.table import Table

    cpu = f"CPU, {torch.get_num_threads()} threads"
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu
    table = Table(title=f"training samples/s, S1+S2 14 bands, {where}, {args.workers} loader workers "
                        "(bf16 = bf16-mixed autocast, cl = channels_last)")
    for col in ("model", "variant", "batch", "steps", "in memory", "DataModule", "ratio", "compile s"):
        table.add_column(col, justify="left" if col in ("model", "variant") else "right")
    for r in rows:
        table.add_row(r["model"], r["variant"], str(r["batch"]), str(r["steps"]), f"{r['in_memory']:.1f}",
                      f"{r['datamodule']:.1f}", f"{r['ratio']:.2f}",
                      f"{r['compile_s']:.1f}" if r["compile_s"] else "-")
    Console(width=140).print(table)
    if args.json:
        args.json.write_text(json.dumps({"device": where, "rows": rows}, indent=2))
    return rows


if __name__ == "__main__":
    main()
