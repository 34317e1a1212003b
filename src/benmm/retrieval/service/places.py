"""Where the service's patches lie: each pair's footprint from the store's GeoParquet metadata, for the
hit records (``footprint: {"bbox": [lon_min, lat_min, lon_max, lat_max], "center": [lon, lat]}``) and
the page's map. None for a pair, or for the whole service, where the store holds no footprints."""

from __future__ import annotations

from typing import Any

import numpy as np


class Places:
    """pair name -> footprint record, built once from a store's metadata files."""

    def __init__(self, names: list[str], bounds: np.ndarray) -> None:
        ok = ~np.isnan(bounds).any(axis=1)
        self._rows = {n: [float(v) for v in b] for n, b, keep in zip(names, bounds, ok, strict=True) if keep}

    def __len__(self) -> int:
        return len(self._rows)

    @classmethod
    def of_store(cls, store: Any) -> tuple[Places | None, str | None]:
        """(places, None) or (None, why there are none) for the service's store (or None)."""
        if store is None:
            return None, "the service has no store (serve with --store PATH)"
        files = getattr(store, "metadata_files", None)
        if not files:
            return None, "the store has no metadata file"
        from benmm.store.geoparquet import read_footprints, store_bounds

        names = [str(n) for n in read_footprints(files)["patch_id"]]
        places = cls(names, store_bounds(files))
        if not len(places):
            why = ((getattr(store, "manifest", None) or {}).get("footprints") or {}).get("why_none")
            return None, f"the store holds no footprints ({why or 'no geometry column'})"
        return places, None

    def get(self, name: str) -> dict[str, Any] | None:
        b = self._rows.get(name)
        if b is None:
            return None
        return {"bbox": b, "center": [(b[0] + b[2]) / 2, (b[1] + b[3]) / 2]}

