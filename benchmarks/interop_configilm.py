"""benmm <-> ConfigILM / reBEN model folders, checked against the real ``configilm`` package.

ConfigILM pins numpy < 2, old timm and python < 3.12, so it is never installed into benmm's
environment: the script runs its ConfigILM side in the peer virtual environment of
``benchmarks/load.py`` (made with pip on first use, ``peer_python``), as a subprocess of this file in
``--peer`` mode, which imports no benmm.

1. **Weights in.** The peer builds ConfigILM image classifiers (``ConfigILM(ILMConfiguration(...))``
   inside a ``PyTorchModelHubMixin`` module whose ``.model`` is the ConfigILM model, as reBEN's
   ``BigEarthNetv2_0_ImageClassifier`` is) for timm ``resnet18`` and ``convnextv2_atto`` on S1+S2, S2
   and S1, saves each with ``save_pretrained(folder, config=config)`` as reBEN does, and computes their
   logits on the same patches the reBEN way: ``stack_and_interpolate(bands, order, 120, "nearest")``
   (``BENv2DataSet``), then ``Normalize(*band_combi_to_mean_std(order))`` (``BENv2DataModule``'s
   default transform). Release v0.2.0 folders use ConfigILM 0.7's ``STANDARD_BANDS[channels]``; a
   v0.1.1 folder stacks the bands in the old order of the model cards. benmm loads each folder
   (``load_checkpoint``) and computes logits from the same native-size bands with its own batch
   transform (the reBEN statistics and nearest resampling the folder's info carries).
2. **Weights out.** benmm models (random init, seeded) are written with ``benmm export --format
   configilm``; the peer loads each with ``from_pretrained(folder, strict=True)`` and computes logits
   the reBEN way; benmm compares them to its own.
3. **It can fail.** The v0.1.1 folder read as v0.2.0 (``band_order``) must give other logits.

Pass: ``torch.allclose(benmm, configilm, rtol=1e-4, atol=1e-4)`` on float32 logits, classes matched
by name (ConfigILM's alphabetical order vs benmm's official order).

    python benchmarks/interop_configilm.py [--venv DIR] [--pairs 8]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from load import CACHE, PEER_PACKAGES, peer_python

ARCHS = ("resnet18", "convnextv2_atto")
RTOL = ATOL = 1e-4
#: v0.1.1 input orders, from the model cards (huggingface.co/BIFOLD-BigEarthNetv2-0/resnet101-s1-v0.1.1);
#: ConfigILM >= 0.7 no longer has them (its STANDARD_BANDS give the v0.2.0 order)
V011 = {"all": ["B02", "B03", "B04", "B08", "B05", "B06", "B07", "B11", "B12", "B8A", "VH", "VV"]}
CHANNELS = {"all": 12, "s2": 10, "s1": 2}
PEER_IMPORTS = "configilm.ConfigILM, configilm.extra.BENv2_utils, huggingface_hub, safetensors"


# ----------------------------------------------------------------------------------------------
# peer side: runs inside the ConfigILM venv, never imports benmm
def peer_main(job_path: str) -> None:
    import importlib.metadata as md

    import numpy as np
    import torch
    from configilm.ConfigILM import ConfigILM, ILMConfiguration, ILMType
    from configilm.extra._defaults import default_transform
    from configilm.extra.BENv2_utils import (
        NEW_LABELS,
        STANDARD_BANDS,
        band_combi_to_mean_std,
        stack_and_interpolate,
    )
    from huggingface_hub import PyTorchModelHubMixin

    class Classifier(torch.nn.Module, PyTorchModelHubMixin):  # reBEN's wrapper, less Lightning
        def __init__(self, config: ILMConfiguration) -> None:
            super().__init__()
            # the mixin turns config.json into ILMConfiguration(**json) when it can read the annotation;
            # this file's annotations are strings (__future__), so it hands over the dict: do the same
            config = ILMConfiguration(**config) if isinstance(config, dict) else config
            self.config = config
            self.model = ConfigILM(config)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.model(x)

    job = json.loads(Path(job_path).read_text())
    patches = np.load(job["patches"])
    names = sorted({k.split("/")[0] for k in patches.files})

    def logits(model: torch.nn.Module, order: list[str]) -> np.ndarray:
        mean, std = band_combi_to_mean_std(order)
        tf = default_transform(img_size=(120, 120), mean=mean, std=std)
        x = torch.stack([tf(stack_and_interpolate({b: patches[f"{n}/{b}"] for b in order}, order=order,
                                                  img_size=120, upsample_mode="nearest")) for n in names])
        model.eval()
        with torch.no_grad():
            return model(x).numpy()

    out: dict[str, Any] = {"versions": {p: md.version(p) for p in ("configilm", "timm", "torch", "numpy",
                                                                    "huggingface_hub")},
                           "classes": list(NEW_LABELS), "names": names}
    arrays: dict[str, np.ndarray] = {}
    for case in job["make"]:
        order = (V011[case["config"]] if case["release"] == "v0.1.1"
                 else STANDARD_BANDS[CHANNELS[case["config"]]])
        torch.manual_seed(case["seed"])
        config = ILMConfiguration(network_type=ILMType.IMAGE_CLASSIFICATION, classes=19, image_size=120,
                                  drop_rate=0.15, drop_path_rate=0.15, timm_model_name=case["arch"],
                                  channels=len(order))
        model = Classifier(config)
        model.save_pretrained(case["folder"], config=config)
        arrays[case["folder"]] = logits(model, list(order))
    for folder in job["load"]:
        model = Classifier.from_pretrained(folder, strict=True)
        arrays[folder] = logits(model, list(STANDARD_BANDS[model.config.channels]))
    np.savez(job["arrays"], **arrays)
    Path(job["result"]).write_text(json.dumps(out))


# ----------------------------------------------------------------------------------------------
# benmm side
def patches(pairs: int, work: Path) -> Path:
    """Native-size bands (S2 DN at 120/60/20 px, S1 dB) of a small synthetic archive, as .npz."""
    import numpy as np

    import benmm
    from benmm.synth.archive import synthesize

    path = work / f"interop-patches-{pairs}.npz"
    if not path.is_file():
        root = work / f"interop-synth-{pairs}"
        if not root.is_dir():
            synthesize(root, pairs=pairs, seed=0, layout="v1")
        archive = benmm.open_archive(root)
        arrays = {f"{name}/{b}": np.asarray(v) for name in archive.names()
                  for b, v in archive[name].bands.items()}
        np.savez(path, **arrays)
    return path


def benmm_logits(model: Any, info: dict[str, Any], npz: Any, names: list[str]) -> Any:
    import numpy as np
    import torch

    from benmm.data import BatchTransform
    from benmm.data.dataset import sample_layout

    bands = tuple(info["bands"])
    batch = {key: torch.from_numpy(np.stack([np.stack([npz[f"{n}/{b}"].astype(np.float32) for b in group])
                                             for n in names]))
             for key, (group, _side) in sample_layout(bands).items()}
    batch["name"] = names
    tf = BatchTransform(bands=bands, resample=info["resample"], stats=info["stats"])
    with torch.no_grad():
        return model(tf(batch)).numpy()


def compare(ours: Any, theirs: Any, classes: list[str]) -> tuple[float, float, bool]:
    import numpy as np
    import torch

    from benmm.labels import label_names

    official = list(label_names(19, "official"))
    mine = ours[:, [official.index(c) for c in classes]]  # benmm's columns in ConfigILM's order
    diff = float(np.abs(mine - theirs).max())
    close = torch.allclose(torch.from_numpy(mine), torch.from_numpy(theirs), rtol=RTOL, atol=ATOL)
    return diff, float(np.abs(theirs).max()), bool(close)


def exports(work: Path) -> list[tuple[str, Path, Any, dict[str, Any]]]:
    """benmm models (seeded random init) written with `export --format configilm`."""
    import torch

    from benmm.bands import stats_reben
    from benmm.models import create_model, export_safetensors
    from benmm.train.export import export
    from benmm.train.task import load_checkpoint

    out = []
    for arch in ARCHS:
        for modality, bands in (("s1s2", "s2-10m20m"), ("s2", "s2-10m20m"), ("s1", None)):
            torch.manual_seed(7)
            model = create_model(f"timm:{arch}", modality=modality, num_classes=19, bands=bands,
                                 drop_rate=0.15, drop_path_rate=0.15)
            ckpt = work / f"benmm-{arch}-{modality}.safetensors"
            data = {"labels": 19, "order": "official", "resample": "nearest",
                    "stats": stats_reben().to_json()}
            export_safetensors(model, ckpt, {"data": data})
            folder = work / f"benmm-export-{arch}-{modality}"
            export(ckpt, "configilm", folder)
            model, info = load_checkpoint(ckpt)
            out.append((f"{arch} {modality}", folder, model, info))
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--venv", type=Path, default=CACHE / "venv", help="peer environment (configilm)")
    ap.add_argument("--work", type=Path, default=CACHE / "interop", help="folders and patches")
    ap.add_argument("--pairs", type=int, default=8, help="patches to compare logits on")
    ap.add_argument("--no-install", action="store_true", help="do not create the peer environment")
    ap.add_argument("--peer", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.peer:
        peer_main(args.peer)
        return
    import numpy as np
    import torch

    from benmm.models.hub import load_hub
    from benmm.train.task import load_checkpoint

    torch.set_num_threads(2)
    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    py, reason = peer_python(args.venv, install=not args.no_install, packages=PEER_PACKAGES,
                             imports=PEER_IMPORTS)
    if py is None:
        print(f"ConfigILM side not run: {reason}")
        sys.exit(1)
    npz_path = patches(args.pairs, work)
    made = [{"arch": a, "config": c, "release": "v0.2.0", "seed": 1, "folder": str(work / f"{a}-{c}-v0.2.0")}
            for a in ARCHS for c in ("all", "s2", "s1")]
    made.append({"arch": "resnet18", "config": "all", "release": "v0.1.1", "seed": 2,
                 "folder": str(work / "resnet18-all-v0.1.1")})
    ours = exports(work)
    job = {"patches": str(npz_path), "make": made, "load": [str(f) for _, f, _, _ in ours],
           "arrays": str(work / "configilm-logits.npz"), "result": str(work / "configilm-result.json")}
    (work / "job.json").write_text(json.dumps(job))
    run = subprocess.run([str(py), __file__, "--peer", str(work / "job.json")], capture_output=True,
                         text=True)
    if run.returncode:
        print(f"ConfigILM side failed:\n{run.stderr[-3000:]}")
        sys.exit(1)
    res = json.loads(Path(job["result"]).read_text())
    theirs = np.load(job["arrays"])
    npz = np.load(npz_path)
    names, classes = res["names"], res["classes"]
    versions = ", ".join(f"{k} {v}" for k, v in res["versions"].items())
    print(f"ConfigILM side: {versions}, python in {args.venv}")
    print(f"{len(names)} patches (synthetic, native sizes); pass = allclose(rtol={RTOL}, atol={ATOL}) "
          "on logits\n")
    rows, ok_all = [], True
    for case in made:
        model, info = load_checkpoint(case["folder"])
        diff, size, ok = compare(benmm_logits(model, info, npz, names), theirs[case["folder"]], classes)
        rows.append((f"in   {Path(case['folder']).name}", f"{info['release']} {info['modality']}", size, diff,
                     ok))
        ok_all &= ok
    for label, folder, model, info in ours:
        diff, size, ok = compare(benmm_logits(model, info, npz, names), theirs[str(folder)], classes)
        rows.append((f"out  {folder.name}", label, size, diff, ok))
        ok_all &= ok
    v011 = work / "resnet18-all-v0.1.1"
    unnamed = work / "unnamed-v011"  # the same files under a name that tells no release
    unnamed.mkdir(exist_ok=True)
    for f in ("config.json", "model.safetensors"):
        (unnamed / f).write_bytes((v011 / f).read_bytes())
    model, info = load_hub(unnamed, band_order="v0.2.0")
    diff, size, ok = compare(benmm_logits(model, info, npz, names), theirs[str(v011)], classes)
    rows.append(("in   v0.1.1 folder read as v0.2.0", "must differ", size, diff, not ok))
    ok_all &= not ok
    print(f"{'check':<40} {'model':<22} {'max |logit|':>11} {'max |logit diff|':>17}  result")
    for what, label, size, diff, ok in rows:
        print(f"{what:<40} {label:<22} {size:>11.3e} {diff:>17.3e}  {'ok' if ok else 'FAIL'}")
    print("\nall checks passed" if ok_all else "\nSOME CHECKS FAILED")
    sys.exit(0 if ok_all else 1)


if __name__ == "__main__":
    main()
