"""The nomenclature: 43 and 19 labels, the conversion (checked against nomenclature.csv and every
label of every real sample), multi-hot coding, the two orders, and unknown-label errors."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

from benmm import labels as L
from benmm.errors import LabelError
from benmm.resources import resource_path
from conftest import V1_SAMPLE_S2


def _csv() -> list[dict[str, str]]:
    with open(resource_path("nomenclature.csv"), newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def test_counts_and_order() -> None:
    rows = _csv()
    assert len(L.LABELS_43) == 43 and len(set(L.LABELS_43)) == 43
    assert len(L.LABELS_19) == 19 and len(set(L.LABELS_19)) == 19
    assert list(L.LABELS_43) == [r["label43"] for r in sorted(rows, key=lambda r: int(r["index43"]))]
    assert [L.CLC_CODES[x] for x in L.LABELS_43] == sorted(L.CLC_CODES.values())  # CLC code order
    assert L.LABELS_43[0] == "Continuous urban fabric" and L.LABELS_43[-1] == "Sea and ocean"
    assert L.LABELS_19[0] == "Urban fabric" and L.LABELS_19[-1] == "Marine waters"
    by19 = {int(r["index19"]): r["label19"] for r in rows if r["label19"]}
    assert list(L.LABELS_19) == [by19[i] for i in range(19)]


def test_conversion_matches_csv() -> None:
    for row in _csv():
        assert L.LABEL_43_TO_19[row["label43"]] == (row["label19"] or None)
        assert L.to_19([row["label43"]]) == ([row["label19"]] if row["label19"] else [])


def test_eleven_unmapped() -> None:
    assert len(L.UNMAPPED_43) == 11
    assert set(L.UNMAPPED_43) == {r["label43"] for r in _csv() if not r["label19"]}
    assert {"Airports", "Port areas", "Bare rock", "Burnt areas", "Intertidal flats"} <= set(L.UNMAPPED_43)
    for name in L.UNMAPPED_43:
        assert L.to_19([name]) == []
        assert L.encode([name], 19).sum() == 0


def test_every_19_label_has_a_source() -> None:
    assert set(L.LABEL_43_TO_19.values()) - {None} == set(L.LABELS_19)


def test_shared_names_map_to_themselves() -> None:
    for name in set(L.LABELS_43) & set(L.LABELS_19):
        assert L.LABEL_43_TO_19[name] == name


def test_every_sample_label(v1_sample_root: Path, reben_sample_root: Path) -> None:
    """Every 43-class label of the v1 sample converts as nomenclature.csv says; reBEN's are 19-class."""
    table = {r["label43"]: r["label19"] or None for r in _csv()}
    seen = 0
    for folder in ("BigEarthNet-S2-Example", "BigEarthNet-S1-Example"):
        for path in sorted((v1_sample_root / folder).glob("*/*_labels_metadata.json")):
            names = json.loads(path.read_text())["labels"]
            for name in names:
                assert L.check_label(name) == name
                assert L.to_19([name]) == ([table[name]] if table[name] else [])
                seen += 1
            want = {table[n] for n in names} - {None}
            assert set(L.to_19(names)) == want
            vec = L.encode(names, 19)
            assert L.decode(vec) == L.to_19(names)
            vec43 = L.encode(names, 43)
            assert set(L.decode(vec43)) == set(names)
            np.testing.assert_array_equal(np.clip(vec43 @ L.conversion_matrix(), 0, 1), vec)
    assert seen > 20 and V1_SAMPLE_S2
    for f in ("metadata.parquet", "metadata_for_patches_with_snow_cloud_or_shadow.parquet"):
        for names in pd.read_parquet(reben_sample_root / f)["labels"]:
            assert all(n in L.LABELS_19 for n in names)
            assert set(L.to_19(list(names))) == set(names)


def test_alphabetical_order_and_converter() -> None:
    for n in (19, 43):
        alpha = L.label_names(n, "alphabetical")
        assert list(alpha) == sorted(L.label_names(n)) and set(alpha) == set(L.label_names(n))
        rng = np.random.default_rng(n)
        vec = (rng.random((5, n)) > 0.5).astype(np.float32)
        there = L.reorder(vec, "official", "alphabetical")
        for row, row_alpha in zip(vec, there, strict=True):
            assert L.decode(row, n) == sorted(L.decode(row_alpha, n, order="alphabetical"),
                                              key=L.label_names(n).index)
        np.testing.assert_array_equal(L.reorder(there, "alphabetical", "official"), vec)
    # the two orders really differ (a silent mix-up would go unnoticed otherwise)
    assert L.label_names(19, "alphabetical") != L.label_names(19)
    alpha_index = sorted(L.LABELS_19).index("Urban fabric")
    assert L.encode(["Urban fabric"], 19, "alphabetical").argmax() == alpha_index


def test_conversion_matrix_orders() -> None:
    m = L.conversion_matrix()
    assert m.shape == (43, 19) and m.sum() == 43 - 11
    assert (m.sum(axis=0) >= 1).all() and set(m.sum(axis=1)) == {0.0, 1.0}
    ma = L.conversion_matrix("alphabetical", "alphabetical")
    np.testing.assert_array_equal(ma, m[L.permutation(43, "official", "alphabetical")][
        :, L.permutation(19, "official", "alphabetical")])


label43 = st.lists(st.sampled_from(L.LABELS_43), max_size=12)


@given(label43, st.sampled_from(L.ORDERS))
def test_encode_decode_round_trip_43(names: list[str], order: L.Order) -> None:
    vec = L.encode(names, 43, order)
    assert vec.dtype == np.float32 and vec.shape == (43,)
    assert set(L.decode(vec, 43, order)) == set(names)
    assert L.decode(vec, 43, order) == [x for x in L.label_names(43, order) if x in set(names)]


@given(label43, st.sampled_from(L.ORDERS))
def test_encode_19_equals_conversion(names: list[str], order: L.Order) -> None:
    vec19 = L.encode(names, 19, order)
    assert set(L.decode(vec19, 19, order)) == set(L.to_19(names))
    via = np.clip(L.encode(names, 43, order) @ L.conversion_matrix(order, order), 0, 1)
    np.testing.assert_array_equal(via, vec19)


@given(st.lists(st.sampled_from(L.LABELS_19), max_size=19))
def test_19_names_round_trip(names: list[str]) -> None:
    assert L.to_19(names) == [x for x in L.LABELS_19 if x in set(names)]
    assert L.decode(L.encode(names, 19)) == L.to_19(names)


@given(st.lists(st.floats(0, 1), min_size=19, max_size=19), st.floats(0.05, 0.95))
def test_decode_threshold(values: list[float], threshold: float) -> None:
    got = L.decode(values, threshold=threshold)
    assert got == [L.LABELS_19[i] for i, v in enumerate(values) if v >= threshold]


@pytest.mark.parametrize(("name", "n", "hint"), [
    ("Pasture", None, "did you mean 'Pastures'"),
    ("Coniferous forests", 19, "did you mean 'Coniferous forest'"),
    ("Arable land", 43, "it is a 19-class label (43-class labels that map to it: Non-irrigated arable land"),
    ("Non-irrigated arable land", 19, "its 19-class label is 'Arable land'"),
    ("Airports", 19, "maps to no 19-class label"),
])
def test_unknown_label_errors(name: str, n: int | None, hint: str) -> None:
    err = L.unknown_label(name, n)
    assert isinstance(err, LabelError) and isinstance(err, KeyError)
    assert f"unknown label {name!r}" in str(err) and hint in str(err)


def test_unknown_labels_raise() -> None:
    with pytest.raises(LabelError, match="did you mean 'Pastures'"):
        L.to_19(["Pastures", "Pasturs"])
    with pytest.raises(LabelError, match="did you mean 'Mixed forest'"):
        L.encode(["Mixed forests"], 43)
    with pytest.raises(LabelError, match="19-class label"):
        L.encode(["Arable land"], 43)
    with pytest.raises(LabelError, match="unknown label 5"):
        L.check_label(5)  # type: ignore[arg-type]
    with pytest.raises(LabelError, match="unknown label"):
        L.to_19([None])  # type: ignore[list-item]
    assert L.to_19("Pastures") == ["Pastures"]  # a bare name, not its letters


@pytest.mark.parametrize("call", [
    lambda: L.label_names(20),
    lambda: L.label_names(19, "sorted"),  # type: ignore[arg-type]
    lambda: L.decode(np.zeros(18)),
    lambda: L.decode(np.zeros(19), n=43),
    lambda: L.reorder(np.zeros(10), "official", "alphabetical"),
    lambda: L.encode([], 42),
])
def test_bad_sets_and_orders(call: object) -> None:
    with pytest.raises(LabelError):
        call()  # type: ignore[operator]


def test_multi_hot_is_the_one_encoder() -> None:
    from benmm.labels import multi_hot

    names = L.label_names(19)
    got = multi_hot([["Pastures"], [], None, ["Pastures", "Arable land"]], names)
    assert got.dtype == np.uint8 and got.shape == (4, 19)
    assert got.sum(axis=1).tolist() == [1, 0, 0, 2]
    assert multi_hot([], names).shape == (0, 19)  # an empty split is an empty matrix, not a crash
    # 43-class names convert with to19; "Airports" has no 19-class target and is dropped
    conv = multi_hot([["Non-irrigated arable land", "Airports"]], names, to19=True)
    assert conv[0].tolist() == L.encode(["Arable land"]).astype(np.uint8).tolist()
    with pytest.raises(LabelError, match="pair b has unknown label 'Pasture'"):
        multi_hot([["Pastures"], ["Pasture"]], names, row_names=["a", "b"])
