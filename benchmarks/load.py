"""Loading speed and correctness: benmm vs ConfigILM ``BENv2DataSet`` vs TorchGeo ``BigEarthNet``.

One run over the same synthetic archive, page cache warmed for all three, torch intra-op threads 1 in
every process (DataLoader workers use 1 anyway; more threads only spin on a shared 2-core machine).
The archive (``--pairs``, default 20,000): its v1 folders for TorchGeo, its
benmm store (encoded from those folders) for benmm and ConfigILM. S1+S2, all 14 bands, 120x120,
normalised. Rows:

* ``getitem``: per-sample ``dataset[i]`` in one process, shuffled order (benmm returns native sizes and
  leaves resampling/normalisation to the batch transform; the extra row "benmm getitem + per-sample
  transform" pays for them per sample, like the peers do);
* ``DataLoader``: 2 workers, batch 64, shuffled, including the batch transform (benmm: the DataModule's
  loader and transform, ``--resample`` mode, which on a CPU-only machine runs in the workers;
  TorchGeo: batch normalisation in the main process, as its DataModule does; ConfigILM: its per-sample
  nearest interpolation + a ``Normalize`` transform, in the workers); timed epoch after epoch (a new
  iterator per epoch) until ``--seconds`` have passed, workers persistent or not for all three alike
  (default on, as benmm's and TorchGeo's DataModules set it: a training loop's throughput, not the
  start of fresh worker processes every epoch; ``--no-persistent-workers`` for new workers per epoch);
* ``raw LMDB``: plain ``txn.get`` of the S2 and S1 key of each pair (the bound for a store reader).

TorchGeo and ConfigILM are never installed into the project's environment: the script makes a separate
virtual environment (default ``~/.cache/benmm-bench/venv``) with pip and runs the peer measurements in
it as a subprocess (this file in ``--peer`` mode, which imports no benmm). If they cannot be installed
the peer columns say why.

Correctness (same run): for a few pairs, benmm's pixels equal tifffile's reading of the GeoTIFFs; ConfigILM
equals benmm with ``resample="nearest"`` bit for bit, labels equal in alphabetical order; TorchGeo equals
benmm on the 10 m bands, its S1 is benmm's dB truncated to integers (TorchGeo reads with
``out_dtype="int32"``), its 20 m / 60 m bands are GDAL bilinear resampling (compared to benmm bilinear,
max/mean difference printed), labels equal as sets of names (TorchGeo sorts classes alphabetically).

    python benchmarks/load.py --pairs 2000
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

CACHE = Path(os.environ.get("BENMM_BENCH_CACHE", Path.home() / ".cache" / "benmm-bench"))
PEER_PACKAGES = ["torch==2.14.1", "torchvision==0.29.1", "torchgeo", "configilm", "lmdb", "safetensors",
                 "pandas", "pyarrow<18"]  # configilm pins numpy<2; newer pyarrow needs numpy 2
CHECK_PAIRS = 8
BATCH = 64
WORKERS = 2


# ----------------------------------------------------------------------------------------------
# shared timing helpers (used by both sides; stdlib only)
def time_getitem(get: Any, order: list[int], seconds: float) -> tuple[float, int]:
    get(order[0])  # warm-up (opens files/LMDB)
    start = time.perf_counter()
    n = 0
    for i in order[1:]:
        get(i)
        n += 1
        if time.perf_counter() - start > seconds:
            break
    return n / (time.perf_counter() - start), n


def time_loader(epoch: Any, after: Any, seconds: float) -> tuple[float, int]:
    """Samples/s of ``epoch()`` (a new iterator over the loader per call), epoch after epoch until
    ``seconds`` have passed: a small archive's epoch is only a dozen batches, too short to measure.
    The first epoch's worker start-up and first batch are not timed; later epochs' start-up is, unless
    the workers persist (``--persistent-workers``, the same for every library)."""
    it = epoch()
    after(next(it))
    start = time.perf_counter()
    n = 0
    while True:
        for batch in it:
            after(batch)
            n += len(batch["name"]) if isinstance(batch, dict) and "name" in batch else len(batch[0])
            if time.perf_counter() - start > seconds:
                break
        else:
            it = epoch()
            continue
        break
    elapsed = time.perf_counter() - start
    return (n / elapsed if n else 0.0), n


# ----------------------------------------------------------------------------------------------
# peer side: runs inside the separate venv, imports torchgeo / configilm, never benmm
def peer_main(job_path: str) -> None:
    import numpy as np
    import torch
    from torch.utils.data import DataLoader

    job = json.loads(Path(job_path).read_text())
    torch.set_num_threads(1)  # as in DataLoader workers; more threads spin on this shared 2-core box
    order: list[int] = job["order"]
    out: dict[str, Any] = {"versions": {}}
    arrays: dict[str, np.ndarray] = {}
    mean = torch.tensor(job["mean_tg"]).view(-1, 1, 1)
    std = torch.tensor(job["std_tg"]).view(-1, 1, 1)

    try:
        import configilm
        from configilm.extra.BENv2_utils import NEW_LABELS, band_combi_to_mean_std
        from configilm.extra.DataSets.BENv2_DataSet import BENv2DataSet
        from torchvision.transforms import Normalize

        out["versions"]["configilm"] = getattr(configilm, "__version__", "?")
        names = set(job["names"])
        dirs = {"images_lmdb": job["lmdb"], "metadata_parquet": job["metadata"],
                "metadata_snow_cloud_parquet": job["metadata_flagged"]}
        cm, cs = band_combi_to_mean_std("ALL", "120_nearest")  # VV, VH, B01..B12 like img_size 14
        norm = Normalize(torch.tensor(cm, dtype=torch.float32), torch.tensor(cs, dtype=torch.float32))
        kw = dict(split="train", img_size=(14, 120, 120), patch_prefilter=names.__contains__,
                  return_extras=True)
        ds = BENv2DataSet(dirs, transform=norm, **kw)
        assert len(ds) == len(names), (len(ds), len(names))
        for i in range(len(ds)):  # warm-up pass: this process maps the LMDB pages, as benmm's does
            ds[i]
        out["configilm_getitem"] = time_getitem(ds.__getitem__, order, job["seconds"])
        loader = DataLoader(ds, batch_size=BATCH, num_workers=WORKERS, shuffle=True,
                            persistent_workers=job["persistent"])
        out["configilm_loader"] = time_loader(lambda: iter(loader), lambda b: None, job["seconds"])
        ds.transform = None  # raw pixels for the comparison (a second dataset would reopen the LMDB)
        idx = {n: i for i, n in enumerate(ds.patches)}
        for k, name in enumerate(job["check"]):
            img, lab, _ = ds[idx[name]]
            arrays[f"configilm_img_{k}"] = np.asarray(img, dtype=np.float32)
            out.setdefault("configilm_labels", []).append(
                [NEW_LABELS[j] for j in np.flatnonzero(np.asarray(lab))])
    except Exception as exc:  # report, do not hide: the table says why the column is empty
        out["configilm_error"] = f"{type(exc).__name__}: {exc}"

    try:
        import torchgeo
        from torchgeo.datasets import BigEarthNet

        out["versions"]["torchgeo"] = torchgeo.__version__

        def normalise(sample: dict[str, Any]) -> dict[str, Any]:
            sample["image"] = (sample["image"] - mean) / std
            return sample

        tg = BigEarthNet(job["tg_root"], split="train", bands="all", num_classes=19, transforms=normalise)
        assert len(tg) == len(job["names"]), (len(tg), len(job["names"]))
        out["torchgeo_getitem"] = time_getitem(tg.__getitem__, order, job["seconds"])
        tg_raw = BigEarthNet(job["tg_root"], split="train", bands="all", num_classes=19)
        loader = DataLoader(tg_raw, batch_size=BATCH, num_workers=WORKERS, shuffle=True,
                            persistent_workers=job["persistent"])

        def batch_norm(b: dict[str, Any]) -> None:
            b["image"] = (b["image"] - mean) / std

        out["torchgeo_loader"] = time_loader(
            lambda: ({"name": b["label"], **b} for b in loader), batch_norm, job["seconds"])
        pos = {n: i for i, n in enumerate(job["names"])}
        classes = BigEarthNet.class_sets[19]
        for k, name in enumerate(job["check"]):
            s = tg_raw[pos[name]]
            arrays[f"torchgeo_img_{k}"] = s["image"].numpy()
            out.setdefault("torchgeo_labels", []).append([classes[j] for j in np.flatnonzero(s["label"])])
    except Exception as exc:
        out["torchgeo_error"] = f"{type(exc).__name__}: {exc}"

    np.savez(job["arrays"], **arrays)
    Path(job["result"]).write_text(json.dumps(out))


# ----------------------------------------------------------------------------------------------
# benmm side
def peer_python(venv: Path, install: bool, packages: list[str] | None = None,
                imports: str = "torchgeo, configilm, pyarrow") -> tuple[Path | None, str]:
    """The peer venv's python (created and filled with pip on first use), or None and the reason.
    ``imports``: what must import there (``benchmarks/interop_configilm.py`` asks for ConfigILM's model)."""
    packages = PEER_PACKAGES if packages is None else packages
    py = venv / "bin" / "python"
    probe = [str(py), "-c", f"import {imports}"]
    if py.exists() and subprocess.run(probe, capture_output=True).returncode == 0:
        return py, ""
    if not install:
        return None, f"no peer environment at {venv} (run without --no-install to create it)"
    print(f"creating the peer environment {venv} (pip install {' '.join(packages)}) ...", flush=True)
    venv.parent.mkdir(parents=True, exist_ok=True)
    if not py.exists():
        made = subprocess.run([sys.executable, "-m", "venv", str(venv)], capture_output=True, text=True)
        if made.returncode:
            return None, f"cannot create a venv: {made.stderr.strip()[-300:]}"
    pip = subprocess.run([str(py), "-m", "pip", "install", "-q", *packages], capture_output=True,
                         text=True)
    if pip.returncode or subprocess.run(probe, capture_output=True).returncode:
        tail = (pip.stderr or pip.stdout).strip().splitlines()[-3:]
        return None, "pip could not install torchgeo/configilm: " + " | ".join(tail)
    return py, ""


def prepare(pairs: int, seed: int, work: Path) -> tuple[Path, Path]:
    """(v1 archive root, benmm store) of a synthetic archive, made once and reused."""
    from benmm.ingest.pipeline import encode
    from benmm.synth.archive import synthesize

    root = work / f"synth-v1-{pairs}-s{seed}"
    store = work / f"synth-{pairs}-s{seed}.store"
    if not root.exists():
        t = time.perf_counter()
        print(f"synthesising {pairs} pairs (v1 folders) in {root} ...", flush=True)
        synthesize(root, pairs=pairs, seed=seed, layout="v1")
        print(f"  {time.perf_counter() - t:.0f} s", flush=True)
    if not (store / "benmm-store.json").exists():
        t = time.perf_counter()
        print(f"encoding {root} -> {store} ...", flush=True)
        encode(root, store, workers=os.cpu_count() or 1)
        print(f"  {time.perf_counter() - t:.0f} s", flush=True)
    return root, store


def write_peer_inputs(root: Path, store: Any, names: list[str], work: Path) -> dict[str, str]:
    """TorchGeo's split CSVs (exactly benmm's pairs) and ConfigILM's (empty) flagged-metadata file."""
    meta = store.metadata.set_index("patch_id")
    lines = "\n".join(f"{n},{meta.loc[n, 's1_name']}" for n in names) + "\n"
    for split in ("train", "val", "test"):
        (root / f"bigearthnet-{split}.csv").write_text(lines if split == "train" else "")
    flagged = work / "metadata_flagged_empty.parquet"
    store.metadata.iloc[:0].drop(columns=["labels43"]).to_parquet(flagged)
    return {"tg_root": str(root), "lmdb": str(store.lmdb_path),
            "metadata": str(store.path / "metadata.parquet"), "metadata_flagged": str(flagged)}


def warm(root: Path, ds: Any, store: Any) -> None:
    """Warm the page cache for every library alike: read every GeoTIFF (TorchGeo) and every LMDB
    value (benmm, ConfigILM) of the measured pairs once; benmm's and ConfigILM's processes each make
    one full pass first (mapping the LMDB pages into the process)."""
    s1_of = store.metadata.set_index("patch_id")["s1_name"]
    for name in ds.names:
        for folder, pname in (("BigEarthNet-v1.0", name), ("BigEarthNet-S1-v1.0", str(s1_of[name]))):
            for f in (root / folder / pname).iterdir():
                f.read_bytes()
    for i in range(len(ds)):
        ds[i]


def check_tifffile(root: Path, ds: Any, names: list[str]) -> str:
    import numpy as np
    import tifffile

    meta = ds.store.metadata.set_index("patch_id")
    bad = 0
    for name in names:
        s = ds[ds.names.index(name)]
        s1 = meta.loc[name, "s1_name"]
        for key, (bands, _) in ds.layout.items():
            for ch, band in enumerate(bands):
                folder = root / ("BigEarthNet-S1-v1.0" if key == "s1" else "BigEarthNet-v1.0")
                pname = s1 if key == "s1" else name
                ref = tifffile.imread(folder / pname / f"{pname}_{band}.tif").astype(np.float32)
                bad += not np.array_equal(s[key][ch].numpy(), ref)
    return f"tifffile: {len(names)} pairs x 14 bands, {'all equal' if not bad else f'{bad} bands DIFFER'}"


def compare_peers(ds: Any, names: list[str], result: dict[str, Any], arrays_path: Path) -> list[str]:
    import numpy as np

    from benmm.data import BatchTransform
    from benmm.labels import label_names

    lines = []
    arrays = np.load(arrays_path) if arrays_path.exists() else {}
    near = BatchTransform(ds.bands, resample="nearest", stats=None)
    bil = BatchTransform(ds.bands, resample="bilinear", stats=None)
    alpha = label_names(19, "alphabetical")
    s2_order = list(ds.bands[:12])
    if "configilm_img_0" in arrays:
        equal, labels_ok = 0, 0
        for k, name in enumerate(names):
            b = near(ds.get_batch([ds.names.index(name)]))
            ours = np.concatenate([b["s1"][0].numpy(), b["s2"][0].numpy()])  # ConfigILM: VV, VH, B01..B12
            equal += np.array_equal(ours, arrays[f"configilm_img_{k}"])
            mine = sorted(label_names(19)[j] for j in np.flatnonzero(b["label"][0].numpy()))
            labels_ok += mine == sorted(result["configilm_labels"][k])
        lines.append(f"ConfigILM vs benmm (nearest): pixels equal in {equal}/{len(names)} pairs, "
                     f"labels equal in {labels_ok}/{len(names)} (ConfigILM's class order is alphabetical: "
                     f"{alpha[0]!r} first)")
    if "torchgeo_img_0" in arrays:
        ten = [s2_order.index(b) for b in ("B02", "B03", "B04", "B08")]
        other = [s2_order.index(b) for b in ("B01", "B05", "B06", "B07", "B8A", "B09", "B11", "B12")]
        eq10, s1_trunc, labels_ok, diffs = 0, 0, 0, []
        for k, name in enumerate(names):
            b = bil(ds.get_batch([ds.names.index(name)]))
            tg = arrays[f"torchgeo_img_{k}"]  # VH, VV (sorted file names), then B01..B12
            tg_s1, tg_s2 = tg[[1, 0]], tg[2:]
            ours_s1, ours_s2 = b["s1"][0].numpy(), b["s2"][0].numpy()
            eq10 += np.array_equal(tg_s2[ten], ours_s2[ten])
            s1_trunc += np.array_equal(tg_s1, np.trunc(ours_s1)) or np.array_equal(tg_s1, np.round(ours_s1))
            diffs.append(np.abs(tg_s2[other] - ours_s2[other]))
            mine = sorted(label_names(19)[j] for j in np.flatnonzero(b["label"][0].numpy()))
            labels_ok += mine == sorted(result["torchgeo_labels"][k])
        d = np.stack(diffs)
        lines.append(f"TorchGeo vs benmm: 10 m bands equal in {eq10}/{len(names)}; S1 = benmm's dB "
                     f"rounded to integers in {s1_trunc}/{len(names)} (TorchGeo reads int32); 20/60 m bands "
                     f"(GDAL bilinear vs torch bilinear, align_corners=False; int32): max |diff| "
                     f"{d.max():.0f} DN, mean {d.mean():.2f} DN; labels equal as name sets in "
                     f"{labels_ok}/{len(names)}")
    return lines


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pairs", type=int, default=20_000, help="synthetic pairs (default 20,000)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--work", type=Path, default=CACHE / "data", help="where archives/stores are cached")
    ap.add_argument("--venv", type=Path, default=CACHE / "venv",
                    help="peer environment (torchgeo, configilm)")
    ap.add_argument("--no-install", action="store_true", help="do not create the peer environment")
    ap.add_argument("--no-peers", action="store_true", help="benmm rows only")
    ap.add_argument("--seconds", type=float, default=20.0, help="time budget per measurement")
    ap.add_argument("--resample", default="bilinear", help="benmm's DataLoader-row resampling mode")
    ap.add_argument("--persistent-workers", action=argparse.BooleanOptionalAction, default=True,
                    help="DataLoader workers persist across epochs, for all three libraries alike (the "
                         "default of benmm's and TorchGeo's DataModules; ConfigILM's does not set it)")
    ap.add_argument("--peer", help=argparse.SUPPRESS)
    ap.add_argument("--prepare-only", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.peer:
        peer_main(args.peer)
        return

    import numpy as np
    import torch

    from benmm.data import BigEarthNetDataModule, BigEarthNetDataset
    from benmm.data.transforms import BatchTransform, transform_sample
    from benmm.store import Store

    torch.set_num_threads(1)  # the same for the peers (see peer_main)
    args.work.mkdir(parents=True, exist_ok=True)
    if args.prepare_only:
        prepare(args.pairs, args.seed, args.work)
        return
    # synthesise + encode in a child process: this process then holds no writer state of the store
    cmd = [sys.executable, __file__, "--prepare-only", "--pairs", str(args.pairs), "--seed", str(args.seed),
           "--work", str(args.work)]
    if subprocess.run(cmd).returncode:
        sys.exit("could not prepare the synthetic archive and its store")
    root, store_path = prepare(args.pairs, args.seed, args.work)  # both exist now: returns the paths
    store = Store.open(store_path)
    ds = BigEarthNetDataset(store, split="train")
    names = ds.names
    rng = np.random.default_rng(args.seed)
    order = rng.permutation(len(ds)).tolist()
    check = [names[i] for i in order[:CHECK_PAIRS]]
    print(f"{len(ds)} train pairs (recommended set) of a {args.pairs}-pair synthetic archive; "
          f"{os.cpu_count()} CPUs; load average {os.getloadavg()[0]:.1f}", flush=True)

    warm(root, ds, store)
    res: dict[str, Any] = {}
    res["benmm_getitem"] = time_getitem(ds.__getitem__, order, args.seconds)
    tf = BatchTransform(ds.bands, resample=args.resample, stats="v1")
    res["benmm_getitem_tf"] = time_getitem(lambda i: transform_sample(ds[i], tf), order, args.seconds)
    dm = BigEarthNetDataModule(store, batch_size=BATCH, num_workers=WORKERS, resample=args.resample,
                               stats="v1", persistent_workers=args.persistent_workers)
    # on this CPU-only machine the DataModule runs the batch transform in its 2 workers
    # (transform_on="auto"); on a GPU it runs on the device after transfer
    loader = dm.train_dataloader()
    res["benmm_loader"] = time_loader(lambda: iter(loader), lambda b: dm.on_after_batch_transfer(b, 0),
                                      args.seconds)
    res["benmm_loader_mode"] = ("worker" if dm.transform_in_workers() else "device", 0)
    s1_of = store.metadata.set_index("patch_id")["s1_name"]
    keys = [(n.encode(), str(s1_of[n]).encode()) for n in names]
    env = store.env()  # the store's LMDB handle of this process: plain py-lmdb below, no benmm code

    def raw_get(i: int) -> None:  # one read transaction, two txn.get (each a copy to bytes)
        with env.begin() as txn:
            txn.get(keys[i][0])
            txn.get(keys[i][1])

    res["raw_lmdb"] = time_getitem(raw_get, order, min(args.seconds, 10))
    print("benmm: " + ", ".join(f"{k} {v[0]:,.0f}/s" for k, v in res.items() if k != "benmm_loader_mode"),
          flush=True)
    notes = [check_tifffile(root, ds, check)]

    peer: dict[str, Any] = {}
    if args.no_peers:
        peer_reason = "--no-peers"
    else:
        py, peer_reason = peer_python(args.venv, install=not args.no_install)
        if py is not None:
            inputs = write_peer_inputs(root, store, names, args.work)
            v1 = __import__("benmm.bands", fromlist=["stats_v1"]).stats_v1()
            tg_bands = ["VH", "VV", *ds.bands[:12]]
            job = {**inputs, "names": names, "order": order, "check": check, "seconds": args.seconds,
                   "persistent": args.persistent_workers,
                   "mean_tg": [v1.mean[b] for b in tg_bands], "std_tg": [v1.std[b] for b in tg_bands],
                   "arrays": str(args.work / "peer-arrays.npz"),
                   "result": str(args.work / "peer-result.json")}
            job_path = args.work / "peer-job.json"
            job_path.write_text(json.dumps(job))
            print(f"peer measurements in {args.venv} ...", flush=True)
            run = subprocess.run([str(py), __file__, "--peer", str(job_path)], capture_output=True, text=True)
            if run.returncode:
                peer_reason = "peer run failed: " + " | ".join(run.stderr.strip().splitlines()[-3:])
            else:
                peer = json.loads(Path(job["result"]).read_text())
                notes += compare_peers(ds, check, peer, Path(job["arrays"]))
    print_table(res, peer, peer_reason, notes, args)


def print_table(res: dict[str, Any], peer: dict[str, Any], reason: str, notes: list[str], args: Any) -> None:
    def fmt(v: Any) -> str:
        return f"{v[0]:>9,.0f}/s" if v else "        -  "

    def ratio(a: Any, b: Any) -> str:
        return f"{a[0] / b[0]:>7.1f}x" if a and b and b[0] else "      - "

    cg, tg = peer.get("configilm_getitem"), peer.get("torchgeo_getitem")
    cl, tl = peer.get("configilm_loader"), peer.get("torchgeo_loader")
    print()
    print(f"S1+S2, 14 bands, 120x120, normalised; {args.pairs} synthetic pairs; "
          f"benmm resample={args.resample}")
    print(f"{'row':<34}{'benmm':>12}{'ConfigILM':>12}{'TorchGeo':>12}{'vs ConfigILM':>14}{'vs TorchGeo':>13}")
    print(f"{'getitem (native, no transform)':<34}{fmt(res['benmm_getitem'])}{fmt(cg)}{fmt(tg)}"
          f"{ratio(res['benmm_getitem'], cg):>14}{ratio(res['benmm_getitem'], tg):>13}")
    print(f"{'getitem + per-sample transform':<34}{fmt(res['benmm_getitem_tf'])}{fmt(cg)}{fmt(tg)}"
          f"{ratio(res['benmm_getitem_tf'], cg):>14}{ratio(res['benmm_getitem_tf'], tg):>13}")
    print(f"{'DataLoader (2 workers, batch 64)':<34}{fmt(res['benmm_loader'])}{fmt(cl)}{fmt(tl)}"
          f"{ratio(res['benmm_loader'], cl):>14}{ratio(res['benmm_loader'], tl):>13}")
    print(f"{'raw LMDB get (S2 + S1 key)':<34}{fmt(res['raw_lmdb'])}")
    print(f"benmm DataLoader: batch transform ran in the {res['benmm_loader_mode'][0]} "
          "(DataModule transform_on='auto'); torch intra-op threads: 1 in every process")
    print(f"DataLoader row: whole epochs for {args.seconds:.0f} s each, persistent workers "
          f"{'on' if args.persistent_workers else 'off'} for all three")
    for side in ("configilm", "torchgeo"):
        if f"{side}_error" in peer:
            print(f"{side}: {peer[side + '_error']}")
    if reason:
        print(f"peers not measured: {reason}")
    if peer.get("versions"):
        print("peer versions: " + ", ".join(f"{k} {v}" for k, v in peer["versions"].items()))
    for line in notes:
        print("correctness: " + line)
    print(f"load average after the run: {os.getloadavg()[0]:.1f} (the machine is shared; figures vary)")


if __name__ == "__main__":
    main()
