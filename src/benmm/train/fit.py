"""Library side of ``benmm train``: recipe + store -> DataModule + model + Trainer -> checkpoints.

``train(store, out, recipe="reben", overrides=[...])`` writes into ``out``: ``checkpoints/best.ckpt``
(best val macro AP), ``checkpoints/last.ckpt``, ``checkpoints/interrupted.ckpt`` after Ctrl-C (resume
with ``resume=...``), ``metrics.csv`` (CSV logs), ``recipe.json`` (the resolved recipe) and
``model.safetensors`` (the best weights + their description, for retrieval and ``--weights``).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback, EarlyStopping, ModelCheckpoint

from benmm.atomic import atomic_path, atomic_write
from benmm.errors import BenmmError
from benmm.models import create_model
from benmm.models.weights import export_safetensors
from benmm.train.checkpoint_io import AtomicCheckpointIO
from benmm.train.recipes import load_recipe
from benmm.train.recipes.schema import MODEL_KEYS
from benmm.train.task import MONITOR, ClassificationTask

MODEL_OPTION_KEYS = MODEL_KEYS  # the model keys that are not options of the model


class TrainError(BenmmError):
    """Training cannot start: an empty split, a resume checkpoint that does not fit, bad settings."""


class InterruptCheckpoint(Callback):
    """Saves ``<dirpath>/interrupted.ckpt`` when training stops on Ctrl-C, so ``--resume`` can go on.

    (Lightning's ``OnExceptionCheckpoint`` deletes its file at teardown and, when present, makes every
    later ``fit`` silently resume from the newest checkpoint; benmm resumes only when asked.)
    """

    def __init__(self, dirpath: Path) -> None:
        self.path = Path(dirpath) / "interrupted.ckpt"

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule,
                     exception: BaseException) -> None:
        if isinstance(exception, KeyboardInterrupt):
            trainer.save_checkpoint(self.path)


class TrainInterrupted(KeyboardInterrupt):
    """Ctrl-C during training, after the resumable checkpoint was written (message says where)."""


@dataclass
class TrainResult:
    out: Path
    best: Path | None
    last: Path | None
    export: Path | None
    val: dict[str, float] = field(default_factory=dict)
    epochs: int = 0
    seconds: float = 0.0
    train_samples: int = 0


def quiet_lightning() -> None:
    """Silence Lightning's start-up chatter (GPU/TPU lines, tips, known harmless warnings)."""
    import logging
    import warnings

    for name in ("lightning.pytorch", "lightning.fabric", "lightning"):
        logging.getLogger(name).setLevel(logging.WARNING)
    for pattern in (".*LeafSpec.*", ".*does not have many workers.*", ".*exists and is not empty.*",
                    ".*smaller than the logging interval.*",
                    ".*litlogger.*", ".*number of training batches.*", ".*Checkpoint directory.*"):
        warnings.filterwarnings("ignore", message=pattern)


def model_from_recipe(recipe: dict[str, Any], num_classes: int, weights: str | None = None) -> Any:
    """The recipe's model: a classifier, or (``task`` hashing / cross-modal) a retrieval model."""
    m = dict(recipe["model"])
    bands = m.get("bands", "all")
    bands = None if bands in ("all", None, "", []) else bands
    options = {k: v for k, v in m.items() if k not in MODEL_OPTION_KEYS}
    if not options.get("drop_path_rate"):
        options.pop("drop_path_rate", None)
    task = recipe.get("task", "classification")
    if task == "cross-modal":
        supervision = str((recipe.get("retrieval") or {}).get("supervision") or "labels")
        return _cross_modal(m, bands, options, num_classes, weights, supervision)
    model = create_model(str(m["name"]), modality=str(m.get("modality", "s1s2")), num_classes=num_classes,
                         bands=bands, fusion=str(m.get("fusion", "early")), weights=weights, **options)
    if task == "hashing":
        from benmm.models.retrieval import HashModel

        return HashModel(model, int(m["bits"]))
    return model


def _cross_modal(m: dict[str, Any], bands: Any, options: dict[str, Any], num_classes: int,
                 weights: str | None, supervision: str) -> Any:
    """Two encoders: ``model.s1_name`` / ``model.s2_name`` (default ``model.name``); options named
    ``s1_<option>`` / ``s2_<option>`` go to that encoder only, the others to both."""
    from benmm.bands import choose_bands, split_by_modality
    from benmm.models.retrieval import CrossModalModel

    if weights is not None:
        raise TrainError("--weights: a cross-modal model has two encoders; start them from random weights "
                         "(or train each as a classifier and fine-tune it in the hashing recipe)")
    s2_bands, s1_bands = split_by_modality(choose_bands("s1s2", bands))
    shared = {k: v for k, v in options.items() if not k.startswith(("s1_", "s2_"))}
    encoders = {}
    for side, side_bands in (("s1", s1_bands), ("s2", s2_bands)):
        own = {k[3:]: v for k, v in options.items() if k.startswith(f"{side}_")}
        encoders[side] = create_model(str(m.get(f"{side}_name") or m["name"]), modality=side,
                                      num_classes=num_classes, bands=side_bands, **{**shared, **own})
    return CrossModalModel(encoders["s1"], encoders["s2"], int(m["bits"]), supervision)


def datamodule_for(store: Any, model: Any, recipe: dict[str, Any], workers: int, seed: int = 0) -> Any:
    from benmm.data.datamodule import BigEarthNetDataModule

    d = recipe["data"]
    return BigEarthNetDataModule(
        store, modality=model.spec.modality, bands=model.spec.bands, batch_size=int(d.get("batch_size", 64)),
        num_workers=workers, resample=str(d.get("resample", "bilinear")), labels=int(d.get("labels", 19)),
        order=str(d.get("order", "official")), stats=d.get("stats", "v1"), augment=bool(d.get("augment")),
        seed=seed, keep_native=bool(model.native_groups), recommended=bool(d.get("recommended", True)),
        countries=d.get("countries"), seasons=d.get("seasons"), bbox=d.get("bbox"),
        train_fraction=float(d.get("fraction", 1.0)), fraction_seed=int(d.get("fraction_seed", 0)),
        # the retrieval models' batch norm and contrastive losses need two patches in every training batch
        drop_last=recipe.get("task", "classification") != "classification")


def data_info(dm: Any, recipe: dict[str, Any]) -> dict[str, Any]:
    return {"labels": dm.num_classes, "order": dm.order, "class_names": list(dm.label_names),
            "resample": dm.resample,
            # the statistics' values, not their name or file: a checkpoint must not depend on a file
            # elsewhere, nor change when it does
            "stats": None if dm.eval_transform.stats is None else dm.eval_transform.stats.to_json(),
            "keep_native": dm.eval_transform.keep_native,
            "recipe": recipe.get("name"), "store": str(dm.hparams.get("store", ""))}


def make_trainer(out: Path, recipe: dict[str, Any], devices: Any = "auto", num_nodes: int = 1,
                 strategy: str = "auto", accelerator: str = "auto", progress: bool = True,
                 extra_callbacks: list[Callback] | None = None, monitor: str = MONITOR,
                 **kwargs: Any) -> L.Trainer:
    from lightning.pytorch.loggers import CSVLogger

    t = recipe["trainer"]
    ckpt_dir = out / "checkpoints"
    callbacks: list[Callback] = [
        ModelCheckpoint(dirpath=ckpt_dir, filename="best", monitor=monitor, mode="max", save_last=True,
                        auto_insert_metric_name=False),
        InterruptCheckpoint(ckpt_dir),
        *(extra_callbacks or []),
    ]
    if int(t.get("patience", 0)) > 0:
        callbacks.append(EarlyStopping(monitor=monitor, mode="max", patience=int(t["patience"])))
    if progress:
        from lightning.pytorch.callbacks import RichProgressBar

        callbacks.append(RichProgressBar(leave=True))
    return L.Trainer(
        default_root_dir=out, max_epochs=int(t.get("epochs", 1)), devices=devices, num_nodes=num_nodes,
        strategy=strategy, accelerator=accelerator, precision=t.get("precision", "32-true"),
        logger=CSVLogger(save_dir=str(out), name="", version=""), callbacks=callbacks,
        plugins=[AtomicCheckpointIO()],
        num_sanity_val_steps=0, enable_progress_bar=progress, enable_model_summary=False,
        log_every_n_steps=int(t.get("log_every_n_steps", 10)),
        gradient_clip_val=float(t["gradient_clip_val"]) if t.get("gradient_clip_val") else None, **kwargs)


def check_splits(dm: Any, splits: tuple[str, ...]) -> None:
    for split in splits:
        n = len(dm.dataset(split))
        if n == 0:
            raise TrainError(f"{dm.hparams.get('store')}: the {split} split has no samples (after the "
                             "recommended filter and the chosen countries/seasons); nothing to train on")


def train(store: Any, out: str | Path, recipe: str | Path = "reben", overrides: Any = (),
          weights: str | None = None, resume: str | Path | None = None, workers: int = 2,
          devices: Any = "auto", num_nodes: int = 1, strategy: str = "auto", accelerator: str = "auto",
          seed: int = 0, progress: bool = True, export: bool = True, band_order: str | None = None,
          **trainer_kwargs: Any) -> TrainResult:
    """Train a model on ``store`` following ``recipe`` (see the module docstring for what is written).

    ``weights`` a reBEN/ConfigILM hub folder: fine-tuning; the model (name, modality, bands) and the
    input (19 labels, reBEN statistics, nearest resampling) are set from the folder before the user's
    ``overrides`` (``band_order``: the folder's release where its name does not tell it)."""
    from benmm.models.hub import is_hub_folder, recipe_overrides

    start = time.perf_counter()
    out = Path(out)
    hub = is_hub_folder(weights)
    if hub:
        items = list(overrides.items()) if isinstance(overrides, dict) else None
        first = recipe_overrides(str(weights), band_order)
        rec = load_recipe(recipe, first + [f"{k}={json.dumps(v)}" for k, v in items] if items is not None
                          else [*first, *overrides])
    else:
        rec = load_recipe(recipe, overrides)
    L.seed_everything(seed, workers=True, verbose=False)
    num_classes = int(rec["data"].get("labels", 19))
    model = model_from_recipe(rec, num_classes, None if hub else weights)
    if hub:
        from benmm.models.hub import load_hub_weights

        load_hub_weights(model, str(weights), band_order)
    dm = datamodule_for(store, model, rec, workers, seed)
    check_splits(dm, ("train", "val"))
    if resume is not None and not Path(resume).is_file():
        raise TrainError(f"checkpoint to resume from not found: {resume}")
    existing = sorted((out / "checkpoints").glob("*.ckpt")) if (out / "checkpoints").is_dir() else []
    if existing and resume is None:
        raise TrainError(f"{out} already holds checkpoints ({', '.join(p.name for p in existing)}): resume "
                         f"with --resume {existing[-1]}, or train into another --out folder")
    task = make_task(model, rec, data_info(dm, rec))
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / "recipe.json", json.dumps(rec, indent=2))
    trainer = make_trainer(out, rec, devices=devices, num_nodes=num_nodes, strategy=strategy,
                           accelerator=accelerator, progress=progress,
                           monitor=getattr(task, "monitor", MONITOR), **trainer_kwargs)
    if resume is not None:
        _check_resume(resume, model, task.hparams["data"], task.hparams.get("objective"))
    log = out / "metrics.csv"
    old_log = log.read_text(encoding="utf-8") if resume is not None and log.is_file() else None
    try:
        trainer.fit(task, datamodule=dm, ckpt_path=str(resume) if resume else None)
    except SystemExit:  # Lightning turns Ctrl-C into sys.exit(1) after InterruptCheckpoint has saved
        import signal

        signal.signal(signal.SIGINT, signal.default_int_handler)  # Lightning left Ctrl-C ignored
        saved = out / "checkpoints" / "interrupted.ckpt"
        if saved.is_file():
            raise TrainInterrupted(f"training interrupted; resume with --resume {saved}") from None
        raise
    if old_log is not None and trainer.is_global_zero:
        _merge_logs(log, old_log)
    ckpt = next(c for c in trainer.callbacks if isinstance(c, ModelCheckpoint))  # type: ignore[attr-defined]
    best = Path(ckpt.best_model_path) if ckpt.best_model_path else None
    last = Path(ckpt.last_model_path) if ckpt.last_model_path else None
    exported = None
    if export and trainer.is_global_zero and best is not None:
        from benmm.train.task import load_checkpoint

        best_model, info = load_checkpoint(best)
        extra = {"retrieval": task.hparams["retrieval"]} if "retrieval" in task.hparams else {}
        exported = export_safetensors(best_model, out / "model.safetensors",
                                      {"data": task.data_info, "threshold": task.threshold, **extra})
        del info
    return TrainResult(out=out, best=best, last=last, export=exported,
                       val=dict(task.epoch_metrics.get("val", {})), epochs=int(trainer.current_epoch),
                       seconds=time.perf_counter() - start, train_samples=len(dm.dataset("train")))


def make_task(model: Any, recipe: dict[str, Any], data: dict[str, Any]) -> ClassificationTask:
    """The LightningModule of the recipe's task (classification, or the retrieval task)."""
    if recipe.get("task", "classification") == "classification":
        return ClassificationTask(model, optim=dict(recipe["optim"]), data=data)
    from benmm.train.retrieval_task import RetrievalTask

    return RetrievalTask(model, optim=dict(recipe["optim"]), data=data,
                         retrieval=dict(recipe.get("retrieval") or {}))


#: the data settings a resumed run must share with its checkpoint (another class order or statistics would
#: silently train a head whose classes or inputs moved)
RESUME_DATA_KEYS = ("labels", "order", "class_names", "resample", "stats", "keep_native")


def _comparable(key: str, value: Any) -> Any:
    if key == "stats" and value is not None:
        from benmm.data.transforms import resolve_stats

        resolved = resolve_stats(value)  # an older checkpoint may name them ("v1")
        return None if resolved is None else resolved.to_json()
    return list(value) if isinstance(value, tuple) else value


def _check_resume(path: str | Path, model: Any, data: dict[str, Any],
                  objective: dict[str, Any] | None = None) -> None:
    from benmm.models.weights import read_file

    _, extra = read_file(path)
    saved = (extra.get("hyper_parameters") or {}).get("data") or {}
    spec = (extra.get("hyper_parameters") or {}).get("model_spec")
    if spec is None:
        raise TrainError(f"{path}: not a benmm training checkpoint; resume needs a .ckpt from benmm train")
    mine = model.spec.to_dict()
    diff = [k for k in ("name", "modality", "bands", "fusion", "num_classes") if spec.get(k) != mine.get(k)]
    if diff:
        theirs = ", ".join(f"{k}={spec.get(k)}" for k in diff)
        ours = ", ".join(f"{k}={mine.get(k)}" for k in diff)
        raise TrainError(f"{path}: checkpoint of another model ({theirs}; this run: {ours})")
    saved_r = (extra.get("hyper_parameters") or {}).get("retrieval")
    mine_r = model.description() if hasattr(model, "description") else None
    if saved_r != mine_r:
        raise TrainError(f"{path}: checkpoint of another model (retrieval head {saved_r}; this run: "
                         f"{mine_r}); resume with the same recipe, or train anew into another --out")
    saved_o = (extra.get("hyper_parameters") or {}).get("objective") or {}
    if objective is not None and (float(saved_o.get("classification", 0)) > 0) != (
            float(objective.get("classification", 0)) > 0):
        raise TrainError(f"{path}: trained with retrieval.classification={saved_o.get('classification', 0)} "
                         f"(this run: {objective.get('classification', 0)}): the label classifier on the "
                         "codes must be on in both or off in both to resume")
    moved = [k for k in RESUME_DATA_KEYS if _comparable(k, saved.get(k)) != _comparable(k, data.get(k))]
    if moved:
        def show(k: str, v: Any) -> str:
            if k == "stats" and isinstance(v, dict):
                return f"stats={v.get('name')}"
            if k == "class_names" and v:
                return f"class_names=[{len(v)} names, first {v[0]!r}]"
            return f"{k}={v}"

        theirs = ", ".join(show(k, saved.get(k)) for k in moved)
        ours = ", ".join(show(k, data.get(k)) for k in moved)
        raise TrainError(f"{path}: the checkpoint was trained with other data settings ({theirs}; this run: "
                         f"{ours}); resume with the same settings, or train anew into another --out")


def _merge_logs(log: Path, old_text: str) -> None:
    """Lightning's CSV logger starts a fresh file on resume: keep the earlier epochs' rows in front."""
    import io

    import pandas as pd

    old = pd.read_csv(io.StringIO(old_text))
    new = pd.read_csv(log) if log.is_file() else old.iloc[0:0]
    first = new["epoch"].min() if len(new) else float("inf")
    merged = pd.concat([old[old["epoch"] < first], new], ignore_index=True)
    with atomic_path(log) as tmp:
        merged.to_csv(tmp, index=False)
