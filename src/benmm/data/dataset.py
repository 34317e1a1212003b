"""A torch Dataset over a benmm store (or a reBEN LMDB as published): one pair per index.

``ds[i]`` is the sample dict of DESIGN §4 with the bands at native size (no per-sample interpolation;
the batch transform resamples whole batches). ``__getitem__`` is built to be cheap:

* everything per index (LMDB keys, multi-hot labels) is computed once at construction, vectorised
  from the store's metadata table, and kept in numpy arrays (fixed-width bytes for the keys, so forked
  DataLoader workers do not touch per-row Python objects and copy-on-write pages);
* one LMDB get per modality, inside one read transaction per sample (per batch in
  :meth:`BigEarthNetDataset.get_batch`), zero-copy: the value is a buffer into LMDB's memory map; the
  safetensors header is parsed once per distinct header (all values of a store normally share one) and
  cached, so a get costs a dict lookup, a size check and one ``np.frombuffer`` + cast-copy per band
  straight from the map into a preallocated float32 array;
* :meth:`BigEarthNetDataset.get_batch` fills whole batch tensors directly (in shared memory inside a
  DataLoader worker), skipping per-sample tensors and the collate copy.

Every value is checked (key present, header well formed, band present, dtype, size, length): a bad
value raises :class:`~benmm.errors.StoreError` naming the pair and the key, never a zero tensor.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset, get_worker_info

from benmm.archive.splits import normalize_split
from benmm.archive.splits import seasons as official_seasons
from benmm.bands import (
    BAND_DTYPE,
    BAND_RESOLUTION,
    BAND_SIZE,
    RESOLUTION_GROUPS,
    check_modality,
    choose_bands,
    split_by_modality,
)
from benmm.data.loading import shared_empty
from benmm.errors import BenmmError, LabelError, SplitError, StoreError
from benmm.labels import ORDERS, label_names
from benmm.labels import multi_hot as label_multi_hot
from benmm.store.blob import BlobError, parse_header

if TYPE_CHECKING:
    from benmm.store import Store

COUNTRIES: Final = ("Austria", "Belgium", "Finland", "Ireland", "Kosovo", "Lithuania", "Luxembourg",
                    "Portugal", "Serbia", "Switzerland")
SEASONS: Final = ("Spring", "Summer", "Fall", "Winter")
_SEASON_ALIASES: Final = {"autumn": "Fall"}
_MAX_LAYOUTS: Final = 256


def sample_layout(bands: Sequence[str]) -> dict[str, tuple[tuple[str, ...], int]]:
    """Sample key -> (bands in canonical order, side in pixels), e.g. ``{"s2": (("B02",...), 120)}``."""
    s2, s1 = split_by_modality(bands)
    out: dict[str, tuple[tuple[str, ...], int]] = {}
    for res, key in RESOLUTION_GROUPS.items():
        group = tuple(b for b in s2 if BAND_RESOLUTION[b] == res)
        if group:
            out[key] = (group, BAND_SIZE[group[0]])
    if s1:
        out["s1"] = (s1, BAND_SIZE[s1[0]])
    return out


def _check_names(given: Iterable[str] | str, valid: Sequence[str], what: str,
                 aliases: dict[str, str] | None = None) -> list[str]:
    lookup = {v.lower(): v for v in valid} | (aliases or {})
    items = [given] if isinstance(given, str) else list(given)
    out = []
    for item in items:
        try:
            out.append(lookup[str(item).lower()])
        except KeyError:
            raise DatasetError(f"unknown {what} {item!r}; valid {what}s: {', '.join(valid)}") from None
    return out


class DatasetError(BenmmError, ValueError):
    """An unknown filter value (country, season) or a store that lacks what was asked for."""


def select(meta: pd.DataFrame, split: str | None, recommended: bool,
           countries: Iterable[str] | str | None, seasons: Iterable[str] | str | None,
           where: str) -> pd.DataFrame:
    """Rows of the metadata table that a dataset keeps, in store order."""
    keep = np.ones(len(meta), dtype=bool)
    if split is not None:
        if "split" not in meta:
            raise SplitError(f"{where}: the store has no split column; use split=None")
        column = meta["split"]
        spelled = {v: normalize_split(str(v), strict=False) for v in column.dropna().unique()}
        keep &= column.map(spelled).to_numpy() == split
    if recommended:
        for flag in ("contains_seasonal_snow", "contains_cloud_or_shadow"):
            if flag in meta:
                keep &= ~meta[flag].fillna(False).to_numpy(dtype=bool)
        keep &= meta["labels"].map(len).to_numpy() > 0  # the 57 patches without a 19-class label
    if countries is not None:
        wanted = _check_names(countries, COUNTRIES, "country")
        if "country" not in meta:
            raise DatasetError(f"{where}: the store has no country column")
        keep &= meta["country"].isin(wanted).to_numpy()
    if seasons is not None:
        wanted = _check_names(seasons, SEASONS, "season", _SEASON_ALIASES)
        if "season" in meta and meta["season"].notna().any():
            season = meta["season"]
        elif "s2v1_name" in meta:
            season = pd.Series(official_seasons(meta["s2v1_name"].tolist()), index=meta.index, dtype=object)
        else:
            raise DatasetError(f"{where}: the store has neither a season nor an s2v1_name column")
        keep &= season.isin(wanted).to_numpy()
    return meta.loc[keep].reset_index(drop=True)


def subsample(meta: pd.DataFrame, fraction: float, seed: int, where: str) -> pd.DataFrame:
    """A seeded random ``fraction`` of the rows (``round(fraction * n)``, at least one), in store order:
    the same store, filters, fraction and seed always give the same pairs."""
    f = float(fraction)
    if not 0.0 < f <= 1.0:
        raise DatasetError(f"{where}: fraction {fraction!r} must be in (0, 1] (e.g. 0.01 for 1% of a split)")
    if f == 1.0 or len(meta) == 0:
        return meta
    k = max(1, round(f * len(meta)))
    keep = np.sort(np.random.default_rng(int(seed)).choice(len(meta), size=k, replace=False))
    return meta.iloc[keep].reset_index(drop=True)


def multi_hot(meta: pd.DataFrame, n: int, order: str, where: str) -> np.ndarray:
    """uint8 [rows, n] multi-hot labels of a metadata table (:func:`benmm.labels.multi_hot`): the
    19-class labels (43-class names converted), or the v1 43-class ones from ``labels43``."""
    if n not in (19, 43):
        raise LabelError(f"label set {n!r} does not exist; valid label sets: 19, 43")
    if order not in ORDERS:
        raise LabelError(f"label order {order!r} does not exist; valid orders: {', '.join(ORDERS)}")
    if n == 43:
        if "labels43" not in meta or (len(meta) and meta["labels43"].isna().all()):
            raise LabelError(f"{where}: this store has no 43-class labels (a reBEN store only has the "
                             "19-class ones); use labels=19, or encode the v1 archive to get labels43")
        missing = meta["labels43"].isna().to_numpy()
        if missing.any():
            first = meta["patch_id"].iloc[int(np.argmax(missing))]
            raise LabelError(f"{where}: {int(missing.sum())} pairs have no 43-class labels "
                             f"(first: {first}); use labels=19")
    column = meta["labels"] if n == 19 else meta["labels43"]
    return label_multi_hot(column, label_names(n, order), to19=n == 19, where=where,
                           row_names=meta["patch_id"].tolist() if "patch_id" in meta else None)


class BigEarthNetDataset(Dataset[dict[str, Any]]):
    """BigEarthNet-MM pairs of one split of a store, as DESIGN §4 samples at native size.

    Parameters
    ----------
    store:
        A :class:`benmm.store.reader.Store` or a path that ``Store.open`` accepts (benmm store, reBEN folder).
    modality:
        ``"s1"``, ``"s2"`` or ``"s1s2"``.
    bands:
        Band names and/or group names (``"s2-10m20m"``, ``("B04", "B03", "B02")``); ``None`` = all of the
        modality. Returned in canonical order, grouped by native size into ``s2`` / ``s2_20m`` /
        ``s2_60m``.
    split:
        ``"train"``, ``"val"`` (or ``"validation"``), ``"test"``, or ``None`` for every pair.
    labels:
        19 or 43 (43 only where the store has ``labels43``, i.e. one encoded from the v1 archive).
    order:
        Class order of the label vector: ``"official"`` or ``"alphabetical"`` (TorchGeo, reBEN models).
    recommended:
        Drop the seasonal-snow, cloud/shadow and no-19-class patches (the recommended set). On by default.
    countries, seasons:
        Keep only these countries / seasons (``Spring``, ``Summer``, ``Fall``/``Autumn``, ``Winter``).
    fraction, fraction_seed:
        Keep a seeded random ``fraction`` (0 < f <= 1) of the pairs left after the filters (at least one),
        in store order: :func:`subsample` (the low-data regime of pretraining comparisons).
    """

    def __init__(self, store: Store | str | Path, modality: str = "s1s2",
                 bands: str | Iterable[str] | None = None, split: str | None = "train", labels: int = 19,
                 order: str = "official", recommended: bool = True,
                 countries: Iterable[str] | str | None = None,
                 seasons: Iterable[str] | str | None = None, fraction: float = 1.0,
                 fraction_seed: int = 0) -> None:
        if isinstance(store, str | Path):
            from benmm.store import Store

            store = Store.open(store)
        self.store = store
        self.modality = check_modality(modality)
        self.bands = choose_bands(modality, bands)
        self.split = normalize_split(split)
        self.num_classes = int(labels)
        self.order = order
        self.recommended = recommended
        self.layout = sample_layout(self.bands)
        where = str(getattr(store, "path", store))
        meta = subsample(select(store.metadata, self.split, recommended, countries, seasons, where),
                         fraction, fraction_seed, where)
        self._labels = multi_hot(meta, self.num_classes, order, where)
        self.label_names = label_names(self.num_classes, order)
        self._names = meta["patch_id"].to_numpy(dtype=str).astype(np.bytes_)
        self._keys: dict[str, np.ndarray] = {}
        if any(k.startswith("s2") for k in self.layout):
            self._keys["s2"] = self._names
        if "s1" in self.layout:
            self._keys["s1"] = meta["s1_name"].to_numpy(dtype=str).astype(np.bytes_)
        # per modality: (sample key, channel, band) for every band this dataset reads
        self._wanted: dict[str, list[tuple[str, int, str]]] = {"s2": [], "s1": []}
        for key, (group, _) in self.layout.items():
            mod = "s1" if key == "s1" else "s2"
            self._wanted[mod].extend((key, ch, band) for ch, band in enumerate(group))
        self._layouts: dict[tuple[str, bytes], tuple[list[tuple[str, int, np.dtype, int, int]], int]] = {}
        self._shapes = self.shapes()
        self._env: Any = None
        self._env_pid = -1

    # ---- description ------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._names)

    def __repr__(self) -> str:
        return (f"BigEarthNetDataset({len(self)} pairs, split={self.split!r}, modality={self.modality!r}, "
                f"bands={self.bands}, labels={self.num_classes}, order={self.order!r})")

    @property
    def names(self) -> list[str]:
        """Pair ids (S2 keys), in index order."""
        return [n.decode() for n in self._names]

    @property
    def in_channels(self) -> dict[str, int]:
        """Channels per modality after the batch transform: ``{"s2": k, "s1": 2}``."""
        s2, s1 = split_by_modality(self.bands)
        return {k: v for k, v in (("s2", len(s2)), ("s1", len(s1))) if v}

    def labels(self) -> np.ndarray:
        """All label vectors, float32 [len, num_classes] (for class weights, stratification)."""
        return self._labels.astype(np.float32)

    def shapes(self) -> dict[str, tuple[int, int, int]]:
        return {key: (len(group), side, side) for key, (group, side) in self.layout.items()}

    # ---- reading ----------------------------------------------------------------------------
    def __getitem__(self, index: int) -> dict[str, Any]:
        i = self._index(index)
        arrays = {key: np.empty(shape, dtype=np.float32) for key, shape in self._shapes.items()}
        with self._reader() as get:
            self._fill(i, arrays, get)
        sample: dict[str, Any] = {key: torch.from_numpy(a) for key, a in arrays.items()}
        sample["label"] = torch.from_numpy(self._labels[i].astype(np.float32))
        sample["name"] = self._names[i].decode()
        return sample

    def get_batch(self, indices: Sequence[int], shared: bool | None = None,
                  out: dict[str, torch.Tensor] | None = None) -> dict[str, Any]:
        """A collated batch of ``indices`` (the same as ``collate([ds[i] for i in indices])``), filled
        in place; its tensors live in shared memory when ``shared`` (default: inside a DataLoader
        worker), so they reach the main process without a copy.

        ``out`` optionally maps sample keys (``s2``, ``s2_20m``, ``s2_60m``, ``s1``, ``label``) to
        preallocated contiguous float32 tensors of at least ``len(indices)`` rows, which are filled
        (their first rows) instead of fresh ones: DataLoader workers reuse buffers, because writing
        fresh memory costs more than the copy itself (every new page is a fault + a zeroed page)."""
        idx = [self._index(i) for i in indices]
        if shared is None:
            shared = get_worker_info() is not None
        out = out or {}
        batch: dict[str, Any] = {key: self._target(out.get(key), (len(idx), *shape), shared, key)
                                 for key, shape in self._shapes.items()}
        views = {key: t.numpy() for key, t in batch.items()}
        with self._reader() as get:  # one read transaction for the whole batch
            for row, i in enumerate(idx):
                self._fill(i, {key: v[row] for key, v in views.items()}, get)
        labels = self._target(out.get("label"), (len(idx), self.num_classes), shared, "label")
        labels.numpy()[:] = self._labels[idx]
        batch["label"] = labels
        batch["name"] = [self._names[i].decode() for i in idx]
        return batch

    @staticmethod
    def _target(buf: torch.Tensor | None, shape: tuple[int, ...], shared: bool, key: str) -> torch.Tensor:
        if buf is None:
            return _empty(shape, shared)
        if (buf.dtype != torch.float32 or buf.device.type != "cpu" or not buf.is_contiguous()
                or tuple(buf.shape[1:]) != shape[1:] or buf.shape[0] < shape[0]):
            raise ValueError(f"get_batch(out=...): {key!r} buffer is {buf.dtype} {tuple(buf.shape)}, "
                             f"need a contiguous CPU float32 tensor of shape {shape} (or more rows)")
        return buf[: shape[0]]

    def _index(self, index: int) -> int:
        n = len(self._names)
        i = int(index)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(f"index {index} out of range for a dataset of {n} pairs")
        return i

    @contextmanager
    def _reader(self) -> Iterator[Callable[[bytes], Any]]:
        """``get(key) -> buffer or None`` valid inside the block.

        Zero-copy: a read transaction on the store's per-process LMDB environment hands out buffers
        into the memory map, and :meth:`_fill` converts straight from them into the float32 output
        (``Store.raw`` would add a copy of every value and a path check per call). Stores without an
        LMDB environment fall back to ``raw``.
        """
        env = self._lmdb_env()
        if env is None:
            def raw(key: bytes) -> Any:
                try:
                    return self.store.raw(key.decode())
                except (KeyError, StoreError):
                    return None

            yield raw
            return
        with env.begin(buffers=True) as txn:
            yield txn.get

    def _lmdb_env(self) -> Any:
        pid = os.getpid()
        if self._env_pid != pid:  # a new (worker) process: ask the store for this process's handle
            opener = getattr(self.store, "env", None)
            self._env = opener() if callable(opener) else None
            self._env_pid = pid
        return self._env

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_env"], state["_env_pid"] = None, -1  # LMDB handles never cross processes
        return state

    def _fill(self, i: int, out: dict[str, np.ndarray], get: Callable[[bytes], Any]) -> None:
        for mod, keys in self._keys.items():
            key = keys[i]
            buf = get(key)
            if buf is None:
                raise self._error(i, mod, key, "key is missing from the store")
            plan, need = self._plan(buf, mod, i, key)
            if len(buf) < need:
                raise self._error(i, mod, key, f"value is {len(buf)} bytes, its header needs {need} "
                                               "(truncated value)")
            for sample_key, ch, dtype, start, side in plan:
                out[sample_key][ch] = np.frombuffer(buf, dtype=dtype, count=side * side,
                                                    offset=start).reshape(side, side)

    def _plan(self, buf: Any, mod: str, i: int, key: bytes
              ) -> tuple[list[tuple[str, int, np.dtype, int, int]], int]:
        """(band copy plan, bytes the value must have), cached per distinct header."""
        n = int.from_bytes(buf[:8], "little") if len(buf) >= 8 else -1
        head = bytes(buf[8:8 + n]) if 0 < n <= len(buf) - 8 else b""
        cached = self._layouts.get((mod, head))
        if cached is not None:
            return cached
        try:
            header, _ = parse_header(buf)
        except BlobError as exc:
            raise self._error(i, mod, key, str(exc)) from None
        plan = []
        need = 0
        for sample_key, ch, band in self._wanted[mod]:
            if band not in header:
                raise self._error(i, mod, key, f"band {band} is not in the value "
                                               f"(it holds {', '.join(sorted(header))})")
            dtype, shape, start, end = header[band]
            side = BAND_SIZE[band]
            if shape != (side, side):
                raise self._error(i, mod, key, f"band {band} is {'x'.join(map(str, shape))}, "
                                               f"expected {side}x{side}")
            if dtype != BAND_DTYPE[band]:
                raise self._error(i, mod, key, f"band {band} has dtype {dtype}, expected {BAND_DTYPE[band]}")
            plan.append((sample_key, ch, dtype, start, side))
            need = max(need, end)
        if len(self._layouts) >= _MAX_LAYOUTS:
            self._layouts.clear()
        self._layouts[(mod, head)] = (plan, need)
        return plan, need

    def _error(self, i: int, mod: str, key: bytes, reason: str) -> StoreError:
        where = getattr(self.store, "path", self.store)
        return StoreError(f"{where}: pair {self._names[i].decode()}: {mod.upper()} value "
                          f"{key.decode()!r}: {reason}")


def _empty(shape: tuple[int, ...], shared: bool) -> torch.Tensor:
    """A float32 tensor; in shared memory when ``shared`` (inside a worker whose batch goes straight
    to the main process)."""
    return shared_empty(shape) if shared else torch.empty(shape, dtype=torch.float32)
