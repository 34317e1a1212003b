"""Model registry: every registered model runs forward + backward for each modality and fusion."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from benmm.bands import BAND_SIZE, split_by_modality
from benmm.errors import BandError
from benmm.models import ModelError, create_model, export_safetensors, list_models, load_weights

SLOW = {"vgg16", "vgg19", "resnet50", "resnet101", "resnet152"}
CASES = [("s1", "early"), ("s2", "early"), ("s1s2", "early"), ("s1s2", "late")]
# the modality x fusion matrix runs on the small models; each large backbone once (the matrix exercises
# benmm's stems and fusion, which are the same code for every timm backbone)
SLOW_CASES = [("s1s2", "early")]


def make_batch(bands: tuple[str, ...], n: int = 2, size: int = 120, native: bool = False,
               classes: int = 19, seed: int = 0) -> dict[str, object]:
    """A transformed batch (DESIGN §4): ``s2`` all S2 bands on one grid, ``s1``; optional native groups."""
    g = torch.Generator().manual_seed(seed)
    s2, s1 = split_by_modality(bands)
    batch: dict[str, object] = {"label": (torch.rand(n, classes, generator=g) > 0.7).float(),
                                "name": [f"p{i}" for i in range(n)]}
    if s2:
        batch["s2"] = torch.randn(n, len(s2), size, size, generator=g)
        if native:
            for key, res in (("s2_20m", 20), ("s2_60m", 60)):
                group = [b for b in s2 if BAND_SIZE[b] == 120 // (res // 10)]
                if group:
                    side = BAND_SIZE[group[0]]
                    batch[key] = torch.randn(n, len(group), side, side, generator=g)
    if s1:
        batch["s1"] = torch.randn(n, len(s1), size, size, generator=g)
    return batch


def _params(name: str) -> list[object]:
    marks = [pytest.mark.slow] if name in SLOW else []
    cases = SLOW_CASES if name in SLOW else CASES
    return [pytest.param(name, mod, fus, id=f"{name}-{mod}-{fus}", marks=marks) for mod, fus in cases]


@pytest.mark.parametrize(("name", "modality", "fusion"),
                         [p for name in list_models() for p in _params(name)])
def test_every_model_forward_backward(name: str, modality: str, fusion: str) -> None:
    opts = {"width": 8, "embed": 32} if name == "kbranch" else {}
    model = create_model(name, modality=modality, num_classes=19, fusion=fusion, **opts)
    size = 120 if name == "kbranch" else 32  # timm CNNs pool globally: a small input is enough
    n = 2  # BatchNorm needs two values per channel in training mode
    batch = make_batch(model.spec.bands, n=n, size=size, native=name == "kbranch")
    logits = model(batch)
    assert logits.shape == (n, 19)
    loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, batch["label"])  # type: ignore[arg-type]
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None for g in grads)
    assert any(float(g.abs().sum()) > 0 for g in grads if g is not None)
    model.eval()
    with torch.no_grad():
        feats = model.features(batch)
        assert feats.shape == (n, model.feature_dim)
        torch.testing.assert_close(model.head_forward(feats), model(batch))


def test_registry_lists_the_paper_baselines() -> None:
    names = list_models()
    for wanted in ("kbranch", "vgg16", "vgg19", "resnet50", "resnet101", "resnet152"):
        assert wanted in names


def test_timm_any_backbone() -> None:
    model = create_model("timm:resnet10t", modality="s2", bands="s2-rgb", num_classes=5)
    assert model(make_batch(("B02", "B03", "B04"), classes=5, size=32)).shape == (2, 5)


def test_unknown_model_lists_valid_ones() -> None:
    with pytest.raises(ModelError, match=r"unknown model 'resnet5'.*did you mean 'resnet50'.*kbranch"):
        create_model("resnet5")
    with pytest.raises(ModelError, match="timm has no model"):
        create_model("timm:no_such_net")
    with pytest.raises(ModelError, match="unknown fusion"):
        create_model("resnet18", fusion="middle")
    with pytest.raises(BandError, match="unknown modality"):  # the one modality check of benmm.bands
        create_model("resnet18", modality="rgb")


def test_bands_must_fit_modality() -> None:
    with pytest.raises(BandError, match="modality 's2' has only the bands"):
        create_model("resnet18", modality="s2", bands=["B02", "VV"])
    with pytest.raises(BandError, match="unknown band"):
        create_model("resnet18", modality="s2", bands=["B10"])
    model = create_model("resnet18", modality="s1s2", bands="s2-rgb")  # S1 added to an S2-only choice
    assert model.spec.bands == ("B02", "B03", "B04", "VV", "VH")


def test_models_and_datasets_choose_bands_by_one_rule() -> None:
    from benmm.bands import S2_BANDS, choose_bands
    from benmm.models.registry import resolve_model_bands

    for modality, bands in [("s1s2", ["VV"]), ("s1s2", "s2-rgb"), ("s1s2", None), ("s2", "s2-10m"),
                            ("s1", ["VH"])]:
        assert resolve_model_bands(modality, bands) == choose_bands(modality, bands)
    assert choose_bands("s1s2", ["VV"]) == (*S2_BANDS, "VV")  # S1 only named: every S2 band kept
    assert create_model("kbranch", modality="s1s2", bands=["VV"]).spec.bands == (*S2_BANDS, "VV")


def test_batch_with_wrong_channels_is_a_clear_error() -> None:
    model = create_model("resnet18", modality="s2", bands="s2-10m")
    with pytest.raises(ModelError, match=r"batch\['s2'\] has shape .*expects \[B, 4, H, W\]"):
        model(make_batch(("B02", "B03", "B04"), size=32))
    with pytest.raises(ModelError, match="no 's2'"):
        model({"s1": torch.zeros(1, 2, 32, 32)})


def test_kbranch_native_equals_resampled_nearest() -> None:
    """Given nearest-resampled 20/60 m bands on the 120 grid, K-Branch pools back to the native input."""
    model = create_model("kbranch", modality="s2", width=4, embed=8).eval()
    native = make_batch(model.spec.bands, native=True)
    s2_bands = model.spec.s2_bands
    full = torch.empty(2, len(s2_bands), 120, 120)
    i10 = i20 = i60 = 0
    for c, band in enumerate(s2_bands):
        if BAND_SIZE[band] == 120:
            full[:, c] = native["s2"][:, i10]  # type: ignore[index]
            i10 += 1
        elif BAND_SIZE[band] == 60:
            full[:, c] = native["s2_20m"][:, i20].repeat_interleave(2, 1).repeat_interleave(2, 2)  # type: ignore[index]
            i20 += 1
        else:
            full[:, c] = native["s2_60m"][:, i60].repeat_interleave(6, 1).repeat_interleave(6, 2)  # type: ignore[index]
            i60 += 1
    with torch.no_grad():
        torch.testing.assert_close(model(native), model({"s2": full}), rtol=1e-3, atol=1e-4)


def test_kbranch_groups_follow_bands() -> None:
    rgb = create_model("kbranch", modality="s2", bands="s2-rgb", width=4, embed=8)
    assert list(rgb.branches) == ["b10m"]  # type: ignore[arg-type]
    late = create_model("kbranch", modality="s1s2", fusion="late", width=4, embed=8)
    assert list(late.branches) == ["b60m", "b10m", "b20m", "s1"]  # type: ignore[arg-type]


def test_timm_state_dict_weights(tmp_path: Path) -> None:
    import timm
    from safetensors.torch import save_file

    src = timm.create_model("resnet18", pretrained=False, num_classes=1000)  # an ImageNet-shaped file
    state = src.state_dict()
    torch.save(state, tmp_path / "r18.pth")
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / "r18.safetensors"))
    for name in ("r18.pth", "r18.safetensors"):
        model = create_model("resnet18", modality="s1s2", fusion="late", weights=str(tmp_path / name))
        for backbone in model.backbones.values():  # type: ignore[operator]
            torch.testing.assert_close(backbone.layer1[0].conv1.weight, state["layer1.0.conv1.weight"])
        # stems adapted from 3 to 12 and 2 bands
        assert model.backbones["s2"].conv1.weight.shape[1] == 12  # type: ignore[index]
        assert model.backbones["s1"].conv1.weight.shape[1] == 2  # type: ignore[index]
    other = timm.create_model("resnet34", pretrained=False)
    torch.save(other.state_dict(), tmp_path / "r34.pth")
    with pytest.raises(ModelError, match=r"r34.pth"):
        create_model("resnet18", weights=str(tmp_path / "r34.pth"))


def test_benmm_weights_roundtrip_and_mismatch(tmp_path: Path) -> None:
    model = create_model("resnet18", modality="s2", num_classes=19).eval()
    path = export_safetensors(model, tmp_path / "m.safetensors", {"data": {}})
    again = create_model("resnet18", modality="s2", num_classes=19, weights=str(path)).eval()
    batch = make_batch(model.spec.bands, size=32)
    with torch.no_grad():
        torch.testing.assert_close(again(batch), model(batch))
    wrong = create_model("resnet18", modality="s2", num_classes=43)
    with pytest.raises(ModelError,
                       match=r"layer 'head\.fc\.(weight|bias)' has shape \(19,.*\) in the file but \(43,"):
        load_weights(wrong, path)
    with pytest.raises(ModelError, match="not found"):
        create_model("resnet18", weights=str(tmp_path / "nope.ckpt"))
