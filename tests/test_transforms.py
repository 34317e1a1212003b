"""Batch transforms: resample/merge/normalise/augment on whole batches vs. the same per sample."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from benmm.bands import ALL_BANDS, BAND_SIZE, S2_BANDS, BandStats, stats_v1
from benmm.data import BatchTransform, TransformError
from benmm.data.transforms import transform_sample
from benmm.errors import BandError

B = 5


def random_batch(seed: int = 0, bands: tuple[str, ...] = ALL_BANDS) -> dict[str, object]:
    """A collated batch at native size: S2 groups in DN-like ranges, S1 in fractional dB."""
    g = torch.Generator().manual_seed(seed)
    groups = {"s2": [b for b in bands if BAND_SIZE[b] == 120 and b in S2_BANDS],
              "s2_20m": [b for b in bands if BAND_SIZE[b] == 60],
              "s2_60m": [b for b in bands if BAND_SIZE[b] == 20]}
    batch: dict[str, object] = {}
    for key, group in groups.items():
        if group:
            side = BAND_SIZE[group[0]]
            batch[key] = torch.randint(0, 10000, (B, len(group), side, side), generator=g).float()
    if "VV" in bands:
        batch["s1"] = -25 + 20 * torch.rand((B, 2, 120, 120), generator=g)
    batch["label"] = torch.zeros(B, 19)
    batch["name"] = [f"p{i}" for i in range(B)]
    return batch


def reference(batch: dict[str, object], mode: str, stats: BandStats | None,
              bands: tuple[str, ...] = ALL_BANDS) -> dict[str, torch.Tensor]:
    """Per sample, per band: interpolate with torch, then normalise (the textbook order)."""
    s2 = [b for b in S2_BANDS if b in bands]
    key_of = {120: "s2", 60: "s2_20m", 20: "s2_60m"}
    out_s2 = []
    for i in range(B):
        chans = []
        for band in s2:
            key = key_of[BAND_SIZE[band]]
            group = [b for b in s2 if BAND_SIZE[b] == BAND_SIZE[band]]
            x = batch[key][i, group.index(band)][None, None]  # type: ignore[index]
            if x.shape[-1] != 120:
                x = F.interpolate(x, size=(120, 120), mode=mode,
                                  align_corners=None if mode == "nearest" else False)
            if stats is not None:
                x = (x - stats.mean[band]) / stats.std[band]
            chans.append(x[0, 0])
        out_s2.append(torch.stack(chans))
    out = {"s2": torch.stack(out_s2)}
    s1 = batch["s1"]
    if stats is not None:
        mean = torch.tensor([stats.mean["VV"], stats.mean["VH"]]).view(1, 2, 1, 1)
        std = torch.tensor([stats.std["VV"], stats.std["VH"]]).view(1, 2, 1, 1)
        s1 = (s1 - mean) / std  # type: ignore[operator]
    out["s1"] = s1  # type: ignore[assignment]
    return out


@pytest.mark.parametrize("mode", ["nearest", "bilinear", "bicubic"])
@pytest.mark.parametrize("stats", [None, "v1"])
def test_batch_equals_per_sample_interpolate(mode: str, stats: str | None) -> None:
    batch = random_batch()
    tf = BatchTransform(resample=mode, stats=stats)
    out = tf(batch)
    ref = reference(batch, mode, stats_v1() if stats else None)
    assert set(out) == {"s2", "s1", "label", "name"}  # native groups dropped
    assert out["s2"].shape == (B, 12, 120, 120)
    # normalising before resampling equals normalising after, up to float rounding
    atol = 1e-4 if stats else 2e-3  # DN scale (0..10000) without stats
    torch.testing.assert_close(out["s2"], ref["s2"], atol=atol, rtol=1e-5)
    torch.testing.assert_close(out["s1"], ref["s1"], atol=1e-5, rtol=1e-5)
    # and one sample through the same transform equals its row of the batch
    one = transform_sample({k: v[2] for k, v in batch.items()}, tf)  # type: ignore[index]
    torch.testing.assert_close(one["s2"], out["s2"][2])


def test_merge_puts_bands_in_canonical_order() -> None:
    batch = random_batch(1)
    out = BatchTransform(resample="nearest", stats=None)(batch)
    s2 = out["s2"]
    # B05 is the first 20 m band: nearest x2 replicates each pixel into a 2x2 block
    b05 = batch["s2_20m"][:, 0]  # type: ignore[index]
    assert torch.equal(s2[:, S2_BANDS.index("B05")], b05.repeat_interleave(2, -1).repeat_interleave(2, -2))
    b09 = batch["s2_60m"][:, 1]  # type: ignore[index]
    assert torch.equal(s2[:, S2_BANDS.index("B09")], b09.repeat_interleave(6, -1).repeat_interleave(6, -2))
    assert torch.equal(s2[:, S2_BANDS.index("B08")], batch["s2"][:, 3])  # type: ignore[index]


def test_band_subset_and_align_corners_option() -> None:
    bands = ("B02", "B05", "B8A", "VV", "VH")
    batch = random_batch(2, bands)
    assert "s2_60m" not in batch
    tf = BatchTransform(bands=bands, resample="bilinear", stats="v1")
    out = tf(batch)
    assert out["s2"].shape == (B, 3, 120, 120)
    ref = reference(batch, "bilinear", stats_v1(), bands)
    torch.testing.assert_close(out["s2"], ref["s2"], atol=1e-4, rtol=1e-5)
    corners = BatchTransform(bands=bands, resample="bilinear", stats=None, align_corners=True)(batch)
    x = batch["s2_20m"][:, :1]  # type: ignore[index]
    want = F.interpolate(x, size=(120, 120), mode="bilinear", align_corners=True)
    torch.testing.assert_close(corners["s2"][:, 1:2], want)


def test_s1_is_normalised_in_db_never_rounded() -> None:
    batch = random_batch(3)
    out = BatchTransform(stats="v1")(batch)
    st = stats_v1()
    back = out["s1"][:, 0] * st.std["VV"] + st.mean["VV"]
    torch.testing.assert_close(back, batch["s1"][:, 0], atol=1e-4, rtol=0)  # type: ignore[index]
    frac = (batch["s1"] - batch["s1"].round()).abs()  # type: ignore[attr-defined]
    assert frac.max() > 0.4  # the input has fractional dB, which must survive
    raw = BatchTransform(stats=None)(batch)
    assert torch.equal(raw["s1"], batch["s1"])


def test_augment_same_for_s1_and_s2_and_per_sample() -> None:
    batch = random_batch(4)
    # make S1 VV a copy of S2 B02: any mismatch between the two modalities' geometry shows
    batch["s1"][:, 0] = batch["s2"][:, 0]  # type: ignore[index]
    plain = BatchTransform(stats=None, keep_native=True)(batch)
    tf = BatchTransform(stats=None, augment=True, keep_native=True, seed=7)
    out = tf(batch)
    assert torch.equal(out["s1"][:, 0], out["s2"][:, S2_BANDS.index("B02")])
    ops = []
    for i in range(B):
        found = None
        for k in range(4):
            for flip in (False, True):
                cand = torch.rot90(plain["s2"][i], k, dims=(-2, -1))
                cand = torch.flip(cand, dims=(-1,)) if flip else cand
                if torch.equal(cand, out["s2"][i]):
                    found = (k, flip)
                    native = torch.rot90(plain["s2_20m"][i], k, dims=(-2, -1))
                    native = torch.flip(native, dims=(-1,)) if flip else native
                    assert torch.equal(native, out["s2_20m"][i])  # native groups follow the same op
                    break
            if found:
                break
        assert found is not None, f"sample {i} is not a square symmetry of its input"
        ops.append(found)
    # same seed -> same augmentation; the draw is per sample
    again = BatchTransform(stats=None, augment=True, keep_native=True, seed=7)(batch)
    assert torch.equal(again["s2"], out["s2"])
    many = BatchTransform(seed=7).draw(64)
    assert len(torch.unique(many)) > 1


def test_keep_native_keeps_groups_normalised() -> None:
    batch = random_batch(5)
    out = BatchTransform(stats="v1", keep_native=True)(batch)
    assert out["s2_20m"].shape == (B, 6, 60, 60)
    st = stats_v1()
    want = (batch["s2_20m"][:, 0] - st.mean["B05"]) / st.std["B05"]  # type: ignore[index]
    torch.testing.assert_close(out["s2_20m"][:, 0], want, atol=1e-5, rtol=1e-5)


def test_stats_from_a_json_file(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import json

    path = tmp_path / "stats.json"
    stats = BandStats(name="mine", source="test", mean={b: 10.0 for b in ALL_BANDS},
                      std={b: 2.0 for b in ALL_BANDS})
    path.write_text(json.dumps(stats.to_json()))
    batch = random_batch(6)
    out = BatchTransform(stats=str(path))(batch)
    torch.testing.assert_close(out["s1"], (batch["s1"] - 10.0) / 2.0)  # type: ignore[operator]


def test_bad_options_and_mismatched_batches_are_typed_errors() -> None:
    with pytest.raises(TransformError, match="nearest, bilinear, bicubic"):
        BatchTransform(resample="lanczos")
    with pytest.raises(BandError, match="B13"):
        BatchTransform(bands=("B13",))
    batch = random_batch(7)
    with pytest.raises(TransformError, match="s2_20m"):
        BatchTransform(bands=("B02", "B03", "B04", "B08", "VV", "VH"))(batch)
    del batch["s1"]
    with pytest.raises(TransformError, match="no 's1'"):
        BatchTransform()(batch)
    bad = random_batch(8)
    bad["s2_20m"] = bad["s2_20m"][:, :5]  # type: ignore[index]
    with pytest.raises(TransformError, match=r"\[B, 6, H, W\]"):
        BatchTransform()(bad)


def test_integer_input_is_converted_to_float() -> None:
    batch = random_batch(9)
    ints = {k: (v.to(torch.int32) if isinstance(v, torch.Tensor) and k != "s1" else v)
            for k, v in batch.items()}
    a = BatchTransform(stats="v1")(batch)
    b = BatchTransform(stats="v1")(ints)
    torch.testing.assert_close(a["s2"], b["s2"])
    assert np.isfinite(b["s2"].numpy()).all()


def test_transform_pickles_with_its_generator_state() -> None:
    import pickle

    tf = BatchTransform(seed=3, augment=True)
    tf.draw(5)
    tf(random_batch(10))  # fills the per-device cache too
    copy = pickle.loads(pickle.dumps(tf))
    assert torch.equal(tf.draw(10), copy.draw(10))  # the copy continues the same random stream


@pytest.mark.parametrize("augment", [False, True])
def test_out_buffers_receive_the_same_result(augment: bool) -> None:
    """``out=`` (what DataLoader workers use to reuse memory) gives the very same batch, written into
    the buffers' first rows; the inputs are left untouched."""
    batch = random_batch(11)
    inputs = {k: v.clone() for k, v in batch.items() if isinstance(v, torch.Tensor)}
    tf = BatchTransform(stats="v1", augment=augment, keep_native=True, seed=4)
    ref = BatchTransform(stats="v1", augment=augment, keep_native=True, seed=4)(batch)
    shapes = tf.output_shapes(B + 3)  # more rows than the batch: the last batch of an epoch is smaller
    assert shapes == {"s2": (B + 3, 12, 120, 120), "s2_20m": (B + 3, 6, 60, 60),
                      "s2_60m": (B + 3, 2, 20, 20), "s1": (B + 3, 2, 120, 120)}
    bufs = {k: torch.full(s, float("nan")) for k, s in shapes.items()}
    out = tf(batch, out=bufs)
    for key in shapes:
        assert torch.equal(out[key], ref[key]), key
        assert out[key].data_ptr() == bufs[key].data_ptr()  # written in place, no new memory
        assert torch.isnan(bufs[key][B:]).all()  # rows past the batch untouched
    for key, x in inputs.items():
        assert torch.equal(batch[key], x)  # type: ignore[arg-type]
    bad = dict(bufs, s1=torch.empty(B, 3, 120, 120))
    with pytest.raises(TransformError, match=r"out\['s1'\]"):
        tf(batch, out=bad)
    with pytest.raises(TransformError, match=r"out\['s2'\]"):
        BatchTransform()(batch, out={"s1": bufs["s1"]})
