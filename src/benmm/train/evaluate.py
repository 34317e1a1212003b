"""Library side of ``benmm evaluate`` and ``benmm predict``.

``evaluate(ckpt, store, split="test", out=DIR)`` scores a checkpoint on a split with every metric of
:mod:`benmm.train.metrics` and writes ``metrics.json``, ``per_class.csv``, ``per_class.png``,
``pr_curves.png`` and (when the checkpoint sits in a ``benmm train`` folder) ``training_curves.png``.
``predict(ckpt, path)`` gives per-class probabilities for a store, an archive or one v1 patch folder.
"""

from __future__ import annotations

import csv
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benmm.errors import ArchiveError, BenmmError
from benmm.train.metrics import compute_metrics, per_class_metrics
from benmm.train.task import ClassificationTask, load_checkpoint


@dataclass
class EvalResult:
    metrics: dict[str, float]
    per_class: list[dict[str, Any]]
    split: str
    seconds: float
    files: list[Path] = field(default_factory=list)
    scores: np.ndarray | None = None
    targets: np.ndarray | None = None


def _datamodule(store: Any, model: Any, info: dict[str, Any], batch_size: int, workers: int,
                split: str | None = "test", recommended: bool = True) -> Any:
    from benmm.data.datamodule import BigEarthNetDataModule

    return BigEarthNetDataModule(
        store, modality=model.spec.modality, bands=model.spec.bands, batch_size=batch_size,
        num_workers=workers, resample=info.get("resample") or "bilinear",
        labels=int(info.get("labels") or 19),
        order=info.get("order") or "official", stats=info.get("stats", "v1"),
        keep_native=bool(model.native_groups), predict_split=split, recommended=recommended)


def run_scores(model: Any, info: dict[str, Any], dm: Any, stage: str = "test", progress: bool = True
               ) -> tuple[np.ndarray, np.ndarray]:
    """(scores, targets) of the model on the datamodule's ``stage`` split, through Lightning."""
    import lightning as L

    task = ClassificationTask(model, data={k: info.get(k) for k in ("labels", "order", "class_names")})
    trainer = L.Trainer(devices=1, logger=False, enable_checkpointing=False, enable_progress_bar=progress,
                        enable_model_summary=False)
    trainer.test(task, datamodule=dm, verbose=False)
    scores, targets, _ = task.results["test"]
    return scores, targets


def evaluate(checkpoint: str | Path, store: Any, split: str = "test", out: str | Path | None = None,
             batch_size: int = 64, workers: int = 2, threshold: float | None = None, progress: bool = True,
             plots: bool = True, band_order: str | None = None) -> EvalResult:
    """Evaluate ``checkpoint`` on ``split`` of ``store`` (see the module docstring); ``split="all"``
    (or None) scores every pair of the store's recommended set."""
    from benmm.archive.splits import normalize_split

    start = time.perf_counter()
    every = split is None or str(split).strip().lower() == "all"
    split_name = None if every else normalize_split(split)
    if out is not None:
        Path(out).mkdir(parents=True, exist_ok=True)  # an unwritable report folder fails before the work
    model, info = load_checkpoint(checkpoint, band_order)
    _classifier_only(checkpoint, info)
    dm = _datamodule(store, model, info, batch_size, workers, split=split_name)
    if len(dm.dataset(split_name)) == 0:
        what = f"the {split_name} split" if split_name else "the store"
        raise BenmmError(f"{dm.hparams.get('store')}: {what} has no samples to evaluate")
    dm.datasets["test"] = dm.dataset(split_name)  # trainer.test reads the "test" loader
    scores, targets = run_scores(model, info, dm, progress=progress)
    thr = float(info.get("threshold", 0.5) if threshold is None else threshold)
    names = list(info.get("class_names") or dm.label_names)
    metrics = compute_metrics(scores, targets, threshold=thr)
    rows = per_class_metrics(scores, targets, names, threshold=thr)
    result = EvalResult(metrics=metrics, per_class=rows, split=split_name or "all",
                        seconds=time.perf_counter() - start, scores=scores, targets=targets)
    if out is not None:
        result.files = write_report(Path(out), result, names, checkpoint, info, plots=plots)
    return result


def write_report(out: Path, result: EvalResult, names: list[str], checkpoint: str | Path,
                 info: dict[str, Any], plots: bool = True) -> list[Path]:
    from benmm import viz

    out.mkdir(parents=True, exist_ok=True)
    files = []
    payload = {"checkpoint": str(checkpoint), "split": result.split, "model": info.get("name"),
               "modality": info.get("modality"), "bands": info.get("bands"), "metrics": result.metrics,
               "per_class": result.per_class}
    path = out / "metrics.json"
    path.write_text(json.dumps(payload, indent=2, allow_nan=True), encoding="utf-8")
    files.append(path)
    path = out / "per_class.csv"
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(result.per_class[0]))
        writer.writeheader()
        writer.writerows(result.per_class)
    files.append(path)
    if plots:
        title = f"{info.get('name')} {info.get('modality')} — {result.split}"
        files.append(viz.per_class_bars(result.per_class, out / "per_class.png", title))
        assert result.scores is not None and result.targets is not None  # set by evaluate()
        files.append(viz.pr_curves(result.scores, result.targets, names, out / "pr_curves.png", title))
        log = Path(checkpoint).resolve().parent.parent / "metrics.csv"
        if log.is_file():
            curves = viz.training_curves(log, out / "training_curves.png",
                                         f"{info.get('name')} {info.get('modality')} — training")
            if curves:
                files.append(curves)
    return files


# ---- predict -----------------------------------------------------------------------------------
@dataclass
class Prediction:
    name: str
    probs: dict[str, float]
    labels: list[str]
    true_labels: list[str] | None = None


def _pair_sample(pair: Any, bands: tuple[str, ...], n: int, order: str) -> dict[str, Any]:
    from benmm import labels as lab
    from benmm.data.dataset import sample_layout

    sample: dict[str, Any] = {}
    for key, (group, _) in sample_layout(bands).items():
        sample[key] = torch.from_numpy(np.stack([pair.bands[b].astype(np.float32) for b in group]))
    sample["label"] = torch.from_numpy(lab.encode(pair.labels19 if n == 19 else (pair.labels43 or []),
                                                  n, order))  # type: ignore[arg-type]
    sample["name"] = pair.name
    return sample


def _archive_pairs(path: Path) -> tuple[Iterator[Any], int]:
    """Pairs of an archive root, or of the one v1 patch folder ``path``."""
    from benmm.archive import archive_kind, open_archive

    try:
        archive_kind(path)
        arc = open_archive(path)
        return (arc[name] for name in arc), len(arc)
    except ArchiveError:
        if not any(path.glob("*_labels_metadata.json")):
            raise
    from benmm.archive.v1 import pair_of_patch_folder

    return iter([pair_of_patch_folder(path)]), 1


def _classifier_only(checkpoint: str | Path, info: dict[str, Any]) -> None:
    if info.get("retrieval"):
        raise BenmmError(f"{checkpoint}: a {info['retrieval'].get('kind')} checkpoint makes codes, not class "
                         "scores; use benmm embed, index and evaluate-retrieval with it")


def predict(checkpoint: str | Path, path: str | Path, batch_size: int = 64, workers: int = 0,
            threshold: float | None = None, band_order: str | None = None) -> list[Prediction]:
    """Per-class probabilities for every pair under ``path`` (a store, an archive or a v1 patch folder)."""
    from benmm.archive import archive_kind
    from benmm.data import BatchTransform, collate

    model, info = load_checkpoint(checkpoint, band_order)
    _classifier_only(checkpoint, info)
    p = Path(path)
    names = list(info.get("class_names") or [])
    n, order = int(info.get("labels") or model.spec.num_classes), str(info.get("order") or "official")
    if not names:
        from benmm.labels import label_names

        names = list(label_names(n, order))
    thr = float(info.get("threshold", 0.5) if threshold is None else threshold)
    tf = BatchTransform(bands=model.spec.bands, resample=info.get("resample") or "bilinear",
                        stats=info.get("stats", "v1"), keep_native=bool(model.native_groups))
    out: list[Prediction] = []

    def run(batch: dict[str, Any]) -> None:
        with torch.no_grad():
            probs = torch.sigmoid(model(tf(batch)).float()).numpy()
        labels = batch["label"].numpy()
        for i, name in enumerate(batch["name"]):
            out.append(Prediction(
                name=name, probs={c: float(probs[i, j]) for j, c in enumerate(names)},
                labels=[c for j, c in enumerate(names) if probs[i, j] >= thr],
                true_labels=[c for j, c in enumerate(names) if labels[i, j] > 0.5]))

    kind = None
    if p.is_dir():
        try:
            kind = archive_kind(p)
        except ArchiveError:
            kind = None
    if kind == "store":
        dm = _datamodule(p, model, info, batch_size, workers, split=None, recommended=False)
        ds = dm.dataset(None)
        for start in range(0, len(ds), batch_size):
            run(ds.get_batch(range(start, min(len(ds), start + batch_size))))
        return out
    if not p.exists():
        raise ArchiveError(f"{p}: no such file or folder; give a store, an archive or a v1 patch folder")
    pairs, _ = _archive_pairs(p)
    chunk: list[dict[str, Any]] = []
    for pair in pairs:
        chunk.append(_pair_sample(pair, model.spec.bands, n, order))
        if len(chunk) == batch_size:
            run(collate(chunk))
            chunk = []
    if chunk:
        run(collate(chunk))
    return out
