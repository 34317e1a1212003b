"""The 43 CLC Level-3 labels, the 19-class nomenclature, the 43 -> 19 conversion, multi-hot coding.

The truth is ``resources/nomenclature.csv`` (the official label conversion). benmm's order is the
official one; ``order="alphabetical"`` (TorchGeo, reBEN/ConfigILM models) is an explicit option.
"""

from __future__ import annotations

import csv
import difflib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Final, Literal

import numpy as np

from benmm.errors import LabelError
from benmm.resources import resource_path

Order = Literal["official", "alphabetical"]
ORDERS: Final = ("official", "alphabetical")
LABEL_SETS: Final = (19, 43)


@dataclass(frozen=True)
class Nomenclature:
    labels43: tuple[str, ...]
    clc_codes: tuple[int, ...]
    labels19: tuple[str, ...]
    to19: dict[str, str | None]


@cache
def nomenclature() -> Nomenclature:
    path = resource_path("nomenclature.csv")
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    rows.sort(key=lambda r: int(r["index43"]))
    labels43 = tuple(r["label43"] for r in rows)
    codes = tuple(int(r["clc_code"]) for r in rows)
    by19: dict[int, str] = {}
    to19: dict[str, str | None] = {}
    for r in rows:
        if r["label19"]:
            by19[int(r["index19"])] = r["label19"]
            to19[r["label43"]] = r["label19"]
        else:
            to19[r["label43"]] = None
    labels19 = tuple(by19[i] for i in sorted(by19))
    return Nomenclature(labels43, codes, labels19, to19)


LABELS_43: Final = nomenclature().labels43
LABELS_19: Final = nomenclature().labels19
CLC_CODES: Final = dict(zip(LABELS_43, nomenclature().clc_codes, strict=True))
LABEL_43_TO_19: Final = nomenclature().to19
UNMAPPED_43: Final = tuple(name for name, target in LABEL_43_TO_19.items() if target is None)


def _check_set(n: int) -> None:
    if n not in LABEL_SETS:
        raise LabelError(f"label set {n!r} does not exist; valid label sets: 19, 43")


def _check_order(order: str) -> None:
    if order not in ORDERS:
        raise LabelError(f"label order {order!r} does not exist; valid orders: official, alphabetical")


@cache
def label_names(n: int = 19, order: Order = "official") -> tuple[str, ...]:
    """The class names of label set ``n`` (19 or 43) in the given order."""
    _check_set(n)
    _check_order(order)
    names = LABELS_19 if n == 19 else LABELS_43
    return tuple(sorted(names)) if order == "alphabetical" else names


@cache
def _index(n: int, order: Order) -> dict[str, int]:
    return {name: i for i, name in enumerate(label_names(n, order))}


def unknown_label(name: str, n: int | None = None) -> LabelError:
    """A typed error naming ``name`` and suggesting the closest known label."""
    text = str(name)
    where = "BigEarthNet labels" if n is None else f"the {n}-class nomenclature"
    if n == 43 and text in LABELS_19:
        sources = [k for k, v in LABEL_43_TO_19.items() if v == text]
        return LabelError(f"unknown label {name!r}: not in {where}; it is a 19-class label "
                          f"(43-class labels that map to it: {', '.join(sources)})")
    if n == 19 and text in LABEL_43_TO_19:
        target = LABEL_43_TO_19[text]
        then = f"its 19-class label is {target!r}" if target else "it maps to no 19-class label"
        return LabelError(f"unknown label {name!r}: not in {where}; it is a 43-class label and {then} "
                          "(convert with benmm.labels.to_19)")
    known = list(LABELS_43 + LABELS_19) if n is None else list(label_names(n))
    close = difflib.get_close_matches(text, known, n=1, cutoff=0.5)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return LabelError(f"unknown label {name!r}: not in {where}{hint}")


def check_label(name: str) -> str:
    """Return ``name`` if it is a 43- or 19-class label, else raise :class:`LabelError`."""
    if isinstance(name, str) and (name in LABEL_43_TO_19 or name in _index(19, "official")):
        return name
    raise unknown_label(name)


def to_19(labels: Iterable[str]) -> list[str]:
    """Convert 43-class (or already 19-class) names to 19-class names, deduplicated, official order."""
    idx19 = _index(19, "official")
    out: set[str] = set()
    if isinstance(labels, str):  # a bare name would be iterated letter by letter
        labels = [labels]
    for name in labels:
        if not isinstance(name, str):
            raise unknown_label(name)
        if name in LABEL_43_TO_19:
            target = LABEL_43_TO_19[name]
            if target is not None:
                out.add(target)
        elif name in idx19:
            out.add(name)
        else:
            raise unknown_label(name)
    return sorted(out, key=idx19.__getitem__)


def multi_hot(label_lists: Iterable[Iterable[str] | None], names: Sequence[str], to19: bool = False,
              where: str = "labels", row_names: Sequence[str] | None = None) -> np.ndarray:
    """``uint8 [rows, len(names)]`` multi-hot matrix of label lists over ``names`` (a class order): the one
    multi-hot encoder of benmm, vectorised (one explode + map, no per-name Python loop).

    ``to19``: 43-class names are converted to their 19-class target (those without one are dropped),
    19-class names map to themselves. A ``None`` row has no labels. An unknown name raises
    :class:`LabelError` naming the row (``row_names[i]``, else its position) and ``where``.
    """
    import pandas as pd

    column = pd.Series(list(label_lists), dtype=object)
    index = {name: i for i, name in enumerate(names)}
    mapping: dict[str, int] = dict(index)
    if to19:
        mapping = {k: index[v] if v is not None else -1 for k, v in LABEL_43_TO_19.items()} | index
    out = np.zeros((len(column), len(names)), dtype=np.uint8)
    if not len(column):
        return out
    exploded = column.explode()
    present = exploded.notna().to_numpy()
    # explode gives an empty list or a None row one (NaN) entry
    lengths = np.fromiter((max(len(v), 1) if v is not None and not isinstance(v, float) else 1
                           for v in column), dtype=np.int64, count=len(column))
    rows = np.arange(len(column), dtype=np.int64).repeat(lengths)[present]
    found = exploded.to_numpy()[present]
    cols = pd.Series(found, dtype=object).map(mapping)
    unknown = cols.isna().to_numpy()
    if unknown.any():
        i = int(np.argmax(unknown))
        row = row_names[rows[i]] if row_names is not None else f"item {rows[i]}"
        raise LabelError(f"{where}: pair {row} has unknown label {found[i]!r} "
                         f"(expected one of the {len(names)}-class names)")
    cols_arr = cols.to_numpy(dtype=np.int64)
    ok = cols_arr >= 0
    out[rows[ok], cols_arr[ok]] = 1
    return out


def encode(labels: Iterable[str], n: int = 19, order: Order = "official") -> np.ndarray:
    """Multi-hot float32 vector of length ``n``.

    For ``n=19`` the names may be 43-class names (converted) or 19-class names.
    For ``n=43`` they must be 43-class names.
    """
    _check_set(n)
    _check_order(order)
    names = to_19(labels) if n == 19 else list(labels)
    for name in names:
        if name not in _index(n, order):
            raise unknown_label(name, n)
    return multi_hot([names], label_names(n, order))[0].astype(np.float32)


def decode(vector: Sequence[float] | np.ndarray, n: int | None = None, order: Order = "official",
           threshold: float = 0.5) -> list[str]:
    """Names of the entries of ``vector`` that are >= ``threshold``, in the vector's order."""
    arr = np.asarray(vector).reshape(-1)
    size = arr.shape[0] if n is None else n
    _check_set(size)
    if arr.shape[0] != size:
        raise LabelError(f"label vector has {arr.shape[0]} entries, expected {size}")
    names = label_names(size, order)
    return [names[i] for i in np.flatnonzero(arr >= threshold)]


@cache
def permutation(n: int, source: Order, target: Order) -> np.ndarray:
    """Index array ``p`` with ``vec_target = vec_source[..., p]``."""
    src = _index(n, source)
    return np.array([src[name] for name in label_names(n, target)], dtype=np.int64)


def reorder(vector: np.ndarray, source: Order, target: Order) -> np.ndarray:
    """Convert a label vector (or a [..., n] array of them) from one class order to another."""
    arr = np.asarray(vector)
    n = arr.shape[-1]
    _check_set(n)
    _check_order(source)
    _check_order(target)
    return arr[..., permutation(n, source, target)]


def conversion_matrix(order19: Order = "official", order43: Order = "official") -> np.ndarray:
    """[43, 19] 0/1 matrix M with ``y19 = clip(y43 @ M, 0, 1)``."""
    mat = np.zeros((43, 19), dtype=np.float32)
    i43 = _index(43, order43)
    i19 = _index(19, order19)
    for name, target in LABEL_43_TO_19.items():
        if target is not None:
            mat[i43[name], i19[target]] = 1.0
    return mat


def scores_to_19(scores: np.ndarray, order43: Order = "official", order19: Order = "official") -> np.ndarray:
    """Per-class scores of a 43-class model on the 19-class nomenclature: each 19-class score is the
    **maximum** over the 43-class scores of the labels that merge into it (the rule under which a patch
    has a 19-class label exactly when it has one of its 43-class sources; the 11 43-class labels without
    a 19-class target are dropped). Applied to 0/1 targets it is the official label conversion."""
    arr = np.asarray(scores)
    if arr.shape[-1] != 43:
        raise LabelError(f"scores have {arr.shape[-1]} classes; the 43 -> 19 conversion needs 43")
    _check_order(order43)
    _check_order(order19)
    mat = conversion_matrix(order19, order43).astype(bool)  # [43, 19]
    out = np.empty((*arr.shape[:-1], 19), dtype=arr.dtype)
    for j in range(19):
        out[..., j] = arr[..., mat[:, j]].max(axis=-1)
    return out
