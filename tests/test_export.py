"""`benmm export`: the timm backbone loads with timm.create_model and gives benmm's features; the
safetensors export carries what later uses need."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import timm
import torch
from typer.testing import CliRunner

from benmm.cli.app import app
from benmm.models import create_model, export_safetensors
from benmm.models.hub_export import HubExportError
from benmm.train.export import ExportError, export
from benmm.train.task import load_checkpoint
from test_models import make_batch


def _saved(tmp_path: Path, **kwargs: object) -> tuple[object, Path]:
    torch.manual_seed(0)
    model = create_model("resnet18", num_classes=19, **kwargs)  # type: ignore[arg-type]
    model.eval()
    path = export_safetensors(model, tmp_path / "model.safetensors",
                              {"data": {"labels": 19, "order": "official", "resample": "bilinear"}})
    return model, path


def test_timm_export_loads_in_timm_and_gives_benmms_features(tmp_path: Path) -> None:
    model, path = _saved(tmp_path, modality="s2", bands="s2-10m")
    out = CliRunner().invoke(app, ["export", str(path), "--format", "timm",
                                   "--out", str(tmp_path / "bb.safetensors")])
    assert out.exit_code == 0, out.output
    side = json.loads((tmp_path / "bb.json").read_text())
    assert side["in_chans"] == 4 and side["bands"] == ["B02", "B03", "B04", "B08"]
    backbone = timm.create_model("resnet18", pretrained=True, in_chans=4, num_classes=0,
                                 pretrained_cfg_overlay={"file": str(tmp_path / "bb.safetensors")})
    backbone.eval()
    batch = make_batch(model.spec.bands, n=2, size=64)  # type: ignore[attr-defined]
    with torch.no_grad():
        torch.testing.assert_close(backbone(batch["s2"]), model.features(batch))  # type: ignore[attr-defined]


def test_late_fusion_exports_one_backbone_per_modality(tmp_path: Path) -> None:
    _, path = _saved(tmp_path, modality="s1s2", fusion="late", bands=["B02", "B03", "B04", "VV", "VH"])
    files = export(path, "timm", tmp_path / "bb.safetensors")
    names = sorted(p.name for p in files)
    assert names == ["bb-s1.json", "bb-s1.safetensors", "bb-s2.json", "bb-s2.safetensors"]
    assert json.loads((tmp_path / "bb-s1.json").read_text())["in_chans"] == 2


def test_safetensors_export_carries_its_settings_and_kbranch_is_not_timm(tmp_path: Path) -> None:
    _, path = _saved(tmp_path, modality="s2", bands="s2-10m")
    again = export(tmp_path, "safetensors", tmp_path / "again.safetensors")[0]  # a run folder works too
    _, info = load_checkpoint(again)
    assert info["bands"] == ["B02", "B03", "B04", "B08"] and info["resample"] == "bilinear"
    kb = create_model("kbranch", modality="s2", num_classes=19, width=4, embed=8)
    export_safetensors(kb, tmp_path / "kb.safetensors", {})
    with pytest.raises(ExportError, match="has no timm backbone"):
        export(tmp_path / "kb.safetensors", "timm", tmp_path / "x.safetensors")
    with pytest.raises(HubExportError, match="no reBEN band configuration"):  # B02-B04, B08 is none
        export(path, "configilm", tmp_path / "y")
