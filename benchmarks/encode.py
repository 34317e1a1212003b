"""Encoding speed: `benmm encode` (1 worker, one per core, the default) vs a straightforward baseline.

    python benchmarks/encode.py [--pairs 20000] [--workers N] [--cache DIR] [--configilm]
    python benchmarks/encode.py --from-tar [--pairs 2000] [--release v1|reben|both]

The synthetic v1 archive (``benmm.synth.archive``, real on-disk format) is generated once into the cache
folder (default ``$BENMM_CACHE_DIR/bench`` or ``~/.cache/benmm/bench``) and reused. Its files are read
before each run so every method starts from a warm page cache. Each method runs in its own process;
the table shows wall time, pairs/s, CPU seconds (all its processes) and the ratio to the baseline. The
baseline is what public tools do: per pair, ``tifffile.imread`` each band file, read the JSONs,
``safetensors.numpy.save``, ``txn.put`` into LMDB (default LMDB settings), one process. After the runs
the script checks that the baseline's values and benmm's are byte-identical.

``--configilm`` also creates a separate virtual environment in the cache folder (never touching the
project's), installs ``configilm`` there, and shows its BENv2 dataset reading the benmm store; the row
is skipped with the reason when that is not possible (e.g. no network).

``--from-tar`` packs the synthetic archive as the published tarballs (``.tar.gz`` and ``.tar.zst``,
``benmm.synth.pack``) and compares, in one run: ``benmm encode`` of the extracted folders (the reference),
``tar -x`` then ``benmm encode`` of the folders, and ``benmm encode`` of the two tarballs. With
``--release reben`` (or ``both``, the default) the same for a synthetic reBEN release
(``--layout reben-release``) packed as its three ``.tar.zst`` tarballs, encoded with ``--metadata``.
Columns: wall time, CPU time (every process), the peak disk used besides the store (the extracted
files), pairs/s and the ratio to the folder encode. The tarballs are read before each run (warm page cache).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve()


def _cache(arg: str | None) -> Path:
    if arg:
        return Path(arg)
    base = os.environ.get("BENMM_CACHE_DIR")
    return (Path(base) if base and base != "off" else Path.home() / ".cache" / "benmm") / "bench"


def _archive(cache: Path, pairs: int, seed: int, workers: int, layout: str = "v1") -> Path:
    from benmm.synth.archive import synthesize

    root = cache / f"synth-{layout}-{pairs}-seed{seed}"
    if not root.is_dir():
        print(f"generating a synthetic {layout} archive of {pairs:,} pairs in {root} (once) ...", flush=True)
        s = synthesize(root, pairs=pairs, seed=seed, workers=workers, layout=layout)  # type: ignore[arg-type]
        print(f"  {s.pairs:,} pairs in {s.seconds:.0f} s ({s.rate:,.0f} pairs/s)", flush=True)
    return root


def _warm(root: Path) -> int:
    total = 0
    for dirpath, _, files in os.walk(root):
        for name in files:
            with open(os.path.join(dirpath, name), "rb") as fh:
                total += len(fh.read())
    return total


# ---- the methods (each runs in its own process via --run) -----------------------------------
def baseline(src: Path, dst: Path) -> int:
    """The straightforward encoder: tifffile per band file -> safetensors -> LMDB put, one process."""
    import lmdb
    import pandas as pd
    import safetensors.numpy
    import tifffile

    s2_root, s1_root = src / "BigEarthNet-v1.0", src / "BigEarthNet-S1-v1.0"
    s1_of = {}
    for s1 in sorted(os.listdir(s1_root)):  # pair through the S1 JSONs, as the archive documents
        meta = json.loads((s1_root / s1 / f"{s1}_labels_metadata.json").read_text())
        s1_of[meta["corresponding_s2_patch"]] = s1
    s2_bands = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B11", "B12")
    env = lmdb.open(str(dst / "lmdb"), map_size=1 << 40)
    rows = []
    txn = env.begin(write=True)
    for i, s2 in enumerate(sorted(os.listdir(s2_root))):
        s1 = s1_of[s2]
        labels = json.loads((s2_root / s2 / f"{s2}_labels_metadata.json").read_text())["labels"]
        s2_data = {b: tifffile.imread(s2_root / s2 / f"{s2}_{b}.tif") for b in s2_bands}
        s1_data = {b: tifffile.imread(s1_root / s1 / f"{s1}_{b}.tif") for b in ("VV", "VH")}
        txn.put(s2.encode(), safetensors.numpy.save(s2_data))
        txn.put(s1.encode(), safetensors.numpy.save(s1_data))
        rows.append({"patch_id": s2, "s1_name": s1, "labels": labels})
        if i % 500 == 499:
            txn.commit()
            txn = env.begin(write=True)
    txn.commit()
    env.close()
    pd.DataFrame(rows).to_parquet(dst / "metadata.parquet")
    return len(rows)


def benmm_encode(src: Path, dst: Path, workers: int) -> int:
    from benmm.ingest.pipeline import encode_summary

    return encode_summary(src, dst, workers=workers, progress=False).written


def _run_method(method: str, src: Path, dst: Path, workers: int) -> None:
    start = time.perf_counter()
    n = baseline(src, dst) if method == "baseline" else benmm_encode(src, dst, workers)
    print(json.dumps({"pairs": n, "seconds": time.perf_counter() - start}))


def _measure(method: str, src: Path, dst: Path, workers: int) -> dict[str, float]:
    if dst.exists():
        shutil.rmtree(dst)
    dst.mkdir(parents=True)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = subprocess.run([sys.executable, str(BENCH), "--run", method, "--src", str(src), "--dst", str(dst),
                          "--workers", str(workers)], capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(f"{method} failed:\n{out.stderr[-3000:]}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    result["cpu"] = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return result


def _same_values(base: Path, store: Path, sample: int = 500) -> tuple[bool, int]:
    import lmdb

    from benmm.store import Store

    st = Store.open(store)
    names = st.names()[:: max(1, len(st) // sample)]
    env = lmdb.open(str(base / "lmdb"), readonly=True, lock=False)
    try:
        with env.begin() as txn:
            same = all(txn.get(key.encode()) == st.raw(key) for n in names for key in (n, st.s1_key(n)))
    finally:
        env.close()
    return same, len(names)


# ---- ConfigILM interoperability (optional) ----------------------------------------------------
CONFIGILM_CHECK = """
import sys, tempfile
import pandas as pd
from configilm.extra.DataSets.BENv2_DataSet import BENv2DataSet
store = sys.argv[1]
# reBEN ships flagged (snow/cloud) patches in a second parquet file: split benmm's one table the same way
meta = pd.read_parquet(store + "/metadata.parquet")
flagged = meta["contains_seasonal_snow"].fillna(False) | meta["contains_cloud_or_shadow"].fillna(False)
tmp = tempfile.mkdtemp()
meta[~flagged].to_parquet(tmp + "/metadata.parquet")
meta[flagged].to_parquet(tmp + "/snow_cloud.parquet")
ds = BENv2DataSet(data_dirs={"images_lmdb": store + "/lmdb", "metadata_parquet": tmp + "/metadata.parquet",
                             "metadata_snow_cloud_parquet": tmp + "/snow_cloud.parquet"},
                  split="train", img_size=(14, 120, 120))
x, y = ds[0]
print(f"{len(ds):,} train patches; first sample {tuple(x.shape)} {x.dtype}, {int(y.sum())} labels")
"""


def _configilm(cache: Path, store: Path) -> str:
    venv = cache / "configilm-venv"
    py = venv / "bin" / "python"
    try:
        if not py.exists():
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, capture_output=True)
            # see the project's packages (torch, numpy, ...) without installing into its environment
            site = next(p for p in sys.path if p.endswith("site-packages"))
            ver = f"python{sys.version_info.major}.{sys.version_info.minor}"
            (venv / "lib" / ver / "site-packages" / "benmm-project.pth").write_text(site + "\n")
            pip = subprocess.run([str(py), "-m", "pip", "install", "-q", "configilm"], capture_output=True,
                                 text=True, timeout=600)
            if pip.returncode:
                shutil.rmtree(venv, ignore_errors=True)
                return f"skipped: pip install configilm failed ({pip.stderr.strip().splitlines()[-1:]})"
            # configilm pins numpy<2; its own numpy would break the project's pandas (built for numpy 2),
            # so that venv keeps using the project's numpy
            if subprocess.run([str(py), "-c", "import pandas"], capture_output=True).returncode:
                subprocess.run([str(py), "-m", "pip", "uninstall", "-y", "-q", "numpy"], capture_output=True)
        out = subprocess.run([str(py), "-c", CONFIGILM_CHECK, str(store)], capture_output=True, text=True,
                             timeout=600)
        if out.returncode:
            return f"failed: {out.stderr.strip().splitlines()[-1:]}"
        return "ok: " + out.stdout.strip()
    except (OSError, subprocess.SubprocessError, StopIteration) as exc:
        return f"skipped: {exc}"


# ---- --from-tar: extract-then-encode vs encoding the tarballs -------------------------------------
def _du(path: Path, skip: Path | None = None) -> int:
    total = 0
    for dirpath, dirs, files in os.walk(path):
        if skip is not None and Path(dirpath) == skip.parent:
            dirs[:] = [d for d in dirs if Path(dirpath) / d != skip]
        for name in files:
            with contextlib.suppress(OSError):  # a file removed while we look
                total += os.lstat(os.path.join(dirpath, name)).st_blocks * 512
    return total


def _timed(commands: list[list[str]], work: Path, store: Path) -> dict[str, float]:
    """Run the commands one after another; wall, CPU (children) and the peak disk under ``work`` outside
    ``store``, polled every 0.2 s."""
    import threading

    peak = [0]
    stop = threading.Event()

    def poll() -> None:
        while not stop.wait(0.2):
            peak[0] = max(peak[0], _du(work, skip=store))

    watcher = threading.Thread(target=poll, daemon=True)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    watcher.start()
    try:
        for cmd in commands:
            out = subprocess.run(cmd, capture_output=True, text=True)
            if out.returncode:
                raise SystemExit(f"{' '.join(cmd)} failed:\n{out.stderr[-3000:]}")
    finally:
        stop.set()
        watcher.join()
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    peak[0] = max(peak[0], _du(work, skip=store))
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"seconds": wall, "cpu": cpu, "extra": peak[0]}


def _packed(cache: Path, src: Path, layout: str, pairs: int, seed: int, fmts: tuple[str, ...]
            ) -> dict[str, list[Path]]:
    """``src`` packed as the published tarballs in each format (once, cached), tarball paths by format."""
    from benmm.synth.pack import pack_reben, pack_v1

    pack = pack_v1 if layout == "v1" else pack_reben
    tarballs = {}
    for fmt in fmts:
        folder = cache / f"synth-{layout}-{pairs}-seed{seed}-{fmt}"
        if not folder.is_dir():
            print(f"packing the {layout} archive as {fmt} (once) ...", flush=True)
            pack(src, fmt, folder.with_name(folder.name + ".partial"))
            folder.with_name(folder.name + ".partial").rename(folder)
        tarballs[fmt] = sorted(folder.glob(f"*.{fmt}"))
    return tarballs


def from_tar(cache: Path, pairs: int, seed: int, workers: int, layouts: tuple[str, ...] = ("v1",)) -> None:
    """One table per layout: v1 (``.tar.gz``, ``.tar.zst``) and reBEN's release (``.tar.zst``, with
    ``--metadata``; the metadata files lie loose beside the tarballs, as published)."""
    from benmm.synth.release import RELEASE_FILES

    for layout in layouts:
        src = _archive(cache, pairs, seed, workers, layout)
        fmts = ("tar.gz", "tar.zst") if layout == "v1" else ("tar.zst",)
        tarballs = _packed(cache, src, layout, pairs, seed, fmts)
        loose = [] if layout == "v1" else [src / n for n in RELEASE_FILES if (src / n).is_file()]
        _tar_table(layout, src, tarballs, loose, pairs)


def _tar_table(layout: str, src: Path, tarballs: dict[str, list[Path]], loose: list[Path],
               pairs: int) -> None:
    from benmm.store import Store

    sizes = {fmt: sum(p.stat().st_size for p in paths) for fmt, paths in tarballs.items()}
    print(f"\n{layout} archive: {pairs:,} pairs, folders {_du(src) / 1e9:.2f} GB; " + ", ".join(
        f"{fmt} {n / 1e9:.2f} GB" for fmt, n in sizes.items()))
    py, w = sys.executable, str(default_workers_())
    enc = [py, "-m", "benmm", "encode", "--no-progress", "--workers", w]
    meta = [a for p in loose if p.name == "metadata.parquet" for a in ("--metadata", str(p))]
    unpack = {"tar.gz": ["tar", "-xzf"], "tar.zst": ["tar", "--zstd", "-xf"]}
    names = "S2 S1" if layout == "v1" else "S2 S1 Reference_Maps"
    runs = [(f"benmm encode FOLDERS ({layout}, already extracted)", "folders")]
    for fmt in tarballs:
        runs += [(f"tar -x {fmt}, then benmm encode FOLDERS", f"x-{fmt}"),
                 (f"benmm encode {names}.{fmt}" + (" --metadata" if meta else ""), f"t-{fmt}")]
    work = src.parent / "from-tar-work"
    results, hashes = [], set()
    for label, key in runs:
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        store = work / "store"
        if key == "folders":
            _warm(src)
            cmds = [[*enc, str(src), str(store)]]
        elif key.startswith("x-"):
            fmt = key[2:]
            for p in tarballs[fmt]:
                _warm(p)
            ex = work / "extracted"
            ex.mkdir()
            cmds = [[*unpack[fmt], str(p), "-C", str(ex)] for p in tarballs[fmt]]
            cmds += [["cp", str(p), str(ex)] for p in loose]  # reBEN: the metadata beside the folders
            cmds.append([*enc, str(ex), str(store)])
        else:
            fmt = key[2:]
            for p in tarballs[fmt]:
                _warm(p)
            cmds = [[*enc, *map(str, tarballs[fmt]), str(store), *meta]]
        print(f"running {label} ...", flush=True)
        r = _timed(cmds, work, store)
        hashes.add(Store.open(store).content_hash)
        results.append((label, r))
    shutil.rmtree(work, ignore_errors=True)
    ref = pairs / results[0][1]["seconds"]
    print(f"\n{'method':<58} {'wall s':>8} {'CPU s':>8} {'extra disk':>11} {'pairs/s':>9} {'vs folders':>11}")
    for label, r in results:
        rate = pairs / r["seconds"]
        print(f"{label:<58} {r['seconds']:>8.1f} {r['cpu']:>8.1f} {r['extra'] / 1e6:>8,.0f} MB {rate:>9,.0f} "
              f"{rate / ref:>10.0%}")
    same = "yes" if len(hashes) == 1 else "NO"
    print(f"\nsame content hash in every row: {same} ({str(hashes.pop())[:23]}...)")
    print(f"machine: {os.cpu_count()} cores, shared; load average {os.getloadavg()[0]:.1f} at the end "
          "(figures move with the load: rerun on an idle machine)")


def default_workers_() -> int:
    from benmm.ingest.pipeline import default_workers

    return default_workers()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pairs", type=int, default=20_000, help="pairs in the synthetic archive")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                    help="workers of the one-per-core run (benmm's default, one more, is also run)")
    ap.add_argument("--cache", help="folder for the synthetic archive and the stores")
    ap.add_argument("--configilm", action="store_true", help="also show ConfigILM reading the store")
    ap.add_argument("--keep", action="store_true", help="keep the stores written")
    ap.add_argument("--from-tar", action="store_true",
                    help="compare tar -x + encode with encoding the .tar.gz / .tar.zst tarballs")
    ap.add_argument("--release", choices=("v1", "reben", "both"), default="both",
                    help="--from-tar: the v1 tarballs, reBEN's release (.tar.zst + metadata), or both")
    ap.add_argument("--run", help=argparse.SUPPRESS)
    ap.add_argument("--src", help=argparse.SUPPRESS)
    ap.add_argument("--dst", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.run:
        _run_method(args.run, Path(args.src), Path(args.dst), args.workers)
        return
    cache = _cache(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    if args.from_tar:
        layouts = {"v1": ("v1",), "reben": ("reben-release",), "both": ("v1", "reben-release")}
        from_tar(cache, args.pairs, args.seed, args.workers, layouts[args.release])
        return
    src = _archive(cache, args.pairs, args.seed, args.workers)
    size = _warm(src)
    print(f"archive: {src} ({args.pairs:,} pairs, {size / 1e9:.2f} GB; read before each run to warm the "
          "page cache)")
    out = cache / "stores"
    from benmm.ingest.pipeline import default_workers

    runs = [("baseline: tifffile + safetensors + LMDB, 1 process", "baseline", 1),
            ("benmm encode --workers 1", "benmm", 1),
            (f"benmm encode --workers {args.workers}", "benmm", args.workers)]
    if default_workers() not in (1, args.workers):
        runs.append((f"benmm encode (default: --workers {default_workers()})", "benmm", default_workers()))
    last = runs[-1][2]
    results, checks = [], []
    for label, method, workers in runs:
        print(f"running {label} ...", flush=True)
        _warm(src)
        dst = out / f"{method}-{workers}"
        results.append((label, _measure(method, src, dst, workers)))
        if method == "benmm":
            checks.append(_same_values(out / "baseline-1", dst))
            if not args.keep and not (args.configilm and workers == last):
                shutil.rmtree(dst)  # keep disk and page cache for the next run
    base = results[0][1]["pairs"] / results[0][1]["seconds"]
    print(f"\n{'method':<52} {'pairs':>7} {'wall s':>8} {'pairs/s':>9} {'CPU s':>8} {'vs baseline':>12}")
    for label, r in results:
        rate = r["pairs"] / r["seconds"]
        print(f"{label:<52} {r['pairs']:>7,} {r['seconds']:>8.1f} {rate:>9,.0f} {r['cpu']:>8.1f} "
              f"{rate / base:>11.1f}x")
    same = all(ok for ok, _ in checks)
    print(f"\nvalues byte-identical between the baseline's LMDB and benmm's stores: "
          f"{'yes' if same else 'NO'} ({sum(n for _, n in checks)} pairs checked)")
    print(f"machine: {os.cpu_count()} cores; load average {os.getloadavg()[0]:.1f} (shared machines: rerun)")
    if args.configilm:
        verdict = _configilm(cache, out / f"benmm-{last}")
        print(f"ConfigILM BENv2DataSet on the benmm store: {verdict}")
    if not args.keep:
        shutil.rmtree(out, ignore_errors=True)


if __name__ == "__main__":
    main()
