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
import torch
from torch.utils.data import Dataset, get_worker_info

from benmm.archive import refmaps
from benmm.archive.splits import normalize_split
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
from benmm.data.maps import fill_map
from benmm.data.place import DatasetError, place_mask
from benmm.data.selection import COUNTRIES, _check_names, multi_hot, select, subsample
from benmm.errors import StoreError
from benmm.labels import label_names
from benmm.store.blob import BlobError, parse_header

if TYPE_CHECKING:
    from benmm.store import Store

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
    reference_maps:
        Also return ``sample["reference_map"]``: the pair's reBEN reference map, int64 [120, 120] of raw
        CLC Level-3 codes (0 = no data; :func:`benmm.archive.refmaps.class_index_map` turns it into class
        indices). Needs a store that holds the maps (encoded from the reBEN release with its
        ``Reference_Maps/``, or a reBEN LMDB with ``<patch_id>_reference_map`` keys).
    bbox:
        ``(lon_min, lat_min, lon_max, lat_max)`` in degrees: keep the pairs whose footprint intersects it
        (stores with footprints: see :mod:`benmm.data.place`). A place (``countries``, ``bbox``) that
        matches no pair of the store is an error.
    fraction, fraction_seed:
        Keep a seeded random ``fraction`` (0 < f <= 1) of the pairs left after the filters (at least one),
        in store order: :func:`subsample` (the low-data regime of pretraining comparisons).
    """

    def __init__(self, store: Store | str | Path, modality: str = "s1s2",
                 bands: str | Iterable[str] | None = None, split: str | None = "train", labels: int = 19,
                 order: str = "official", recommended: bool = True,
                 countries: Iterable[str] | str | None = None,
                 seasons: Iterable[str] | str | None = None,
                 bbox: Sequence[float] | None = None, reference_maps: bool = False, fraction: float = 1.0,
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
        meta = store.metadata
        if countries is not None:
            countries = _check_names(countries, COUNTRIES, "country")
        keep = place_mask(store, meta, countries, bbox, where)
        meta = select(meta if keep is None else meta.loc[keep], self.split, recommended, countries, seasons,
                      where)
        meta = subsample(meta, fraction, fraction_seed, where)
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
        self._map_keys: np.ndarray | None = None
        if reference_maps:
            if not getattr(store, "has_reference_maps", False):
                raise DatasetError(f"{where}: this store has no reference maps; encode the reBEN release "
                                   "with its Reference_Maps/ folder (or use reference_maps=False)")
            self._map_keys = np.char.add(self._names, refmaps.SUFFIX.encode())
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
        if self._map_keys is not None:
            sample["reference_map"] = torch.empty((refmaps.SIDE, refmaps.SIDE), dtype=torch.int64)
            with self._reader() as get:
                self._fill_map(i, sample["reference_map"].numpy(), get)
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
        if self._map_keys is not None:  # int64, so a fresh tensor (the reused buffers are float32)
            maps = torch.empty((len(idx), refmaps.SIDE, refmaps.SIDE), dtype=torch.int64)
            if shared:
                maps.share_memory_()  # empty: moved before it is filled, so nothing is copied
            with self._reader() as get:
                for row, i in enumerate(idx):
                    self._fill_map(i, maps[row].numpy(), get)
            batch["reference_map"] = maps
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

    def _fill_map(self, i: int, out: np.ndarray, get: Callable[[bytes], Any]) -> None:
        """Pair ``i``'s reference map into ``out`` (int64 [120, 120]), its value checked like a band's."""
        assert self._map_keys is not None
        reason = fill_map(get(self._map_keys[i]), out)
        if reason is not None:
            raise self._error(i, "map", self._map_keys[i], reason)

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
