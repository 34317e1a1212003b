"""What the members of a BigEarthNet tarball are: member path -> patch -> a validated store value.

A tarball's kind is found from its top folder (:data:`KINDS`); each kind says how deep its patch
folders lie, which files a patch folder holds, and how to turn those files into the patch's store value
(a safetensors blob of its bands) plus the facts the pairing needs later (its metadata JSON). The v1
kinds are the S2 tree (``BigEarthNet-v1.0/<S2 name>/<S2 name>_B01.tif ...``) and the S1 tree
(``BigEarthNet-S1-v1.0/<S1 name>/...``), as the published tarballs and the example tarballs in
``tests/data`` lay them out. The reBEN (v2.0) kinds (:class:`RebenKind`) are the trees of
``BigEarthNet-S2.tar.zst``, ``BigEarthNet-S1.tar.zst`` and ``Reference_Maps.tar.zst``: one folder level
more (``BigEarthNet-S2/<tile>/<patch_id>/<patch_id>_B01.tif``, the layout of :mod:`benmm.archive.v2` and
:mod:`benmm.archive.refmaps`, sources cited there), no JSON (the pairs come from ``metadata.parquet``).
Checks and messages are the folder reader's (:mod:`benmm.archive.tiff`, :mod:`benmm.archive.v1_files`,
:func:`benmm.archive.refmaps.read_map`), with ``tarball:member`` in place of a file path.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final

import numpy as np

from benmm.archive.footprint import from_geotiff, from_v1_json
from benmm.archive.refmaps import REFERENCE_MAPS_DIR, SIDE, SUFFIX, TENSOR, encode_map_blob, map_key, read_map
from benmm.archive.tiff import read_band_bytes
from benmm.archive.v1_files import JSON_SUFFIX, S1_DIR_NAMES, S2_DIR_NAMES, _check_meta, json_from_bytes
from benmm.archive.v2 import TIFF_DIR_NAMES
from benmm.bands import BAND_DTYPE, BAND_SIZE, S1_BANDS, S2_BANDS
from benmm.errors import ArchiveError, PatchNameError
from benmm.names import parse
from benmm.store.blob import BlobLayout, blob_layout
from benmm.store.geoparquet import footprint_fields


@dataclass(frozen=True)
class PatchKind:
    """One kind of patch folder in a tarball."""

    role: str  # "s2" or "s1" (or "map"): which side of a pair (and which tarball) it is
    name_kind: str  # benmm.names kind of its folder names
    bands: tuple[str, ...]
    depth: int = 3  # path components of a patch file: top/patch/file
    release: str = "v1"  # "v1" or "reben": which release's tarballs hold this kind
    layout: BlobLayout = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "layout", blob_layout(
            {b: (BAND_DTYPE[b], (BAND_SIZE[b],) * 2) for b in self.bands}))

    def key(self, patch: str) -> str:
        """The store key of a patch's value (and of its encode state)."""
        return patch

    def folder(self, top: str, patch: str) -> str:
        """A patch folder's member path (for messages)."""
        return f"{top}/{patch}"

    def patch_of(self, path: str) -> tuple[str, str] | None:
        """(patch name, file name) of a member path, or None for members outside patch folders."""
        parts = path.strip("/").split("/")
        if len(parts) != self.depth:
            return None
        return parts[-2], parts[-1]

    def files(self, patch: str) -> tuple[str, ...]:
        return (*(f"{patch}_{b}.tif" for b in self.bands), f"{patch}{JSON_SUFFIX}")

    def is_patch(self, name: str) -> bool:
        try:
            return parse(name).kind == self.name_kind
        except PatchNameError:
            return False

    def fill_bands(self, patch: str, files: dict[str, bytes], where: str, out: bytearray) -> None:
        """The value of the patch's band files in ``out`` (each band checked, the member named)."""
        out[:len(self.layout.header)] = self.layout.header
        view = memoryview(out)
        for band in self.bands:
            fname = f"{patch}_{band}.tif"
            data = files.get(fname)
            if data is None:
                raise ArchiveError(f"{where}/{fname}: band file is missing")
            start, end = self.layout.slots[band]
            read_band_bytes(data, band, f"{where}/{fname}", view[start:end])

    def build(self, patch: str, files: dict[str, bytes], where: str, out: bytearray) -> dict[str, Any]:
        """Validate one patch folder's files and write its value into ``out`` (``layout.size`` bytes).

        Returns its info: the metadata JSON and 43-class labels (and, for S1, the partner named by
        ``corresponding_s2_patch``). ``where`` is ``tarball:folder`` for messages. ArchiveError naming the
        member at fault otherwise.
        """
        self.fill_bands(patch, files, where, out)
        jname = f"{where}/{patch}{JSON_SUFFIX}"
        raw = files.get(f"{patch}{JSON_SUFFIX}")
        if raw is None:
            raise ArchiveError(f"{jname}: metadata JSON is missing")
        meta, problem = json_from_bytes(raw, jname)
        if problem is not None or meta is None:
            raise ArchiveError(str(problem))
        found: list[Any] = []
        labels43 = _check_meta(meta, jname, found)
        if found or labels43 is None:
            raise ArchiveError("; ".join(str(p) for p in found))
        info: dict[str, Any] = {"role": self.role, "member": jname, "labels43": labels43, "json": meta}
        if self.role == "s2":  # the pair's footprint is the S2 JSON's, as for folders (V1Source)
            info["footprint"] = footprint_fields(from_v1_json(meta.get("coordinates"), meta.get("projection"),
                                                              jname))
        if self.role == "s1":
            target = meta.get("corresponding_s2_patch")
            if not isinstance(target, str):
                raise ArchiveError(f"{jname}: 'corresponding_s2_patch' is missing (it names the Sentinel-2 "
                                   "partner of this patch)")
            info["partner"] = target
        return info


@dataclass(frozen=True)
class RebenKind(PatchKind):
    """A reBEN tree: ``<top>/<group>/<patch>/<patch><suffix>``; ``group`` is the patch name without its
    last ``cut`` ``_`` parts (the S2 tile, the S1 product). Which patches to read is the metadata's
    business (:mod:`benmm.ingest.tar_reben`), so any name is a patch here."""

    depth: int = 4
    release: str = "reben"
    cut: int = 2

    def group(self, patch: str) -> str:
        return patch.rsplit("_", self.cut)[0]

    def patch_of(self, path: str) -> tuple[str, str] | None:
        parts = path.strip("/").split("/")
        if len(parts) != self.depth or parts[1] != self.group(parts[2]):
            return None  # a patch folder under another tile / product: not where the folder reader looks
        return parts[2], parts[3]

    def files(self, patch: str) -> tuple[str, ...]:
        return tuple(f"{patch}_{b}.tif" for b in self.bands)

    def folder(self, top: str, patch: str) -> str:
        return f"{top}/{self.group(patch)}/{patch}"

    def is_patch(self, name: str) -> bool:
        return True

    def build(self, patch: str, files: dict[str, bytes], where: str, out: bytearray) -> dict[str, Any]:
        """The bands' value in ``out``; S2's info carries the footprint of its B02 GeoTIFF (as the folder
        encode's :meth:`benmm.archive.v2.V2Archive.footprint`)."""
        self.fill_bands(patch, files, where, out)
        info: dict[str, Any] = {"role": self.role, "member": where}
        if self.role == "s2":
            fname = f"{patch}_B02.tif"
            info["footprint"] = footprint_fields(from_geotiff(files[fname], f"{where}/{fname}"))
        return info


@dataclass(frozen=True)
class MapKind(RebenKind):
    """``Reference_Maps/<tile>/<patch_id>/<patch_id>_reference_map.tif``: one checked map per patch,
    stored under :func:`benmm.archive.refmaps.map_key` as rico-hdl's ``{"Data": uint16 [120, 120]}``."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "layout", blob_layout({TENSOR: (np.dtype("<u2"), (SIDE, SIDE))}))

    def key(self, patch: str) -> str:
        return map_key(patch)

    def files(self, patch: str) -> tuple[str, ...]:
        return (f"{patch}{SUFFIX}.tif",)

    def build(self, patch: str, files: dict[str, bytes], where: str, out: bytearray) -> dict[str, Any]:
        fname = f"{patch}{SUFFIX}.tif"
        data = files.get(fname)
        if data is None:
            raise ArchiveError(f"{where}/{fname}: reference map is missing")
        value = encode_map_blob(read_map(data, f"{where}/{fname}"))
        out[:] = value  # the layout's size (one fixed shape): the buffer stays the same length
        return {"role": self.role, "member": f"{where}/{fname}"}


V1_S2: Final = PatchKind("s2", "s2v1", S2_BANDS)
V1_S1: Final = PatchKind("s1", "s1", S1_BANDS)
REBEN_S2: Final = RebenKind("s2", "s2v2", S2_BANDS)
REBEN_S1: Final = RebenKind("s1", "s1", S1_BANDS, cut=3)
REBEN_MAP: Final = MapKind("map", "s2v2", ())
#: top folder of a tarball -> the kind of its patch folders
KINDS: Final[dict[str, PatchKind]] = {**dict.fromkeys(S2_DIR_NAMES, V1_S2),
                                     **dict.fromkeys(S1_DIR_NAMES, V1_S1),
                                     TIFF_DIR_NAMES["s2"]: REBEN_S2, TIFF_DIR_NAMES["s1"]: REBEN_S1,
                                     REFERENCE_MAPS_DIR: REBEN_MAP}
EXPECTED: Final = (f"{S2_DIR_NAMES[0]}/ (Sentinel-2) or {S1_DIR_NAMES[0]}/ (Sentinel-1) of BigEarthNet v1.0 "
                   f"(or the example tarballs' {S2_DIR_NAMES[1]}/, {S1_DIR_NAMES[1]}/), or reBEN's "
                   f"{TIFF_DIR_NAMES['s2']}/, {TIFF_DIR_NAMES['s1']}/, {REFERENCE_MAPS_DIR}/")


def kind_of(top: str, tarball: str) -> PatchKind:
    """The kind of a tarball whose first member lies in folder ``top``; ArchiveError when unknown."""
    kind = KINDS.get(top)
    if kind is not None:
        return kind
    raise ArchiveError(f"{tarball}: holds {top}/, not a BigEarthNet tarball; expected {EXPECTED}")
