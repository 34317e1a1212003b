"""Queries of a chosen side against an index of one side: cross-modal search (``benmm search
--query-modality``, the service's ``modality`` parameter).

An index holds one side (``s1``, ``s2`` or ``s1s2``: the manifest's ``source.modality``). A query may be of
any side the index's model embeds (a cross-modal model: all three; a classifier or a hashing model: its
own). A query of the index's own side by name uses the stored vector, as before; a query of another side by
name reads that patch's bands of the query side from the store and embeds them with the index's model on
that side; an uploaded patch is embedded on the chosen side. By name, the query's own pair (the same place
seen by the other sensor) is left out of its results, as the item itself is in a same-side search and as
:mod:`benmm.retrieval.crossmodal` leaves it out of the evaluation.

Every refusal is a one-line :class:`~benmm.errors.RetrievalError` naming both sides (the query's and the
index's): a side the model does not embed, a file lacking the query side's bands, a model whose
embeddings or codes do not match the index's.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from threading import Lock
from typing import Any

import numpy as np

from benmm.bands import ALL_BANDS, MODALITIES, split_by_modality
from benmm.errors import RetrievalError
from benmm.retrieval.crossmodal import _side_of_index
from benmm.retrieval.service.upload import UploadError, check_bands

BAND_STATS_REASON = ("band statistics of one side are not comparable with another side's; index a "
                     "cross-modal model's embeddings to search across")


def index_side(index: Any) -> str:
    """The side an index holds (``s1``, ``s2`` or ``s1s2``)."""
    return _side_of_index(index)


class QuerySides:
    """The query sides an index can take, and one embedder per side (made on first use, then kept).

    ``embedder`` is the index's own-side embedder (or None when the service cannot embed: ``note`` says
    why); other sides are opened with ``open_side(modality)`` (default: the checkpoint behind ``embedder``
    on that side).
    """

    def __init__(self, index: Any, embedder: Any | None, note: str | None = None,
                 open_side: Callable[[str], Any] | None = None) -> None:
        self.index, self.note = index, note
        self.side = index_side(index)
        src = index.source
        model = src.get("model") or {}
        self.model_name = str(model.get("name") or src.get("embedder") or "unknown")
        band_stats = src.get("embedder") == "band-stats" or getattr(embedder, "name", None) == "band-stats"
        have = tuple(getattr(embedder, "modalities", None) or model.get("modalities") or (self.side,))
        self.sides = (self.side,) if band_stats else tuple(m for m in MODALITIES if m in have)
        if self.side not in self.sides:
            self.sides = (*self.sides, self.side)
        self.reason: str | None = None
        if band_stats:
            self.reason = BAND_STATS_REASON
        elif len(self.sides) == 1:
            self.reason = (f"the index's model ({self.model_name}) embeds only {self.side} patches; index a "
                           "cross-modal model's embeddings (--recipe cross-modal) to search across")
        self._open = open_side or self._open_checkpoint
        self._embedders: dict[str, Any] = {}
        if embedder is not None:
            self._embedders[str(getattr(embedder, "modality", self.side))] = embedder
        self._base = embedder
        self._lock = Lock()

    # ------------------------------------------------------------------------------------------ sides
    def resolve(self, modality: str | None) -> str:
        """The query side: ``modality`` checked against what the model embeds (None: the index's side)."""
        if modality is None or not str(modality).strip():
            return self.side
        m = str(modality).strip().lower()
        if m not in MODALITIES:
            raise RetrievalError(f"unknown query modality {modality!r}: choose {' or '.join(self.sides)} for "
                                 f"this {self.side} index")
        if m not in self.sides:
            raise RetrievalError(f"{m} queries cannot search this {self.side} index: its model "
                                 f"({self.model_name}) takes {' or '.join(self.sides)} queries; "
                                 f"{self.reason}")
        return m

    def _open_checkpoint(self, modality: str) -> Any:
        path = getattr(self._base, "path", None)
        if path is None:
            raise RetrievalError(f"{modality} queries need the index's model, but this {self.side} index "
                                 f"cannot embed: {self.note or 'it names no checkpoint'}")
        from benmm.retrieval.embed import CheckpointEmbedder

        return CheckpointEmbedder(Path(path), modality=modality)

    def embedder(self, modality: str | None) -> Any:
        """The embedder of one query side, checked against the index (dimension, code length)."""
        m = self.resolve(modality)
        with self._lock:
            if m not in self._embedders:
                if self._base is None:
                    raise RetrievalError(f"{m} queries need the index's model, but this {self.side} index "
                                         f"cannot embed new patches: {self.note}")
                self._embedders[m] = self._open(m)
            emb = self._embedders[m]
        self.check(emb, m)
        return emb

    def check(self, emb: Any, modality: str) -> None:
        """Refuse an embedder whose vectors or codes do not fit the index (one line, both sides)."""
        ix, name = self.index, getattr(emb, "name", self.model_name)
        dim = int(getattr(emb, "dim", ix.dim))
        if dim != ix.dim:
            raise RetrievalError(f"{modality} queries from model {name} are {dim}-d but the {self.side} "
                                 f"index expects {ix.dim}-d embeddings; embed queries with the index's model")
        q_bits, i_bits = getattr(emb, "code_bits", None), ix.source.get("code_bits")
        if q_bits is not None and i_bits is not None and int(q_bits) != int(i_bits):
            raise RetrievalError(f"{modality} queries from model {name} make {q_bits}-bit codes but the "
                                 f"{self.side} index holds {i_bits}-bit codes; use the index's model")

    # ------------------------------------------------------------------------------------------ search
    def query_bands(self, bands: Mapping[str, np.ndarray], modality: str | None,
                    what: str = "the file") -> tuple[str, dict[str, np.ndarray], Any]:
        """``(side, checked bands, embedder)`` for a query patch's bands on the chosen side."""
        m = self.resolve(modality)
        emb = self.embedder(m)
        missing = [b for b in emb.bands if b not in bands]
        if missing:
            fits = [s for s in self.sides if s != m and all(b in bands for b in self._side_bands(s))]
            hint = f"; choose query modality {' or '.join(fits)}" if fits else ""
            s2, s1 = split_by_modality(tuple(b for b in ALL_BANDS if b in bands))
            held = ("S1 and S2 bands" if s1 and s2 else "S1 bands only" if s1 else "S2 bands only" if s2
                    else "no S1 or S2 bands")
            raise UploadError(f"{what} is missing bands {', '.join(missing)} of the {m} query side (it holds "
                              f"{held}) for this {self.side} index{hint}")
        return m, check_bands(bands, emb.bands), emb

    def _side_bands(self, modality: str) -> tuple[str, ...]:
        from benmm.retrieval.embed import side_bands

        model = self.index.source.get("model") or {}
        known = tuple(model.get("bands") or getattr(self._base, "bands", ()) or ())
        return side_bands(known, modality) if known else ()

    def search_bands(self, bands: Mapping[str, np.ndarray], modality: str | None, k: int,
                     what: str = "the file") -> tuple[str, np.ndarray, np.ndarray]:
        """``(side, distances, indices)`` of a new patch's bands, embedded on the chosen side."""
        m, checked, emb = self.query_bands(bands, modality, what)
        dist, idx = self.index.search(emb(checked), k)
        return m, dist, idx

    def search_name(self, name: str, modality: str | None, k: int,
                    store: Any | None, store_note: str | None = None) -> tuple[str, np.ndarray, np.ndarray]:
        """``(side, distances, indices)`` of the index's patch ``name`` as a query of the chosen side."""
        ix = self.index
        m = self.resolve(modality)
        if m == self.side:
            dist, idx = ix.search_name(name, k)
            return m, dist, idx
        if name not in ix:
            raise RetrievalError(f"patch {name!r} is not in this {self.side} index (neither archive "
                                 "nor query items)")
        if store is None:
            raise RetrievalError(f"an {m} query by name reads patch {name!r} from the store of this "
                                 f"{self.side} index, but {store_note or 'there is none'}")
        if name not in store:
            raise RetrievalError(f"patch {name!r} of this {self.side} index is not in the store "
                                 f"{getattr(store, 'path', '')}; its {m} bands cannot be read")
        _, checked, emb = self.query_bands(store.read_pair(name), m, f"patch {name!r} in the store")
        pos = ix.position(name)  # the query's own pair: left out, as search_name leaves out the item itself
        dist, idx = ix.search(emb(checked), k + (pos is not None))
        if pos is not None:
            keep = idx[0] != pos
            dist, idx = dist[:, keep][:, :k], idx[:, keep][:, :k]
        return m, dist, idx

    def describe(self) -> dict[str, Any]:
        """The health record: the index's side, the query sides and why others are off."""
        usable = self._base is not None or len(self.sides) == 1
        off = None if usable else f"other sides need the model: {self.note}"
        return {"archive_modality": self.side, "query_modalities": list(self.sides),
                "query_modality_default": self.side, "query_modalities_note": self.reason or off}
