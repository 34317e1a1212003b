"""Who the synthetic pairs are: real pair names, country, season, split and flags; their 43-class labels.

Synthetic pairs borrow their *identity* from the real archive: each one is a real (S1, S2) pair drawn
from ``s1_s2_name_country_season.csv.bz2``, so names, tiles, UTM zones, countries, seasons, official
splits and the snow / cloud / no-19-class lists are all mutually consistent and every split / exclusion
lookup in benmm works on synthetic data exactly as on the real archive. Only the labels and the pixels
are invented. Labels come from a few land-cover *scene types* (boreal forest, farmland, pastoral, ...)
with country-dependent priors, which gives realistic frequencies (2-4 labels per patch, frequent forest
and agriculture classes, rare coastal ones) and realistic co-occurrence.
"""

from __future__ import annotations

import bz2
import io
from dataclasses import dataclass
from functools import cache
from typing import Final

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from benmm.labels import LABEL_43_TO_19, LABELS_43
from benmm.resources import resource_path

_OFFICIAL_SPLITS: Final = ("train", "val", "test")
# share of flagged patches forced into a sample (enriched over the archive's rates so that small
# archives still exercise every code path); the rest is drawn uniformly from the recommended set
_SNOW_SHARE: Final = 0.10
_CLOUD_SHARE: Final = 0.03
_NO19_PER: Final = 1000  # one no-19-class patch per this many pairs (at least one from 20 pairs up)


@dataclass(frozen=True)
class PairTables:
    """Everything about the 590,326 real pairs that synthetic pairs borrow (official file order)."""

    table: pa.Table  # s1_name, s2_name, country, season
    split: np.ndarray  # index into _OFFICIAL_SPLITS, -1 for excluded patches
    snow: np.ndarray
    cloud: np.ndarray
    no19: np.ndarray


def _text(file: str) -> bytes:
    return bz2.decompress(resource_path(file).read_bytes())


def _member(names: pa.ChunkedArray, file: str) -> np.ndarray:
    listed = pa.array(_text(file).decode("ascii").split())
    return pc.is_in(names, value_set=listed).to_numpy(zero_copy_only=False)


@cache
def pair_tables() -> PairTables:
    """Load the official pair list, splits and exclusion lists once per process (~1-2 s, pyarrow)."""
    table = pacsv.read_csv(io.BytesIO(_text("s1_s2_name_country_season.csv.bz2")))
    s2 = table["s2_name"]
    split = np.full(len(table), -1, dtype=np.int8)
    for code, name in enumerate(_OFFICIAL_SPLITS):
        split[_member(s2, f"{name}.csv.bz2")] = code
    return PairTables(table, split, _member(s2, "patches_with_seasonal_snow.csv.bz2"),
                      _member(s2, "patches_with_cloud_and_shadow.csv.bz2"),
                      _member(s2, "patches_with_no_19_class_targets.csv.bz2"))


def choose_pairs(n: int, seed: int, reben: bool = False) -> pd.DataFrame:
    """``n`` distinct real pairs, deterministic in (n, seed), sorted by S2 name.

    A few snow / cloud / no-19-class patches are always included (small archives exercise every code
    path); the rest comes from the recommended set, so official split proportions (~52/24/24) hold.
    reBEN has no no-19-class patches, so ``reben=True`` never draws them. Columns: s1_name, s2_name,
    country, season, split (train/val/test, "" for excluded patches), snow, cloud, no19.
    """
    t = pair_tables()
    rng = np.random.default_rng([seed, 0x5EED])
    n_no19 = 0 if reben or n < 20 else min(int(t.no19.sum()), max(1, n // _NO19_PER))
    n_cloud = round(n * _CLOUD_SHARE) if n >= 20 else 0
    n_snow = round(n * _SNOW_SHARE) if n >= 10 else 0
    picked: list[np.ndarray] = []
    taken = np.zeros(len(t.split), dtype=bool)
    for mask, k in ((t.no19, n_no19), (t.cloud & ~t.no19, n_cloud), (t.snow & ~t.no19, n_snow)):
        pool = np.flatnonzero(mask & ~taken)
        got = rng.choice(pool, size=min(k, len(pool)), replace=False)
        taken[got] = True
        picked.append(got)
    clean = np.flatnonzero((t.split >= 0) & ~taken)
    picked.append(rng.choice(clean, size=n - sum(len(p) for p in picked), replace=False))
    idx = np.concatenate(picked)
    out = t.table.take(pa.array(idx)).to_pandas()
    codes = t.split[idx]
    out["split"] = np.array([*_OFFICIAL_SPLITS, ""], dtype=object)[codes]  # -1 -> ""
    if reben:  # reBEN gives every patch a split, flagged ones included
        missing = codes < 0
        out.loc[missing, "split"] = rng.choice(_OFFICIAL_SPLITS, size=int(missing.sum()),
                                               p=[0.52, 0.24, 0.24])
    out["snow"], out["cloud"], out["no19"] = t.snow[idx], t.cloud[idx], t.no19[idx]
    return out.sort_values("s2_name", kind="stable").reset_index(drop=True)


# ---- labels ---------------------------------------------------------------------------------------

#: land-cover scene types: 43-class label -> probability of appearing in a patch of that scene
SCENES: Final[dict[str, dict[str, float]]] = {
    "boreal": {
        "Coniferous forest": 0.8, "Mixed forest": 0.6, "Transitional woodland/shrub": 0.6, "Peatbogs": 0.25,
        "Water bodies": 0.3, "Inland marshes": 0.04, "Non-irrigated arable land": 0.1,
        "Discontinuous urban fabric": 0.03, "Broad-leaved forest": 0.08, "Moors and heathland": 0.03,
        "Land principally occupied by agriculture, with significant areas of natural vegetation": 0.08,
        "Pastures": 0.04, "Bare rock": 0.01, "Water courses": 0.03, "Sea and ocean": 0.03,
    },
    "farmland": {
        "Non-irrigated arable land": 0.85, "Complex cultivation patterns": 0.3,
        "Land principally occupied by agriculture, with significant areas of natural vegetation": 0.3,
        "Pastures": 0.3, "Discontinuous urban fabric": 0.25, "Broad-leaved forest": 0.25, "Mixed forest": 0.1,
        "Industrial or commercial units": 0.05, "Water courses": 0.05,
        "Fruit trees and berry plantations": 0.05,
        "Vineyards": 0.03, "Permanently irrigated land": 0.02, "Rice fields": 0.004,
        "Road and rail networks and associated land": 0.02, "Green urban areas": 0.01,
    },
    "pastoral": {
        "Pastures": 0.9, "Non-irrigated arable land": 0.2, "Discontinuous urban fabric": 0.2,
        "Land principally occupied by agriculture, with significant areas of natural vegetation": 0.3,
        "Coniferous forest": 0.2, "Mixed forest": 0.2, "Broad-leaved forest": 0.2, "Peatbogs": 0.15,
        "Natural grassland": 0.05, "Moors and heathland": 0.06, "Complex cultivation patterns": 0.1,
        "Water bodies": 0.05, "Sport and leisure facilities": 0.01,
    },
    "mediterranean": {
        "Sclerophyllous vegetation": 0.4, "Transitional woodland/shrub": 0.5, "Agro-forestry areas": 0.35,
        "Olive groves": 0.2, "Broad-leaved forest": 0.35, "Coniferous forest": 0.25, "Mixed forest": 0.15,
        "Complex cultivation patterns": 0.35, "Non-irrigated arable land": 0.25, "Vineyards": 0.1,
        "Land principally occupied by agriculture, with significant areas of natural vegetation": 0.4,
        "Annual crops associated with permanent crops": 0.05, "Burnt areas": 0.03, "Natural grassland": 0.08,
        "Discontinuous urban fabric": 0.15, "Permanently irrigated land": 0.08, "Rice fields": 0.02,
        "Fruit trees and berry plantations": 0.05, "Pastures": 0.05, "Sparsely vegetated areas": 0.03,
    },
    "mountain": {
        "Coniferous forest": 0.7, "Mixed forest": 0.5, "Broad-leaved forest": 0.45, "Natural grassland": 0.35,
        "Pastures": 0.35, "Bare rock": 0.1, "Transitional woodland/shrub": 0.3, "Moors and heathland": 0.1,
        "Sparsely vegetated areas": 0.1, "Water courses": 0.05, "Water bodies": 0.05,
        "Land principally occupied by agriculture, with significant areas of natural vegetation": 0.15,
    },
    "urban": {
        "Continuous urban fabric": 0.25, "Discontinuous urban fabric": 0.9,
        "Industrial or commercial units": 0.55,
        "Green urban areas": 0.15, "Sport and leisure facilities": 0.15,
        "Road and rail networks and associated land": 0.15, "Airports": 0.04, "Port areas": 0.04,
        "Construction sites": 0.05, "Dump sites": 0.03, "Mineral extraction sites": 0.05,
        "Non-irrigated arable land": 0.4, "Complex cultivation patterns": 0.25, "Pastures": 0.2,
        "Water courses": 0.1, "Broad-leaved forest": 0.2,
    },
    "coastal": {
        "Sea and ocean": 0.6, "Beaches, dunes, sands": 0.35, "Coastal lagoons": 0.1, "Estuaries": 0.1,
        "Salt marshes": 0.15, "Salines": 0.08, "Intertidal flats": 0.15, "Water bodies": 0.2,
        "Inland marshes": 0.2, "Peatbogs": 0.1, "Discontinuous urban fabric": 0.25, "Coniferous forest": 0.25,
        "Pastures": 0.25, "Non-irrigated arable land": 0.2, "Moors and heathland": 0.1,
    },
    "mosaic": {
        "Broad-leaved forest": 0.5, "Mixed forest": 0.6, "Coniferous forest": 0.4,
        "Transitional woodland/shrub": 0.5, "Non-irrigated arable land": 0.4,
        "Complex cultivation patterns": 0.2,
        "Land principally occupied by agriculture, with significant areas of natural vegetation": 0.4,
        "Pastures": 0.3, "Natural grassland": 0.1, "Water bodies": 0.1, "Inland marshes": 0.07,
    },
}

#: country -> weight of each scene type
COUNTRY_SCENES: Final[dict[str, dict[str, float]]] = {
    "Finland": {"boreal": 0.8, "coastal": 0.07, "farmland": 0.08, "urban": 0.03, "mosaic": 0.02},
    "Portugal": {"mediterranean": 0.7, "coastal": 0.12, "farmland": 0.1, "urban": 0.08},
    "Serbia": {"farmland": 0.45, "mosaic": 0.3, "mountain": 0.15, "urban": 0.1},
    "Lithuania": {"farmland": 0.35, "mosaic": 0.45, "coastal": 0.08, "urban": 0.07, "boreal": 0.05},
    "Ireland": {"pastoral": 0.75, "coastal": 0.12, "urban": 0.05, "farmland": 0.08},
    "Austria": {"mountain": 0.4, "pastoral": 0.2, "farmland": 0.2, "mosaic": 0.12, "urban": 0.08},
    "Belgium": {"farmland": 0.4, "pastoral": 0.25, "urban": 0.25, "coastal": 0.1},
    "Switzerland": {"mountain": 0.45, "pastoral": 0.35, "urban": 0.1, "farmland": 0.1},
    "Luxembourg": {"farmland": 0.35, "pastoral": 0.35, "mosaic": 0.2, "urban": 0.1},
    "Kosovo": {"mountain": 0.45, "farmland": 0.35, "urban": 0.1, "mosaic": 0.1},
}
_NO19_POOL: Final = {"Road and rail networks and associated land": 3.0, "Green urban areas": 2.0,
                     "Sport and leisure facilities": 2.0, "Mineral extraction sites": 2.0, "Bare rock": 1.5,
                     "Intertidal flats": 1.5, "Burnt areas": 1.0, "Construction sites": 1.0,
                     "Dump sites": 1.0,
                     "Port areas": 0.5, "Airports": 0.5}
_INDEX43: Final = {name: i for i, name in enumerate(LABELS_43)}


def sample_labels(rng: np.random.Generator, country: str, no19: bool) -> list[str]:
    """43-class labels of one patch, official order; ``no19`` patches get only unmapped labels."""
    if no19:
        pool = list(_NO19_POOL)
        p = np.array(list(_NO19_POOL.values()))
        k = 1 + int(rng.random() < 0.3)
        chosen = set(rng.choice(pool, size=k, replace=False, p=p / p.sum()).tolist())
    else:
        weights = COUNTRY_SCENES.get(country, COUNTRY_SCENES["Austria"])
        names = list(weights)
        w = np.array(list(weights.values()))
        scene = SCENES[names[int(rng.choice(len(names), p=w / w.sum()))]]
        draws = rng.random(len(scene))
        chosen = {name for (name, p), u in zip(scene.items(), draws, strict=True) if u < p}
        if not any(LABEL_43_TO_19[name] for name in chosen):
            chosen.add(max(scene, key=scene.__getitem__))
    assert chosen <= set(LABELS_43)  # internal tables, not user input
    return sorted(chosen, key=_INDEX43.__getitem__)



# ---- appearance -----------------------------------------------------------------------------------
# Each 43-class label is drawn as a *material*. S2 reflectance (DN, canonical band order B01..B12) and
# S1 backscatter (VV, VH dB, texture) are invented but physically shaped: vegetation has a red edge,
# water is dark beyond 700 nm, built-up and sand are bright and flat. Some materials are near twins in
# S2 and differ only in S1 (sand vs industrial, grassland vs pastures, transitional woodland vs moors,
# coastal vs inland wetlands), while the three forest types share one S1 look and differ in S2: S1 alone
# is the weaker modality, and S1+S2 beats either.
#
# Levels are checked against the official v1 band statistics (tests/test_synth.py): over the recommended
# patches every band's mean is within 30% of band_stats_v1.json. B09 (945 nm, 60 m) is not corrected by
# sen2cor's water-vapour step in the L2A product BigEarthNet uses, and in the real patches it sits at
# ~0.99x B8A (v1 means 2246 vs 2266; the 6 shipped examples 3446 vs 3470, snow included): B09 here is
# ~0.98x B8A for vegetation, ~1x for soil and built-up, lower for water.

#: material -> 12 S2 reflectances (DN), then (VV dB, VH dB, S1 texture dB), then S2 texture
#: (mid-frequency amplitude, pixel noise amplitude, field-stripe amplitude)
_Look = tuple[tuple[int, ...], tuple[float, float, float], tuple[float, float, float]]
MATERIALS: Final[dict[str, _Look]] = {
    "urban": ((1100, 1100, 1200, 1300, 1450, 1700, 1850, 2000, 2050, 2030, 2100, 1800),
             (-7.5, -13.5, 4), (.15, .12, 0)),
    "industrial": ((1500, 1600, 1700, 1800, 1900, 2050, 2150, 2250, 2300, 2290, 2500, 2200),
                  (-5.5, -12.5, 5), (.1, .08, 0)),
    "sand": ((1540, 1640, 1760, 1840, 1960, 2080, 2180, 2280, 2330, 2320, 2530, 2230),
            (-18.5, -26.5, .7), (.1, .08, 0)),
    "arable": ((500, 600, 900, 900, 1300, 2200, 2600, 2800, 2900, 2850, 2600, 1700),
              (-12.5, -18.5, 1.5), (.06, .03, .15)),
    "permcrop": ((520, 620, 880, 880, 1250, 1900, 2200, 2400, 2500, 2450, 2450, 1650),
                (-11, -17, 1.5), (.06, .05, .12)),
    "pasture": ((350, 400, 750, 500, 1100, 2800, 3400, 3600, 3700, 3630, 2100, 1100),
               (-14, -20.5, 1), (.05, .03, 0)),
    "grassland": ((360, 410, 760, 520, 1120, 2750, 3330, 3530, 3630, 3560, 2150, 1150),
                 (-10, -17, 2.5), (.05, .03, 0)),
    "complex": ((450, 520, 850, 750, 1250, 2400, 2900, 3100, 3200, 3140, 2400, 1450),
               (-12.5, -18.5, 2), (.15, .04, .08)),
    "agrinat": ((380, 420, 700, 550, 1000, 2300, 2800, 3000, 3100, 3040, 2000, 1100),
               (-12, -18, 1.5), (.1, .04, 0)),
    "agroforest": ((450, 500, 750, 700, 1050, 1800, 2100, 2300, 2400, 2350, 2200, 1400),
                  (-10.5, -16.5, 1.5), (.12, .06, 0)),
    "broadleaf": ((250, 300, 550, 300, 800, 2400, 3000, 3300, 3400, 3330, 1700, 800),
                 (-9.5, -15, 1), (.08, .04, 0)),
    "conifer": ((200, 200, 380, 200, 550, 1500, 1900, 2100, 2200, 2160, 1000, 450),
               (-9.5, -15, 1), (.08, .04, 0)),
    "mixed": ((220, 250, 460, 250, 670, 1950, 2450, 2700, 2800, 2740, 1350, 620),
             (-9.5, -15, 1), (.08, .04, 0)),
    "moor": ((400, 450, 700, 650, 1000, 1700, 2000, 2200, 2300, 2260, 2000, 1300),
            (-13.5, -21.5, 1), (.06, .04, 0)),
    "transitional": ((395, 445, 695, 640, 995, 1720, 2020, 2230, 2330, 2280, 1980, 1280),
                    (-10, -15.5, 1.5), (.06, .04, 0)),
    "wetland": ((350, 380, 600, 450, 800, 1600, 1900, 2000, 2100, 2050, 1300, 650),
               (-16.5, -23.5, 1), (.05, .03, 0)),
    "saltmarsh": ((345, 375, 595, 445, 795, 1580, 1880, 1980, 2080, 2030, 1290, 645),
                 (-9.5, -17.5, 2.5), (.05, .03, 0)),
    "water": ((300, 350, 450, 300, 250, 200, 180, 150, 150, 120, 80, 60),
             (-22.5, -28.5, .5), (.02, .02, 0)),
    "sea": ((420, 480, 520, 330, 240, 160, 140, 110, 110, 90, 55, 40),
           (-17.5, -25.5, 1.2), (.02, .02, 0)),
    "rock": ((1800, 1900, 2100, 2300, 2450, 2600, 2700, 2800, 2850, 2850, 3200, 2700),
            (-8.5, -15.5, 3), (.12, .06, 0)),
    "burnt": ((300, 320, 420, 450, 600, 900, 1000, 1100, 1150, 1180, 1600, 1300),
             (-11.5, -18.5, 1.5), (.08, .05, 0)),
    "tidalflat": ((700, 800, 950, 950, 1000, 1050, 1080, 1100, 1120, 1050, 1000, 800),
                 (-15.5, -23.5, 1), (.04, .03, 0)),
}

#: 19-class label (or unmapped 43-class label) -> material
_GROUP_MATERIAL: Final = {
    "Urban fabric": "urban", "Industrial or commercial units": "industrial", "Arable land": "arable",
    "Permanent crops": "permcrop", "Pastures": "pasture", "Complex cultivation patterns": "complex",
    "Land principally occupied by agriculture, with significant areas of natural vegetation": "agrinat",
    "Agro-forestry areas": "agroforest", "Broad-leaved forest": "broadleaf", "Coniferous forest": "conifer",
    "Mixed forest": "mixed", "Natural grassland and sparsely vegetated areas": "grassland",
    "Moors, heathland and sclerophyllous vegetation": "moor", "Transitional woodland, shrub": "transitional",
    "Beaches, dunes, sands": "sand", "Inland wetlands": "wetland", "Coastal wetlands": "saltmarsh",
    "Inland waters": "water", "Marine waters": "sea",
    "Road and rail networks and associated land": "urban", "Port areas": "industrial",
    "Airports": "industrial",
    "Mineral extraction sites": "rock", "Dump sites": "industrial", "Construction sites": "arable",
    "Green urban areas": "pasture", "Sport and leisure facilities": "pasture", "Bare rock": "rock",
    "Burnt areas": "burnt", "Intertidal flats": "tidalflat",
}
MATERIAL_OF: Final = {name: _GROUP_MATERIAL[LABEL_43_TO_19[name] or name] for name in LABELS_43}
