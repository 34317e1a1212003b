"""What `benmm info` and `benmm check` compute: an archive summary, validation of every pair, reports."""

from __future__ import annotations

import csv
import json
import multiprocessing as mp
import os
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

from benmm import labels as L
from benmm.archive.base import Problem
from benmm.atomic import atomic_open
from benmm.errors import BenmmError

if TYPE_CHECKING:
    import pandas as pd

Progress = Callable[[int], None]  # called with the number of pairs just done

KIND_NAMES = {"v1": "BigEarthNet v1.0 folders (S1 + S2 GeoTIFFs, JSON)",
              "reben": "reBEN (BigEarthNet v2.0) as published",
              "store": "benmm store", "synthetic": "synthetic archive"}


def kind_of(arc: Any) -> str:
    return str(getattr(arc, "kind", type(arc).__name__))


def _given(value: Any) -> bool:
    """Not None/NaN (metadata columns hold None, NaN or arrays)."""
    return value is not None and not (isinstance(value, float) and value != value)


def pairs_frame(arc: Any, progress: Progress | None = None, threads: int = 8) -> pd.DataFrame:
    """One row per pair: name, labels19, labels43 (or None), split, country, season, snow, cloud.

    v1 archives read every S2 JSON for the labels (threads: the work is I/O); reBEN and stores use
    their metadata table.
    """
    import pandas as pd

    from benmm.archive.splits import normalize_split

    kind = kind_of(arc)
    if kind in ("reben", "store") and hasattr(arc, "metadata"):
        m = arc.metadata
        seasons = m["season"] if "season" in m.columns else None
        if seasons is None:
            from benmm.archive.splits import v1_info

            infos = [v1_info(str(n)) for n in m["s2v1_name"]]
            seasons = [i.season if i else None for i in infos]
        df = pd.DataFrame({
            "name": m["patch_id"].astype(object),
            "labels19": [list(x) if _given(x) else [] for x in m["labels"]],
            "labels43": ([list(x) if _given(x) else None for x in m["labels43"]] if "labels43" in m.columns
                         else [None] * len(m)),
            # non-strict: an unknown value shows up in the counts; validate() names its file and patch
            "split": [normalize_split(str(s), strict=False) if _given(s) else None for s in m["split"]],
            "country": m["country"].astype(object), "season": list(seasons),
            "snow": m["contains_seasonal_snow"].astype(bool),
            "cloud": m["contains_cloud_or_shadow"].astype(bool),
        })
        if progress:
            progress(len(df))
        return df
    from benmm.archive.splits import v1_info

    names = list(arc)

    def one(name: str) -> dict[str, Any]:
        try:
            l43: list[str] | None = arc.labels43(name)
            l19: list[str] | None = L.to_19(l43 or [])
        except BenmmError:
            l43 = l19 = None
        info = v1_info(name)
        return {"name": name, "labels19": l19, "labels43": l43, "split": info.split if info else None,
                "country": info.country if info else None, "season": info.season if info else None,
                "snow": info.snow if info else None, "cloud": info.cloud if info else None}

    rows = []
    with ThreadPoolExecutor(max(1, threads)) as pool:
        for row in pool.map(one, names, chunksize=64):
            rows.append(row)
            if progress:
                progress(1)
    return pd.DataFrame(rows, columns=["name", "labels19", "labels43", "split", "country", "season",
                                       "snow", "cloud"])


def label_histogram(lists: Iterable[list[str] | None], n: int) -> dict[str, int]:
    """Pairs per label in official order (zeros included)."""
    counts: Counter[str] = Counter()
    for names in lists:
        if names is not None:
            counts.update(set(names))
    return {name: counts.get(name, 0) for name in L.label_names(n)}


def summarize(arc: Any, frame: pd.DataFrame | None = None, quick_check: int = 20) -> dict[str, Any]:
    """A JSON-able summary: kind, pair count, splits, countries, seasons, label histograms, problems."""
    kind = kind_of(arc)
    out: dict[str, Any] = {"kind": kind, "description": KIND_NAMES.get(kind, kind), "pairs": len(arc)}
    root = getattr(arc, "root", None) or getattr(arc, "path", None)
    out["path"] = str(root) if root is not None else None
    if kind == "v1":
        out["s2_root"], out["s1_root"] = str(arc.s2_root), str(arc.s1_root)
        out["pairing"] = dict(arc.pairing_counts)
    if kind in ("reben", "store"):  # reBEN reference maps (a v1 archive has none)
        out["reference_maps"] = bool(getattr(arc, "has_reference_maps", False))
    if frame is not None:
        def counts(col: str) -> dict[str, int]:
            values = frame[col].astype(object).where(frame[col].notna(), "(none)")
            return {str(k): int(v) for k, v in values.value_counts().sort_index().items()}

        out["splits"] = counts("split")
        out["countries"] = counts("country")
        out["seasons"] = counts("season")
        out["excluded"] = {"seasonal snow": int(frame["snow"].fillna(False).astype(bool).sum()),
                           "cloud or shadow": int(frame["cloud"].fillna(False).astype(bool).sum())}
        out["labels19"] = label_histogram(frame["labels19"], 19)
        out["no_19_class_label"] = int(sum(1 for x in frame["labels19"] if x is not None and not x))
        if frame["labels43"].notna().any():
            out["labels43"] = label_histogram(frame["labels43"], 43)
    problems = archive_problems(arc)
    names = list(arc)
    step = max(1, len(names) // quick_check) if quick_check > 0 else 0
    sample = names[::step][:quick_check] if step else []
    for name in sample:
        problems += validate(arc, name)
    out["checked_pairs"] = len(sample)
    out["problems"] = [{"path": p.path, "reason": p.reason, "pair": p.pair} for p in problems]
    return out


def archive_problems(arc: Any) -> list[Problem]:
    fn = getattr(arc, "archive_problems", None)
    return list(fn()) if fn is not None else []


def validate(arc: Any, name: str) -> list[Problem]:
    """Problems of one pair: the archive's own ``validate`` or, for stores, a full read."""
    fn = getattr(arc, "validate", None)
    if fn is not None:
        return list(fn(name))
    try:
        arc[name]
    except BenmmError as exc:
        where = getattr(arc, "path", None) or getattr(arc, "root", "")
        return [Problem(str(where), str(exc), name)]
    return []


_ARC: Any = None


def _init(arc: Any) -> None:
    global _ARC
    _ARC = arc


def _validate_many(names: list[str]) -> list[tuple[str, list[Problem]]]:
    return [(name, validate(_ARC, name)) for name in names]


def check_pairs(arc: Any, names: list[str] | None = None, workers: int = 1, chunk: int = 64
                ) -> Iterator[tuple[str, list[Problem]]]:
    """Validate pairs (all by default), in worker processes when ``workers > 1``; yields as they finish."""
    todo = list(arc) if names is None else names
    if workers <= 1 or len(todo) <= chunk:
        for name in todo:
            yield name, validate(arc, name)
        return
    chunks = [todo[i:i + chunk] for i in range(0, len(todo), chunk)]
    method = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
    with mp.get_context(method).Pool(workers, initializer=_init, initargs=(arc,)) as pool:
        for results in pool.imap_unordered(_validate_many, chunks):
            yield from results


def write_report(problems: Iterable[Problem], path: str | os.PathLike[str]) -> int:
    """Write problems as JSON lines (``.jsonl``/``.json``) or CSV (anything else); returns the count."""
    target = Path(path)
    n = 0
    with atomic_open(target, "w", newline="") as fh:
        if target.suffix.lower() in (".jsonl", ".json", ".ndjson"):
            for p in problems:
                fh.write(json.dumps({"pair": p.pair, "path": p.path, "reason": p.reason}) + "\n")
                n += 1
        else:
            writer = csv.writer(fh)
            writer.writerow(["pair", "path", "reason"])
            for p in problems:
                writer.writerow([p.pair or "", p.path, p.reason])
                n += 1
    return n
