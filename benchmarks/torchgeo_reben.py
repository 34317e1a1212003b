"""A real client reads benmm's synthetic reBEN release: TorchGeo's ``BigEarthNetV2`` against benmm's store.

``benmm synth --layout reben-release`` writes reBEN as its publishers release it (``BigEarthNet-S2/``,
``BigEarthNet-S1/``, ``Reference_Maps/`` GeoTIFF folders + ``metadata.parquet`` + the snow/cloud
metadata file); ``benmm encode`` turns it into a store (the maps under rico-hdl's key
``<patch_id>_reference_map``). TorchGeo's ``BigEarthNetV2`` (``bands="all"``, every split) then reads
the same release in the peer virtual environment of ``benchmarks/load.py`` (``~/.cache/benmm-bench/venv``,
created with pip on first use by :func:`load.peer_python`; this file in ``--peer`` mode imports no benmm),
and every array it returns is compared with benmm's store:

* the 10 m bands (B02 B03 B04 B08): TorchGeo reads them with ``out_dtype="int32"`` at their own size,
  so they must equal the store's uint16 values exactly;
* the 20 m / 60 m bands: TorchGeo resamples them to 120x120 with GDAL bilinear while reading (into
  int32); compared with benmm's bilinear upsampling (``align_corners=False``) of the store's native
  arrays (float64): they must agree to within GDAL's rounding to integers (max |diff| <= 0.5 DN, plus
  0.01 for GDAL's float arithmetic near a .5);
* S1 (TorchGeo: files sorted by name, i.e. VH before VV; ``out_dtype="int32"``): compared with the
  store's float32 dB cast the way GDAL casts (the script reports whether that is truncation or rounding);
* the reference map: TorchGeo's ``mask`` is the map with its 20-code ``clc_codes`` table applied in
  place; benmm's stored raw codes with the same table applied must equal it exactly (the script also
  counts the pixels TorchGeo leaves as raw CLC codes because its table lacks them);
* labels: as sets of class names (TorchGeo sorts its classes alphabetically).

    python benchmarks/torchgeo_reben.py --pairs 24
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from load import CACHE, peer_python  # the peer venv helper (a stdlib-only module)

SPLITS = ("train", "val", "test")


# ----------------------------------------------------------------------------------------------
# peer side: runs inside the peer venv, imports torchgeo, never benmm
def peer_main(job_path: str) -> None:
    import glob

    import numpy as np
    import torchgeo
    from torchgeo.datasets import BigEarthNetV2
    from torchgeo.datasets.utils import sort_sentinel2_bands

    job = json.loads(Path(job_path).read_text())
    out: dict[str, Any] = {"torchgeo": torchgeo.__version__, "class_set": list(BigEarthNetV2.class_set),
                           "clc_codes": {str(k): v for k, v in BigEarthNetV2.clc_codes.items()},
                           "split_map": dict(getattr(BigEarthNetV2, "split_map", {})), "ids": {}}
    arrays: dict[str, np.ndarray] = {}
    for split in SPLITS:
        ds = BigEarthNetV2(job["root"], split=split, bands="all")
        ids = [str(x) for x in ds.metadata_df["patch_id"]]
        out["ids"][split] = ids
        if not ids:
            continue
        samples = [ds[i] for i in range(len(ds))]
        for key in ("image_s2", "image_s1", "mask", "label"):
            arrays[f"{split}/{key}"] = np.stack([s[key].numpy() for s in samples])
    # the channel order TorchGeo's _load_image uses: every *.tif of the patch folder, sorted its way
    pid = next(ids[0] for ids in out["ids"].values() if ids)
    s2 = glob.glob(os.path.join(job["root"], "BigEarthNet-S2", pid.rsplit("_", 2)[0], pid, "*.tif"))
    out["s2_order"] = [Path(p).stem.rsplit("_", 1)[1] for p in sorted(s2, key=sort_sentinel2_bands)]
    s1 = job["s1_of"][pid]
    s1_files = glob.glob(os.path.join(job["root"], "BigEarthNet-S1", s1.rsplit("_", 3)[0], s1, "*.tif"))
    out["s1_order"] = [Path(p).stem.rsplit("_", 1)[1] for p in sorted(s1_files)]
    np.savez(job["arrays"], **arrays)
    Path(job["result"]).write_text(json.dumps(out))


# ----------------------------------------------------------------------------------------------
# benmm side
def compare(store: Any, peer: dict[str, Any], arrays: Any) -> list[tuple[str, str, str, str]]:
    """Rows (what, compared how, measured, pass/FAIL)."""
    import numpy as np
    import torch

    from benmm.bands import BAND_SIZE, S1_BANDS, S2_BANDS
    from benmm.data.transforms import resample

    ids = [(split, i, pid) for split in SPLITS for i, pid in enumerate(peer["ids"][split])]
    rows: list[tuple[str, str, str, str]] = []
    s2_order, s1_order = peer["s2_order"], peer["s1_order"]
    rows.append(("S2 channel order", "TorchGeo's file sort", " ".join(s2_order),
                 "pass" if s2_order == list(S2_BANDS) else "FAIL"))
    rows.append(("S1 channel order", "TorchGeo's file sort", " ".join(s1_order),
                 "pass" if sorted(s1_order) == sorted(S1_BANDS) else "FAIL"))
    tg = {(split, i): {k: arrays[f"{split}/{k}"][i] for k in ("image_s2", "image_s1", "mask", "label")}
          for split, i, _ in ids}
    for ch, band in enumerate(s2_order):
        diffs = []
        for split, i, pid in ids:
            ours = store.read(pid, [band])[band]
            theirs = tg[(split, i)]["image_s2"][ch]
            if BAND_SIZE[band] == 120:
                diffs.append(np.abs(theirs.astype(np.float64) - ours.astype(np.float64)))
            else:
                up = resample(torch.from_numpy(ours.astype(np.float64))[None, None], 120, "bilinear")[0, 0]
                diffs.append(np.abs(theirs.astype(np.float64) - up.numpy().astype(np.float64)))
        d = np.stack(diffs)
        if BAND_SIZE[band] == 120:
            rows.append((f"S2 {band}", "exact (int32 of uint16)", f"max |diff| {d.max():.0f}",
                         "pass" if d.max() == 0 else "FAIL"))
        else:  # the same bilinear, GDAL's rounded to int32: half a DN apart at most, plus GDAL's own
            # float rounding where a value lies that close to .5 (float32 spacing at ~10^4 DN is ~0.001)
            rows.append((f"S2 {band} ({BAND_SIZE[band]}->120)", "GDAL bilinear (int32) vs benmm bilinear",
                         f"max |diff| {d.max():.3f}, mean {d.mean():.3f} DN",
                         "pass" if d.max() <= 0.51 else "FAIL"))
    for ch, band in enumerate(s1_order):
        trunc, rnd = [], []
        for split, i, pid in ids:
            ours = store.read(store.s1_key(pid), [band])[band].astype(np.float64)
            theirs = tg[(split, i)]["image_s1"][ch].astype(np.float64)
            trunc.append(np.abs(theirs - np.trunc(ours)).max())
            rnd.append(np.abs(theirs - np.rint(ours)).max())
        how = "truncation" if max(trunc) == 0 else "rounding" if max(rnd) == 0 else "neither"
        rows.append((f"S1 {band}", "int32 cast of benmm's float dB", f"equal by {how}",
                     "pass" if how != "neither" else "FAIL"))
    table = {int(k): v for k, v in peer["clc_codes"].items()}
    bad = raw_left = total = 0
    for split, i, pid in ids:
        ours = store.reference_map(pid).astype(np.int64)
        expect = ours.copy()
        for code, ordinal in table.items():  # TorchGeo's in-place remap, applied to benmm's raw codes
            expect[expect == code] = ordinal
        theirs = tg[(split, i)]["mask"].reshape(120, 120)
        bad += int((theirs != expect).sum())
        raw_left += int((~np.isin(ours, list(table))).sum())
        total += ours.size
    rows.append(("reference map", "TorchGeo mask == its remap of benmm's raw codes",
                 f"{bad} of {total} px differ", "pass" if bad == 0 else "FAIL"))
    rows.append(("  (TorchGeo remap)", "codes outside its 20-code table stay raw",
                 f"{raw_left} px ({100 * raw_left / max(total, 1):.1f}%)", "note"))
    classes = peer["class_set"]
    wrong = sum(set(store.row(pid)["labels"]) != {classes[j] for j in np.flatnonzero(tg[(s, i)]["label"])}
                for s, i, pid in ids)
    rows.append(("labels", "sets of names", f"{wrong} of {len(ids)} differ",
                 "pass" if wrong == 0 else "FAIL"))
    return rows


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pairs", type=int, default=24, help="synthetic pairs (default 24)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--venv", type=Path, default=CACHE / "venv", help="peer environment (torchgeo)")
    ap.add_argument("--no-install", action="store_true", help="do not create the peer environment")
    ap.add_argument("--peer", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.peer:
        peer_main(args.peer)
        return

    import numpy as np

    from benmm.ingest import encode
    from benmm.synth.archive import synthesize

    py, reason = peer_python(args.venv, install=not args.no_install)
    if py is None:
        sys.exit(f"no TorchGeo: {reason}")
    with tempfile.TemporaryDirectory(prefix="benmm-tg-reben-") as tmp:
        work = Path(tmp)
        root = work / "reben-release"
        summary = synthesize(root, pairs=args.pairs, seed=args.seed, layout="reben-release")
        store = encode(root, work / "reben.store", progress=False)
        job = {"root": str(root), "arrays": str(work / "tg.npz"), "result": str(work / "tg.json"),
               "s1_of": {pid: store.s1_key(pid) for pid in store.names()}}
        (work / "job.json").write_text(json.dumps(job))
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # the peer never sees benmm
        done = subprocess.run([str(py), __file__, "--peer", str(work / "job.json")], env=env,
                              capture_output=True, text=True)
        if done.returncode:
            sys.exit(f"TorchGeo failed to read the release:\n{done.stderr[-3000:]}")
        peer = json.loads(Path(job["result"]).read_text())
        with np.load(job["arrays"]) as arrays:
            rows = compare(store, peer, arrays)
        read = {s: len(v) for s, v in peer["ids"].items()}
        print(f"TorchGeo {peer['torchgeo']} BigEarthNetV2(bands='all') on benmm's synthetic reBEN release: "
              f"{summary.pairs} pairs written ({len(store)} in the store, "
              f"{store.manifest['reference_maps']['count'] if store.manifest else 0} reference maps); "
              f"TorchGeo read {sum(read.values())} ({', '.join(f'{k} {v}' for k, v in read.items())}; "
              "it reads metadata.parquet only, not the snow/cloud file)")
        width = [max(len(r[c]) for r in rows) for c in range(4)]
        heads = ("what", "compared", "measured", "result")
        width = [max(w, len(h)) for w, h in zip(width, heads, strict=True)]
        for r in (heads, *rows):
            print("  ".join(c.ljust(w) for c, w in zip(r, width, strict=True)).rstrip())
        failed = [r[0] for r in rows if r[3] == "FAIL"]
        print("all pass" if not failed else f"FAILED: {', '.join(failed)}")
        if failed:
            sys.exit(1)


if __name__ == "__main__":
    main()
