"""The seeded synthetic BigEarthNet-MM archive in the true on-disk format: pair rendering and writing
(:mod:`.archive`), label and pair sampling (:mod:`.labels`), metadata files (:mod:`.metadata`), the
GeoTIFF writer (:mod:`.geotiff`)."""

from __future__ import annotations

from benmm.synth.archive import LAYOUTS, SynthError, SynthSummary, synthesize

__all__ = ["LAYOUTS", "SynthError", "SynthSummary", "synthesize"]
