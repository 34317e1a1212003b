"""reBEN/ConfigILM hub folders in and out: keys, band order per release, class order, bad input.

A hub folder is made here the way ConfigILM makes its image classifier (``timm.create_model(name,
num_classes=19, in_chans=C)``, keys under ``model.vision_encoder.``, ``class_names`` "0".."18"); the
real package is checked against benmm by ``benchmarks/interop_configilm.py``."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import save_file
from typer.testing import CliRunner

from benmm.cli.app import app
from benmm.labels import label_names
from benmm.models import export_safetensors
from benmm.models.hub import RELEASE_BANDS, HubError, load_hub
from benmm.models.hub_export import ILM_DEFAULTS, HubExportError, export_configilm
from benmm.train.export import ExportError, export
from benmm.train.task import load_checkpoint

ARCH = "test_resnet"  # timm's tiny test network (0.4 M parameters)
OFFICIAL = list(label_names(19, "official"))
ALPHA = list(label_names(19, "alphabetical"))


def make_hub(folder: Path, release: str = "v0.2.0", config: str = "all", seed: int = 0,
             **overrides: object) -> torch.nn.Module:
    """A ConfigILM-style hub folder; returns its timm network (eval mode)."""
    bands = RELEASE_BANDS[release][config]
    torch.manual_seed(seed)
    net = timm.create_model(ARCH, num_classes=19, in_chans=len(bands), pretrained=False).eval()
    folder.mkdir(parents=True, exist_ok=True)
    save_file({f"model.vision_encoder.{k}": v.contiguous() for k, v in net.state_dict().items()},
              str(folder / "model.safetensors"), metadata={"format": "pt"})
    cfg = {**ILM_DEFAULTS, "timm_model_name": ARCH, "channels": len(bands), "classes": 19,
           "class_names": [str(i) for i in range(19)], **overrides}
    (folder / "config.json").write_text(json.dumps(cfg, sort_keys=True))
    return net


def bands_batch(n: int = 2, size: int = 120, seed: int = 1) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {b: torch.randn(n, size, size, generator=g) for b in ("B01", "B02", "B03", "B04", "B05", "B06",
                                                                  "B07", "B08", "B8A", "B09", "B11", "B12",
                                                                  "VV", "VH")}


def hub_logits(net: torch.nn.Module, bands: tuple[str, ...], x: dict[str, torch.Tensor]) -> torch.Tensor:
    """ConfigILM's view: the bands stacked in the release's order, classes alphabetical."""
    with torch.no_grad():
        return net(torch.stack([x[b] for b in bands], dim=1))


def benmm_logits(model: torch.nn.Module, x: dict[str, torch.Tensor]) -> torch.Tensor:
    spec = model.spec  # type: ignore[attr-defined]
    batch = {}
    if spec.s2_bands:
        batch["s2"] = torch.stack([x[b] for b in spec.s2_bands], dim=1)
    if spec.s1_bands:
        batch["s1"] = torch.stack([x[b] for b in spec.s1_bands], dim=1)
    with torch.no_grad():
        return model(batch)


def as_alphabetical(logits: torch.Tensor) -> torch.Tensor:
    return logits[:, [OFFICIAL.index(name) for name in ALPHA]]


@pytest.mark.parametrize(("release", "config"), [("v0.2.0", "all"), ("v0.1.1", "all"), ("v0.1.1", "s2"),
                                                 ("v0.2.0", "s1")])
def test_hub_model_gives_configilms_logits_in_benmms_bands_and_classes(
        tmp_path: Path, release: str, config: str) -> None:
    folder = tmp_path / f"{ARCH.replace('_', '')}-{config}-{release}"  # reBEN's naming: arch-config-version
    net = make_hub(folder, release, config)
    model, info = load_checkpoint(folder)
    x = bands_batch()
    torch.testing.assert_close(as_alphabetical(benmm_logits(model, x)),
                               hub_logits(net, RELEASE_BANDS[release][config], x), rtol=1e-5, atol=1e-5)
    assert info["class_names"] == OFFICIAL and info["resample"] == "nearest"
    assert info["stats"]["name"] == "reben" and info["release"] == release
    canonical = ("B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B11", "B12", "VV", "VH")
    want = tuple(b for b in canonical if b in RELEASE_BANDS[release][config])
    assert model.spec.bands == want  # type: ignore[attr-defined]


def test_wrong_band_order_changes_logits_and_the_right_one_reproduces_them(tmp_path: Path) -> None:
    folder = tmp_path / "downloaded"  # a name that tells no release
    net = make_hub(folder, "v0.1.1", "all")
    with pytest.raises(HubError, match=re.escape("--band-order v0.1.1|v0.2.0")):
        load_hub(folder)
    x = bands_batch()
    want = hub_logits(net, RELEASE_BANDS["v0.1.1"]["all"], x)
    right, _ = load_hub(folder, band_order="v0.1.1")
    wrong, _ = load_hub(folder, band_order="v0.2.0")
    torch.testing.assert_close(as_alphabetical(benmm_logits(right, x)), want, rtol=1e-5, atol=1e-5)
    assert (as_alphabetical(benmm_logits(wrong, x)) - want).abs().max() > 1e-2


def test_class_names_in_the_config_set_the_head_order(tmp_path: Path) -> None:
    folder = tmp_path / "m-s2-v0.2.0"
    net = make_hub(folder, config="s2", class_names=OFFICIAL)  # rows already in official order
    model, _ = load_hub(folder)
    x = bands_batch()
    torch.testing.assert_close(benmm_logits(model, x), hub_logits(net, RELEASE_BANDS["v0.2.0"]["s2"], x),
                               rtol=1e-5, atol=1e-5)


def test_export_configilm_round_trip(tmp_path: Path) -> None:
    src = tmp_path / "resnet-all-v0.1.1"
    make_hub(src, "v0.1.1", "all")
    model, info = load_hub(src)
    out = tmp_path / "exported"
    ckpt = export_safetensors(model, tmp_path / "m.safetensors", {"data": info})  # as `benmm train` does
    run = CliRunner().invoke(app, ["export", str(ckpt), "--format", "configilm", "--out", str(out)])
    assert run.exit_code == 0, run.output
    assert sorted(p.name for p in out.iterdir()) == ["benmm.json", "config.json", "model.safetensors"]
    cfg = json.loads((out / "config.json").read_text())
    assert set(cfg) == set(ILM_DEFAULTS) and cfg["channels"] == 12 and cfg["class_names"] == ALPHA
    # ConfigILM's side: timm.create_model + the state under model.vision_encoder., bands in v0.2.0 order
    from safetensors.torch import load_file

    saved = load_file(out / "model.safetensors")
    state = {k.removeprefix("model.vision_encoder."): v for k, v in saved.items()}
    net = timm.create_model(cfg["timm_model_name"], num_classes=19, in_chans=12, pretrained=False).eval()
    net.load_state_dict(state)
    x = bands_batch()
    torch.testing.assert_close(hub_logits(net, RELEASE_BANDS["v0.2.0"]["all"], x),
                               as_alphabetical(benmm_logits(model, x)), rtol=1e-5, atol=1e-5)
    back, _ = load_hub(out)  # benmm.json tells the bands; the folder's name does not matter
    torch.testing.assert_close(benmm_logits(back, x), benmm_logits(model, x))


def test_cli_evaluate_predict_and_embed_with_a_hub_folder(tmp_path: Path, v1_sample_store) -> None:  # type: ignore[no-untyped-def]
    store = v1_sample_store  # the shipped real pairs
    folder = tmp_path / "testresnet-all-v0.2.0"
    make_hub(folder)
    run = CliRunner().invoke(app, ["evaluate", str(folder), str(store.path), "--split", "test",
                                   "--out", str(tmp_path / "ev"), "--json", "--workers", "0"])
    assert run.exit_code == 0, run.output
    assert json.loads((tmp_path / "ev" / "metrics.json").read_text())["bands"][-2:] == ["VV", "VH"]
    run = CliRunner().invoke(app, ["predict", str(folder), str(store.path), "--out",
                                   str(tmp_path / "p.json")])
    assert run.exit_code == 0, run.output
    probs = json.loads((tmp_path / "p.json").read_text())
    assert len(probs) == len(store) and set(probs[0]["probs"]) == set(OFFICIAL)
    run = CliRunner().invoke(app, ["embed", str(folder), str(store.path), str(tmp_path / "emb"),
                                   "--limit", "2"])
    assert run.exit_code == 0, run.output
    emb = json.loads((tmp_path / "emb" / "embeddings.json").read_text())
    assert emb["dim"] == load_hub(folder)[0].feature_dim and emb["checkpoint"] == str(folder.resolve())
    (tmp_path / "nothing").mkdir()
    run = CliRunner().invoke(app, ["evaluate", str(tmp_path / "nothing"), str(store.path)])
    assert run.exit_code == 2 and "config.json: missing" in run.output.replace("\n", "")


def test_train_fine_tunes_a_hub_folder_and_refuses_another_label_set(tmp_path: Path, synthetic) -> None:  # type: ignore[no-untyped-def]
    store = synthetic.store(pairs=20, layout="reben")
    folder = tmp_path / "testresnet-s2-v0.2.0"
    make_hub(folder, config="s2")
    args = ["train", str(store.path), "--recipe", "demo", "--weights", str(folder), "--epochs", "1",
            "--workers", "0", "--accelerator", "cpu", "--batch-size", "8"]
    run = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "run")])
    assert run.exit_code == 0, run.output
    recipe = json.loads((tmp_path / "run" / "recipe.json").read_text())
    assert recipe["model"]["name"] == f"timm:{ARCH}" and recipe["data"]["stats"] == "reben"
    run = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "run43"), "--labels", "43"])
    assert run.exit_code == 2 and "does not fit" in run.output.replace("\n", " ")


def test_bad_hub_folders_say_what_is_wrong(tmp_path: Path) -> None:
    folder = tmp_path / "m-all-v0.2.0"
    make_hub(folder)
    (folder / "config.json").write_text(json.dumps({"model": "resnet"}))
    with pytest.raises(HubError, match=r"config.json: not a ConfigILM ILMConfiguration \(no timm_model_name"):
        load_hub(folder)
    make_hub(folder, classes=43)
    with pytest.raises(HubError, match="classes=43"):
        load_hub(folder)
    make_hub(folder, channels=10)  # the name says all (12 bands)
    with pytest.raises(HubError, match=re.escape("channels=10, but its band configuration takes 12")):
        load_hub(folder)
    make_hub(folder)
    with pytest.raises(HubError, match=re.escape("release v0.2.0, --band-order says v0.1.1")):
        load_hub(folder, band_order="v0.1.1")
    other = tmp_path / "m-all-v0.9.0"
    make_hub(other)
    with pytest.raises(HubError, match=re.escape("release v0.9.0 has no known band order")):
        load_hub(other)
    (folder / "model.safetensors").unlink()
    with pytest.raises(HubError, match=re.escape("model.safetensors: missing")):
        load_hub(folder)


def test_export_refusals(tmp_path: Path) -> None:
    (tmp_path / "run" / "checkpoints").mkdir(parents=True)
    with pytest.raises(ExportError, match=re.escape("no checkpoints/best.ckpt")):
        export(tmp_path / "run", "configilm", tmp_path / "out")
    from benmm.models import create_model

    model = create_model(f"timm:{ARCH}", modality="s2", num_classes=19, bands="s2-rgb")
    with pytest.raises(HubExportError, match="no reBEN band configuration"):
        export_configilm(model, {}, tmp_path / "x", "m.ckpt")
    model = create_model(f"timm:{ARCH}", modality="s1", num_classes=43)
    with pytest.raises(HubExportError, match="43-class model"):
        export_configilm(model, {}, tmp_path / "x", "m.ckpt")


def test_reben_statistics_are_named_data_with_their_source() -> None:
    from benmm.bands import ALL_BANDS, load_stats
    from benmm.train.recipes import load_recipe

    stats = load_stats("reben")
    assert set(stats.mean) == set(stats.std) == set(ALL_BANDS)
    assert "ConfigILM" in stats.source and "120_nearest" in stats.source
    assert load_recipe("demo", ['data.stats="reben"'])["data"]["stats"] == "reben"
