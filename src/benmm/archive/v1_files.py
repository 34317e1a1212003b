"""The files of a v1 tree: its two roots, the patch folders in them, and the metadata JSON of a patch
(read and checked). Used by :mod:`benmm.archive.v1`."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Final

from benmm import labels as L
from benmm.archive.base import Problem
from benmm.errors import ArchiveError, PatchNameError
from benmm.names import parse

S2_DIR_NAMES: Final = ("BigEarthNet-v1.0", "BigEarthNet-S2-Example", "BigEarthNet-S2-v1.0")
S1_DIR_NAMES: Final = ("BigEarthNet-S1-v1.0", "BigEarthNet-S1-Example")
JSON_SUFFIX: Final = "_labels_metadata.json"
_LABEL_INDEX: Final = {name: i for i, name in enumerate(L.LABELS_43)}


def _patch_kind(folder: Path, probe: int = 20) -> str | None:
    """Kind (s2v1/s1/s2v2) of the first patch-named sub-folder among the first entries, else None."""
    try:
        with os.scandir(folder) as it:
            for i, entry in enumerate(it):
                if i >= probe:
                    break
                try:
                    kind = parse(entry.name).kind
                except PatchNameError:
                    continue
                if entry.is_dir():
                    return kind
    except OSError:
        return None
    return None


def find_v1_roots(path: str | os.PathLike[str]) -> tuple[Path, Path]:
    """(S2 root, S1 root) of a v1 archive given its parent folder or one of the two roots."""
    root = Path(path)
    s2 = next((root / n for n in S2_DIR_NAMES if (root / n).is_dir()), None)
    s1 = next((root / n for n in S1_DIR_NAMES if (root / n).is_dir()), None)
    if s2 and s1:
        return s2, s1
    if root.is_dir():
        kind = _patch_kind(root)
        if kind in ("s2v1", "s1"):  # given one of the two roots: look for the other beside it
            siblings = [p for p in root.parent.iterdir() if p.is_dir() and p != root]
            want = "s1" if kind == "s2v1" else "s2v1"
            found = [p for p in siblings if _patch_kind(p) == want]
            if len(found) == 1:
                return (root, found[0]) if kind == "s2v1" else (found[0], root)
        else:  # S2 and S1 roots side by side under other names
            subs = [p for p in root.iterdir() if p.is_dir()]
            kinds = {p: _patch_kind(p) for p in subs}
            s2s = [p for p, k in kinds.items() if k == "s2v1"]
            s1s = [p for p, k in kinds.items() if k == "s1"]
            if len(s2s) == 1 and len(s1s) == 1:
                return s2s[0], s1s[0]
    raise ArchiveError(
        f"{root}: not a BigEarthNet v1 archive; expected a folder holding {S2_DIR_NAMES[0]}/ and "
        f"{S1_DIR_NAMES[0]}/ (or {S2_DIR_NAMES[1]}/ and {S1_DIR_NAMES[1]}/), each with one folder per patch"
    )


def _load_json(path: str | Path) -> tuple[dict[str, Any] | None, Problem | None]:
    try:
        with open(path, "rb") as fh:
            raw = fh.read()
    except FileNotFoundError:
        return None, Problem(str(path), "metadata JSON is missing")
    except OSError as exc:
        return None, Problem(str(path), f"metadata JSON is malformed ({exc})")
    return json_from_bytes(raw, path)


def json_from_bytes(raw: bytes, path: str | Path) -> tuple[dict[str, Any] | None, Problem | None]:
    """A patch's metadata JSON from its bytes (a file or a tarball member ``path``), or the problem."""
    try:
        data = json.loads(raw)
    except ValueError as exc:
        return None, Problem(str(path), f"metadata JSON is malformed ({exc})")
    if not isinstance(data, dict):
        return None, Problem(str(path), "metadata JSON is not an object")
    return data, None


def _check_meta(data: dict[str, Any], path: str | Path, problems: list[Problem]) -> list[str] | None:
    """Labels (official order) if well-formed; appends every problem found."""
    labels = data.get("labels")
    out: list[str] | None = None
    if not isinstance(labels, list) or not all(isinstance(x, str) for x in labels):
        problems.append(Problem(str(path), "'labels' is missing or not a list of label names"))
    elif not labels:
        problems.append(Problem(str(path), "'labels' is empty"))
    else:
        unknown = [x for x in labels if x not in _LABEL_INDEX]
        for name in unknown:
            problems.append(Problem(str(path), str(L.unknown_label(name, 43))))
        if not unknown:
            out = sorted(set(labels), key=_LABEL_INDEX.__getitem__)
    coords = data.get("coordinates")
    if not isinstance(coords, dict) or not all(k in coords for k in ("ulx", "uly", "lrx")) or not (
        "lry" in coords or "lly" in coords
    ):
        problems.append(Problem(str(path), "'coordinates' is missing or lacks ulx/uly/lrx/lry"))
    return out


def _coords(data: dict[str, Any]) -> dict[str, Any] | None:
    """Coordinates with S1's misspelled lower-right key ``lly`` read as ``lry``."""
    c = data.get("coordinates")
    if not isinstance(c, dict):
        return None
    c = dict(c)
    if "lry" not in c and "lly" in c:
        c["lry"] = c.pop("lly")
    return c


def _list_patches(root: Path, kind: str, problems: list[Problem]) -> list[str]:
    names = []
    with os.scandir(root) as it:
        for entry in it:
            if not entry.is_dir():
                continue
            try:
                ok = parse(entry.name).kind == kind
            except PatchNameError:
                ok = False
            if ok:
                names.append(entry.name)
            else:
                what = "S1" if kind == "s1" else "v1 S2"
                problems.append(Problem(entry.path, f"folder is not a {what} patch"))
    return sorted(names)
