"""A seeded synthetic BigEarthNet-MM archive in the true on-disk format, with a learnable class signal.

``synthesize(dst, pairs=N, seed=S, layout="v1"|"reben"|"reben-release")`` writes N Sentinel-1/Sentinel-2
pairs that a reader cannot tell from the real archive by format:

* ``v1``: ``BigEarthNet-v1.0/<S2 name>/`` and ``BigEarthNet-S1-v1.0/<S1 name>/``, one uncompressed
  GeoTIFF per band (byte layout of the real files, see :mod:`benmm.synth.geotiff`) and the
  ``<name>_labels_metadata.json`` files with the real keys (see :mod:`benmm.synth.metadata`);
* ``reben``: ``BigEarthNet-V2-LMDB/`` (key = patch name, value = safetensors ``{band: array}``),
  ``metadata.parquet`` and ``metadata_for_patches_with_snow_cloud_or_shadow.parquet`` with the
  published sample's columns, dtypes and index;
* ``reben-release``: reBEN as its publishers release it: ``BigEarthNet-S2/``, ``BigEarthNet-S1/`` and
  ``Reference_Maps/`` GeoTIFF folders plus the same two parquet files (:mod:`benmm.synth.release`);
  labels are the classes present in each pair's reference map.

Pair identities (names, country, season, split, snow/cloud flags) are real pairs drawn from the official
lists (:mod:`benmm.synth.labels`); labels and pixels are invented. Each patch is a warped Voronoi map
of its labels' *materials*: S2 = material reflectance x region gain x texture (field stripes, urban
grain) + sensor noise, computed on the 10 m grid and block-averaged to 20 m / 60 m; S1 = material
backscatter + texture + gamma speckle (5 looks) in dB. Snow and cloud patches get a snow / cloud layer.
Pair ``i`` uses ``numpy.random.default_rng([seed, i])``: same seed, same bytes, any number of workers.

Speed (measured on the project's 2-core VM, `benchmarks/synth.py`): 6.7 ms of CPU per pair for the v1
layout (render ~4.5 ms, 14 GeoTIFFs + 2 JSON ~2 ms), 5.0 ms for reben; i.e. ~300 (v1) / ~400 (reben)
pairs/s with ``--workers 2`` on two idle cores, 20,000 pairs in about 70 s. With the VM shared by
several jobs (load ~7 on 2 cores) we saw 63 (v1) and 78 (reben) pairs/s wall-clock for 2,000 pairs.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Final, Literal

import numpy as np

from benmm.bands import BAND_RESOLUTION, BAND_SIZE, S1_BANDS, S2_BANDS
from benmm.errors import BenmmError
from benmm.labels import LABELS_43
from benmm.synth.geotiff import geotiff_bytes
from benmm.synth.labels import MATERIAL_OF, MATERIALS, choose_pairs, sample_labels
from benmm.synth.metadata import METADATA, METADATA_FLAGGED, geo, s1_json, s2_json, v2_name, write_metadata

__all__ = ["LAYOUTS", "LMDB_DIR", "METADATA", "METADATA_FLAGGED", "S1_ROOT", "S2_ROOT", "PairSpec",
           "SynthError", "SynthPair", "SynthSummary", "pair_specs", "render", "synthesize"]

Layout = Literal["v1", "reben", "reben-release"]
LAYOUTS: Final = ("v1", "reben", "reben-release")
S2_ROOT: Final = "BigEarthNet-v1.0"
S1_ROOT: Final = "BigEarthNet-S1-v1.0"
LMDB_DIR: Final = "BigEarthNet-V2-LMDB"
_N: Final = 120
_LOOKS: Final = 5.0
_MATERIAL_NAMES: Final = tuple(MATERIALS)
_GRID: Final = np.mgrid[0:_N, 0:_N].astype(np.float32)
_RES_GROUPS: Final = tuple((size, np.array([i for i, b in enumerate(S2_BANDS) if BAND_SIZE[b] == size]))
                           for size in (120, 60, 20))
#: S2 reflectance (DN, canonical band order) of fresh snow (dark in the SWIR) and of thick cloud; B09
#: follows B8A as in the real L2A patches (see benmm.synth.labels.MATERIALS)
_SNOW: Final = np.array([7800, 8000, 8100, 8000, 7900, 7700, 7500, 7300, 7200, 7100, 600, 400], np.float32)
_CLOUD: Final = np.array([6500, 6800, 6900, 7000, 7000, 7100, 7100, 7200, 7200, 7100, 5000, 3800], np.float32)


class SynthError(BenmmError, ValueError):
    """Bad arguments or destination for ``benmm synth``."""


@dataclass(frozen=True)
class PairSpec:
    """Identity of one synthetic pair (picklable, sent to workers)."""

    index: int
    s2_name: str
    s1_name: str
    country: str
    season: str
    split: str  # train / val / test, "" for excluded patches
    snow: bool
    cloud: bool
    no19: bool


@dataclass
class SynthPair:
    """One generated pair in memory: bands at native size and dtype, 43-class labels, class map."""

    spec: PairSpec
    labels43: list[str]
    bands: dict[str, np.ndarray]
    class_map: np.ndarray  # [120, 120] index into LABELS_43 (the ground truth the pixels were drawn from)


@dataclass
class SynthSummary:
    """What ``synthesize`` wrote: counts per split (``excluded`` = in no official split), flags, time."""

    path: Path
    layout: str
    pairs: int
    seed: int
    seconds: float
    bytes: int
    splits: dict[str, int] = field(default_factory=dict)
    snow: int = 0
    cloud: int = 0
    no19: int = 0

    @property
    def rate(self) -> float:
        return self.pairs / self.seconds if self.seconds > 0 else float("inf")


# ---- pixels ---------------------------------------------------------------------------------------

@cache
def _tables() -> dict[str, np.ndarray]:
    """Per-43-class lookup tables (fixed, independent of the seed: the 'physics' of every archive)."""
    fixed = np.random.default_rng(43)
    mat = np.array([_MATERIAL_NAMES.index(MATERIAL_OF[name]) for name in LABELS_43])
    s2 = np.array([MATERIALS[m][0] for m in _MATERIAL_NAMES], np.float32)[mat]
    # the 43 classes within one 19-class group differ a little
    s2 *= 1 + 0.04 * fixed.standard_normal(s2.shape).astype(np.float32)
    s1 = np.array([MATERIALS[m][1] for m in _MATERIAL_NAMES], np.float32)[mat]
    tex = np.array([MATERIALS[m][2] for m in _MATERIAL_NAMES], np.float32)[mat]
    return {"s2": s2.T.copy(), "vv": s1[:, 0].copy(), "vh": s1[:, 1].copy(), "s1tex": s1[:, 2].copy(),
            "mid": tex[:, 0].copy(), "white": tex[:, 1].copy(), "stripe": tex[:, 2].copy()}


@cache
def _interp(grid: int) -> np.ndarray:
    """[120, grid] bilinear interpolation matrix: ``M @ G @ M.T`` is a smooth 120x120 field."""
    pos = np.linspace(0, grid - 1, _N)
    lo = np.minimum(np.floor(pos).astype(int), grid - 2)
    w = (pos - lo).astype(np.float32)
    m = np.zeros((_N, grid), np.float32)
    m[np.arange(_N), lo] = 1 - w
    m[np.arange(_N), lo + 1] = w
    return m


def _field(rng: np.random.Generator, grid: int) -> np.ndarray:
    m = _interp(grid)
    return m @ rng.standard_normal((grid, grid), dtype=np.float32) @ m.T


def _class_map(rng: np.random.Generator, label_idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(class index per pixel, region index per pixel): a warped, power-weighted Voronoi map."""
    n = len(label_idx)
    k = n + int(rng.integers(0, 2 * n + 2))
    seed_label = np.concatenate([np.arange(n), rng.choice(n, size=k - n, p=rng.dirichlet(np.ones(n)))])
    pts = rng.uniform(0, _N, size=(k, 2)).astype(np.float32)
    power = rng.uniform(0, 1500, size=k).astype(np.float32)
    yy = _GRID[0] + 10 * _field(rng, 5)
    xx = _GRID[1] + 10 * _field(rng, 5)
    d2 = (yy[None] - pts[:, 0, None, None]) ** 2 + (xx[None] - pts[:, 1, None, None]) ** 2
    d2 -= power[:, None, None]
    region = d2.argmin(axis=0)
    local = seed_label[region]
    for j in range(n):  # every label must be visible: paint a block at its seed if it lost all pixels
        if not (local == j).any():
            y, x = np.clip(pts[j].astype(int), 4, _N - 5)
            local[y - 4:y + 5, x - 4:x + 5] = j
            region[y - 4:y + 5, x - 4:x + 5] = j
    return label_idx[local], region


def render(spec: PairSpec, seed: int) -> SynthPair:
    """Generate one pair's labels and 14 bands (deterministic in ``(seed, spec.index)``)."""
    rng = np.random.default_rng([seed, spec.index])
    labels43 = sample_labels(rng, spec.country, spec.no19)
    t = _tables()
    cls, region = _class_map(rng, np.array([LABELS_43.index(n) for n in labels43]))
    k = int(region.max()) + 1

    # S2 on the 10 m grid: reflectance x (patch gain x region gain x texture) + sensor noise
    gain = rng.normal(1.0, 0.05) * rng.normal(1.0, 0.06, size=k).astype(np.float32)[region]
    theta, period = rng.uniform(0, np.pi), rng.uniform(6, 14)
    yy, xx = _GRID
    stripes = np.sin((xx * np.cos(theta) + yy * np.sin(theta)) * (2 * np.pi / period))
    texture = (1 + t["mid"][cls] * _field(rng, 13) + t["stripe"][cls] * stripes
               + t["white"][cls] * rng.standard_normal((_N, _N), dtype=np.float32))
    s2 = t["s2"][:, cls] * (gain * texture)[None]
    for flag, colour, cover in ((spec.snow, _SNOW, (0.2, 0.7)), (spec.cloud, _CLOUD, (0.1, 0.5))):
        if flag:  # a soft-edged snow / cloud layer over a random share of the patch
            f = _field(rng, 6)
            alpha = np.clip((f - np.quantile(f, 1 - rng.uniform(*cover))) * 3, 0, 1)
            s2 = s2 * (1 - alpha) + colour[:, None, None] * alpha
    bands: dict[str, np.ndarray] = {}
    for size, idx in _RES_GROUPS:  # block-mean to 20 m / 60 m, then sensor noise at native size
        step = _N // size
        img = s2[idx] if step == 1 else s2[idx].reshape(len(idx), size, step, size, step).mean(axis=(2, 4))
        img += 20 * rng.standard_normal(img.shape, dtype=np.float32)
        img = np.clip(np.rint(img), 1, 15000).astype(np.uint16)
        for j, i in enumerate(idx):
            bands[S2_BANDS[i]] = img[j]
    bands = {b: bands[b] for b in S2_BANDS}

    # S1: backscatter in dB + texture + multiplicative speckle (gamma, 5 looks)
    offset = rng.normal(0, 1.0) + rng.normal(0, 0.7, size=k).astype(np.float32)[region]
    tex1 = t["s1tex"][cls] * _field(rng, 25)
    speckle = 10 * np.log10(rng.standard_gamma(_LOOKS, size=(2, _N, _N), dtype=np.float32) / _LOOKS + 1e-6)
    bands["VV"] = (t["vv"][cls] + offset + tex1 + speckle[0]).astype(np.float32)
    bands["VH"] = (t["vh"][cls] + offset + 0.8 * tex1 + speckle[1]).astype(np.float32)
    return SynthPair(spec=spec, labels43=labels43, bands=bands, class_map=cls.astype(np.int16))


# ---- writers --------------------------------------------------------------------------------------

def _write_v1(root: Path, pair: SynthPair) -> int:
    spec = pair.spec
    g = geo(spec.s1_name, spec.s2_name)
    written = 0
    for modality_root, name, bands, meta in (
        (S2_ROOT, spec.s2_name, S2_BANDS, s2_json(spec.s2_name, pair.labels43, g)),
        (S1_ROOT, spec.s1_name, S1_BANDS, s1_json(spec.s1_name, spec.s2_name, pair.labels43, g)),
    ):
        folder = root / modality_root / name
        folder.mkdir()
        for band in bands:
            data = geotiff_bytes(pair.bands[band], g["ulx"], g["uly"], BAND_RESOLUTION[band], g["zone"])
            (folder / f"{name}_{band}.tif").write_bytes(data)
            written += len(data)
        text = json.dumps(meta).encode("utf-8")
        (folder / f"{name}_labels_metadata.json").write_bytes(text)
        written += len(text)
    return written


def _reben_values(pair: SynthPair) -> list[tuple[bytes, bytes]]:
    from safetensors.numpy import save

    spec = pair.spec
    return [(v2_name(spec.s1_name, spec.s2_name).encode(), save({b: pair.bands[b] for b in S2_BANDS})),
            (spec.s1_name.encode(), save({b: pair.bands[b] for b in S1_BANDS}))]


_Result = tuple[int, list[tuple[bytes, bytes]], list[list[str]]]


def _work(args: tuple[str, str, int, list[PairSpec]]) -> _Result:
    """Worker: render a chunk of pairs; v1 and reben-release write the files, reben returns the LMDB
    records."""
    root, layout, seed, specs = args
    written, records, labels = 0, [], []
    for spec in specs:
        pair = render(spec, seed)
        if layout == "reben-release":
            from benmm.synth import release

            labels.append(release.present_labels43(pair))
            written += release.write_pair(Path(root), pair)
            continue
        labels.append(pair.labels43)
        if layout == "v1":
            written += _write_v1(Path(root), pair)
        else:
            records.extend(_reben_values(pair))
    return written, records, labels


def pair_specs(pairs: int, seed: int, layout: Layout = "v1") -> list[PairSpec]:
    """The identities of the ``pairs`` pairs an archive with this seed holds, in generation order."""
    df = choose_pairs(pairs, seed, reben=layout in ("reben", "reben-release"))
    return [PairSpec(i, r.s2_name, r.s1_name, r.country, r.season, r.split, bool(r.snow), bool(r.cloud),
                     bool(r.no19)) for i, r in enumerate(df.itertuples(index=False))]


def _check_args(dst: Path, pairs: int, layout: str, overwrite: bool) -> None:
    if layout not in LAYOUTS:
        raise SynthError(f"unknown layout {layout!r}; choose one of: {', '.join(LAYOUTS)}")
    if not isinstance(pairs, int) or pairs < 1:
        raise SynthError(f"--pairs must be a positive number of pairs, got {pairs!r}")
    if pairs > 590_326:
        raise SynthError(f"--pairs {pairs} is more than the 590,326 pairs of BigEarthNet-MM")
    if dst.exists() and not dst.is_dir():
        raise SynthError(f"{dst} exists and is not a folder; choose another destination")
    if dst.is_dir() and any(dst.iterdir()) and not overwrite:
        raise SynthError(f"{dst} exists and is not empty; choose an empty or new folder, or pass --overwrite")
    if dst.is_dir() and any(dst.iterdir()) and overwrite and not _is_archive(dst):
        raise SynthError(f"{dst} is not a BigEarthNet archive; --overwrite only replaces an archive (v1 or "
                         "reBEN layouts): choose an empty or new folder")


def _is_archive(path: Path) -> bool:
    from benmm.archive import archive_kind
    from benmm.errors import ArchiveError

    try:
        return archive_kind(path) in ("v1", "reben")
    except ArchiveError:
        return False


def _chunks(specs: Sequence[PairSpec], size: int) -> Iterator[list[PairSpec]]:
    for i in range(0, len(specs), size):
        yield list(specs[i:i + size])


def synthesize(dst: str | os.PathLike[str], pairs: int, seed: int = 0, layout: Layout = "v1",
               workers: int | None = None, overwrite: bool = False,
               progress: Callable[[int, int], None] | None = None) -> SynthSummary:
    """Write a synthetic archive of ``pairs`` pairs to ``dst`` (see the module docstring).

    The archive is built in ``<dst>.partial`` and renamed to ``dst`` only when complete, so an
    interrupted run never leaves something that looks like a finished archive. ``progress(done,
    total)`` is called as pairs complete.
    """
    dst = Path(dst)
    _check_args(dst, pairs, layout, overwrite)
    start = time.perf_counter()
    workers = max(1, min(workers or os.cpu_count() or 1, pairs))
    specs = pair_specs(pairs, seed, layout)
    tmp = dst.with_name(dst.name + ".partial")
    if tmp.exists():
        shutil.rmtree(tmp)  # leftover of an interrupted run of ours
    try:
        tmp.mkdir(parents=True)
    except OSError as exc:
        raise SynthError(f"{dst}: cannot create the archive here ({exc.strerror or exc}); "
                         "choose a writable location") from None
    try:
        return _synthesize_into(tmp, dst, specs, pairs, seed, layout, workers, progress, start)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)  # a failed run (disk full, Ctrl-C) leaves nothing behind
        raise


def _synthesize_into(tmp: Path, dst: Path, specs: list[PairSpec], pairs: int, seed: int, layout: Layout,
                     workers: int, progress: Callable[[int, int], None] | None,
                     start: float) -> SynthSummary:
    if layout == "v1":
        (tmp / S2_ROOT).mkdir()
        (tmp / S1_ROOT).mkdir()
    elif layout == "reben-release":
        from benmm.synth.release import make_dirs

        make_dirs(tmp)
    chunk = max(1, min(64, pairs // (workers * 8) or 1))
    jobs = [(str(tmp), layout, seed, c) for c in _chunks(specs, chunk)]
    labels: list[list[str]] = []
    total = 0
    sink = _LmdbSink(tmp / LMDB_DIR, pairs) if layout == "reben" else None
    pool = mp.get_context("spawn").Pool(workers) if workers > 1 else None
    try:
        results: Iterator[_Result] = pool.imap(_work, jobs) if pool else map(_work, jobs)
        for written, records, chunk_labels in results:
            total += written
            labels.extend(chunk_labels)
            if sink:
                total += sink.put(records)
            if progress:
                progress(len(labels), pairs)
        if pool:
            pool.close()
            pool.join()
    finally:
        if pool:
            pool.terminate()  # no-op after a clean join; stops the workers on an error or Ctrl-C
        if sink:
            sink.close()
    if layout != "v1":
        total += write_metadata(tmp, [(spec.__dict__, lab) for spec, lab in zip(specs, labels, strict=True)])
    if dst.exists():
        shutil.rmtree(dst) if any(dst.iterdir()) else dst.rmdir()
    tmp.rename(dst)
    splits: dict[str, int] = {}
    for s in specs:
        splits[s.split or "excluded"] = splits.get(s.split or "excluded", 0) + 1
    return SynthSummary(path=dst, layout=layout, pairs=pairs, seed=seed, seconds=time.perf_counter() - start,
                        bytes=total, splits=splits, snow=sum(s.snow for s in specs),
                        cloud=sum(s.cloud for s in specs), no19=sum(s.no19 for s in specs))


class _LmdbSink:
    """Single writer of the reben LMDB (workers render, the parent puts, in a deterministic order)."""

    def __init__(self, path: Path, pairs: int) -> None:
        import lmdb

        path.mkdir()
        self.env = lmdb.open(str(path), map_size=max(pairs * 400_000, 1 << 24) + (1 << 24), subdir=True,
                             lock=False, sync=False)

    def put(self, records: list[tuple[bytes, bytes]]) -> int:
        with self.env.begin(write=True) as txn:
            for key, value in records:
                txn.put(key, value)
        return sum(len(v) for _, v in records)

    def close(self) -> None:
        self.env.sync(True)
        self.env.close()

