"""Retrieval quality side by side on one synthetic store: band statistics, classifier features + ITQ,
learned hashing, cross-modal (labels) and cross-modal (pairs), at 32, 64 and 128 bits.

One seeded synthetic reBEN-layout archive (``--pairs``, default 6,000) is the store; queries are its test
split, the archive its train split (the issue's default protocol). Every learned model is the same small
K-Branch CNN (``--width``, ``--embed``; inputs pooled ``--downsample``x) trained ``--epochs`` epochs:

* ``band-stats``: per-band statistics (no training), cosine search of the floats (no bits);
* ``classifier+ITQ``: one S1+S2 classifier (BCE), its features -> PCA + ITQ codes of each length;
* ``hashing``: the ``hashing`` recipe (S1+S2 early fusion + hash head) at each length;
* ``cross-modal (labels)`` / ``cross-modal (pairs)``: the ``cross-modal`` recipe at each length, searched
  S1->S2, S2->S1, S1->S1, S2->S2 and S1S2->S1S2.

Codes are ranked by Hamming distance (``faiss.IndexBinaryFlat``), floats by cosine (``IndexFlatIP``);
metrics are ``benmm.retrieval.evaluate.retrieval_metrics`` (relevant = at least one shared label), and a
random ranking of each direction is the floor. Times: training (whole ``train`` call), embedding (all
train + test patches, every side the row uses) and search per query (batched, exact).

Targets (issue 11): learned hashing beats classifier features + ITQ at equal bits on test mAP@100;
cross-modal (labels) S1->S2 reaches >= 80% of its own S2->S2 mAP@100.

    nice python benchmarks/retrieval_quality.py --pairs 2000 --epochs 6     # ~CPU tens of minutes
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from benmm.labels import label_names
from benmm.retrieval.codes import fit_itq
from benmm.retrieval.embed import EmbeddingSet, embed_store
from benmm.retrieval.evaluate import random_ranking, retrieval_metrics
from benmm.retrieval.index import multi_hot
from benmm.train.fit import quiet_lightning, train
from benmm.train.retrieval_eval import rank_codes

BITS = (32, 64, 128)
METHODS = ("band-stats", "itq", "hashing", "cross-modal")
KS = (10, 100)
CROSS_DIRECTIONS = (("s1", "s2"), ("s2", "s1"), ("s1", "s1"), ("s2", "s2"), ("s1s2", "s1s2"))


def model_overrides(args: argparse.Namespace) -> list[str]:
    return ['model.name="kbranch"', f"model.width={args.width}", f"model.embed={args.embed}",
            f"model.downsample={args.downsample}", f"batch_size={args.batch_size}", f"epochs={args.epochs}",
            f"lr={args.lr}", "warmup_steps=20", "data.augment=false", "patience=0", "log_every_n_steps=20"]


def run_train(store: Path, out: Path, recipe: str, sets: list[str]) -> tuple[Path, float]:
    if out.exists():
        shutil.rmtree(out)
    t0 = time.perf_counter()
    res = train(store, out, recipe=recipe, overrides=sets, workers=0, progress=False)
    assert res.best is not None
    return res.best, time.perf_counter() - t0


def embed(model: str | Path, store: Path, out: Path, modality: str | None) -> tuple[EmbeddingSet, float]:
    if out.exists():
        shutil.rmtree(out)
    t0 = time.perf_counter()
    emb = embed_store(model, store, out, batch_size=128, modality=modality)
    assert emb is not None
    return emb, time.perf_counter() - t0


def search(query: np.ndarray, archive: np.ndarray, kind: str, k: int) -> tuple[np.ndarray, float]:
    """``(ranked [Q, k], seconds per query)``: Hamming on sign codes, or cosine on floats."""
    t0 = time.perf_counter()
    if kind == "hamming":
        ranked = rank_codes(query, archive, k)
    else:
        def unit(x: np.ndarray) -> np.ndarray:
            x = np.ascontiguousarray(x, dtype=np.float32)
            return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)

        index = faiss.IndexFlatIP(archive.shape[1])
        index.add(unit(archive))
        ranked = index.search(unit(query), k)[1]
    return ranked, (time.perf_counter() - t0) / max(1, len(query))


class Bench:
    def __init__(self, k: int) -> None:
        self.k = k
        self.rows: list[dict[str, Any]] = []
        self.random: dict[str, float] = {}

    def score(self, method: str, bits: int | None, direction: str, q: np.ndarray, ql: np.ndarray,
              a: np.ndarray, al: np.ndarray, kind: str, train_s: float, embed_s: float) -> dict[str, Any]:
        ranked, per_query = search(q, a, kind, self.k)
        m = retrieval_metrics(ql, al, ranked, ks=KS)
        if direction not in self.random:
            rand = retrieval_metrics(ql, al, random_ranking(len(q), len(a), self.k, seed=0), ks=KS)
            self.random[direction] = rand["map"][self.k]  # type: ignore[index]
        row = {"method": method, "bits": bits or "float", "direction": direction,
               "map@10": m["map"][10], f"map@{self.k}": m["map"][self.k],  # type: ignore[index]
               f"ndcg@{self.k}": m["ndcg"][self.k], "train_s": train_s, "embed_s": embed_s,  # type: ignore[index]
               "search_ms": per_query * 1e3}
        self.rows.append(row)
        print(f"  {method:<22} {row['bits']!s:>5} {direction:<12} mAP@100 {row[f'map@{self.k}']:.4f}",
              flush=True)
        return row

    def table(self) -> str:
        k = self.k
        lines = [f"| method | bits | direction | mAP@10 | mAP@{k} | NDCG@{k} | random mAP@{k} | train s | "
                 "embed s | search ms/query |", "|---|---|---|---|---|---|---|---|---|---|"]
        for r in self.rows:
            lines.append(f"| {r['method']} | {r['bits']} | {r['direction']} | {r['map@10']:.4f} | "
                         f"{r[f'map@{k}']:.4f} | {r[f'ndcg@{k}']:.4f} | {self.random[r['direction']]:.4f} | "
                         f"{r['train_s']:.0f} | {r['embed_s']:.1f} | {r['search_ms']:.3f} |")
        return "\n".join(lines)


def split_rows(emb: EmbeddingSet, names: tuple[str, ...]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``{"train": (vectors, multi-hot labels), "test": ...}`` of an embeddings set."""
    out = {}
    vecs = np.asarray(emb.vectors)
    for split in ("train", "test"):
        rows = np.flatnonzero(emb.items["split"].to_numpy() == split)
        out[split] = (vecs[rows], multi_hot(emb.items["labels"].iloc[rows], names))
    return out


def report(bench: Bench, args: argparse.Namespace, done: list[int]) -> None:
    """The table so far and the targets of the code lengths done (printed after each length, so that a
    run stopped early still leaves its table)."""
    print(f"\n{args.pairs} pairs (seed {args.seed}), queries = test, archive = train, {args.epochs} epochs, "
          f"K-Branch width {args.width} embed {args.embed} downsample {args.downsample}\n")
    print(bench.table())
    print()
    k = args.k

    def get(method: str, bits: int, direction: str) -> float | None:
        return next((float(r[f"map@{k}"]) for r in bench.rows
                     if r["method"] == method and r["bits"] == bits and r["direction"] == direction), None)

    for bits in done:  # the targets whose rows this run has (--methods may leave some out)
        h, c = get("hashing", bits, "s1s2->s1s2"), get("classifier+ITQ", bits, "s1s2->s1s2")
        x, y = get("cross-modal (labels)", bits, "s1->s2"), get("cross-modal (labels)", bits, "s2->s2")
        p = get("cross-modal (pairs)", bits, "s1->s2")
        parts = []
        if h is not None and c is not None:
            verdict = "met" if h > c else "MISSED"
            parts.append(f"hashing {h:.4f} vs classifier+ITQ {c:.4f} ({verdict}, {h - c:+.4f})")
        if x is not None and y is not None:
            parts.append(f"cross-modal (labels) S1->S2 / S2->S2 = {x:.4f} / {y:.4f} = {x / y:.1%} "
                         f"({'met' if x >= 0.8 * y else 'MISSED'})")
        if p is not None:
            parts.append(f"cross-modal (pairs) S1->S2 {p:.4f} vs random {bench.random['s1->s2']:.4f}")
        print(f"{bits:>3} bits: " + "; ".join(parts or ["no target rows in this run"]), flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pairs", type=int, default=6000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--width", type=int, default=8)
    p.add_argument("--embed", type=int, default=128)
    p.add_argument("--downsample", type=int, default=4)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--bits", type=int, nargs="+", default=list(BITS))
    p.add_argument("--k", type=int, default=100)
    p.add_argument("--workdir", type=Path, default=None)
    p.add_argument("--json", type=Path, default=None, help="also write the rows here")
    p.add_argument("--methods", default=",".join(METHODS),
                   help=f"comma-separated subset of {','.join(METHODS)} (default: all)")
    p.add_argument("--hash-set", action="append", default=[], metavar="KEY=VALUE",
                   help="extra recipe settings of the hashing rows, e.g. classification=1.0 (repeatable)")
    args = p.parse_args()
    methods = {m.strip() for m in args.methods.split(",") if m.strip()}
    if not methods or methods - set(METHODS):
        p.error(f"--methods: choose from {', '.join(METHODS)}")
    quiet_lightning()
    work = args.workdir or Path(f"/tmp/benmm-retrieval-quality-{args.pairs}-{args.seed}")
    store = work / "archive"
    if not (store / "metadata.parquet").is_file():
        from benmm.synth.archive import synthesize

        t0 = time.perf_counter()
        synthesize(store, pairs=args.pairs, seed=args.seed, layout="reben", workers=2)
        print(f"synthesized {args.pairs} pairs in {time.perf_counter() - t0:.0f} s", flush=True)
    names = label_names(19)
    bench = Bench(args.k)
    base = model_overrides(args)

    # band statistics: no training, float cosine, each side on its own
    for side in ("s1s2", "s2", "s1") if "band-stats" in methods else ():
        emb, t_emb = embed("band-stats", store, work / f"emb-bandstats-{side}", side)
        s = split_rows(emb, names)
        bench.score("band-stats", None, f"{side}->{side}", *s["test"], *s["train"], "cosine", 0.0, t_emb)

    # classifier features + PCA/ITQ codes of each length
    ckpt, t_train = (None, 0.0) if "itq" not in methods else run_train(
        store, work / "classifier", "demo", [*base, "modality=s1s2"])
    if ckpt is not None:
        _itq_rows(bench, store, work, ckpt, t_train, args, names)

    for bits in sorted(args.bits):
        if "hashing" in methods:
            ckpt, t_train = run_train(store, work / f"hashing-{bits}", "hashing",
                                      [*base, f"model.bits={bits}", "modality=s1s2", *args.hash_set])
            emb, t_emb = embed(ckpt, store, work / f"emb-hashing-{bits}", None)
            s = split_rows(emb, names)
            bench.score("hashing", bits, "s1s2->s1s2", *s["test"], *s["train"], "hamming", t_train, t_emb)
        for supervision in ("labels", "pairs") if "cross-modal" in methods else ():
            ckpt, t_train = run_train(store, work / f"cross-{supervision}-{bits}", "cross-modal",
                                      [*base, f"model.bits={bits}", f"supervision={supervision}"])
            sides, t_emb = {}, 0.0
            for side in ("s1", "s2", "s1s2"):
                emb, dt = embed(ckpt, store, work / f"emb-cross-{supervision}-{bits}-{side}", side)
                sides[side], t_emb = split_rows(emb, names), t_emb + dt
            for q, a in CROSS_DIRECTIONS:
                bench.score(f"cross-modal ({supervision})", bits, f"{q}->{a}", *sides[q]["test"],
                            *sides[a]["train"], "hamming", t_train, t_emb)
        report(bench, args, [b for b in args.bits if b <= bits])

    if args.json:
        args.json.write_text(json.dumps({"args": {k2: str(v) for k2, v in vars(args).items()},
                                         "rows": bench.rows, "random": bench.random}, indent=2))


def _itq_rows(bench: Bench, store: Path, work: Path, ckpt: Path, t_train: float, args: argparse.Namespace,
              names: tuple[str, ...]) -> None:
    """Classifier features -> PCA + ITQ codes of each length."""
    emb, t_emb = embed(ckpt, store, work / "emb-classifier", None)
    s = split_rows(emb, names)
    for bits in args.bits:
        t0 = time.perf_counter()
        enc = fit_itq(s["train"][0], bits=bits, seed=args.seed)
        t_itq = time.perf_counter() - t0
        bench.score("classifier+ITQ", bits, "s1s2->s1s2", enc.project(s["test"][0]), s["test"][1],
                    enc.project(s["train"][0]), s["train"][1], "hamming", t_train + t_itq, t_emb)


if __name__ == "__main__":
    main()
