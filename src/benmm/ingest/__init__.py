"""Archive -> store: the encode pipeline (:mod:`.pipeline`: parallel, validated, resumable) and the
sources it reads (:mod:`.sources`). Named ``ingest`` so that ``benmm.encode`` stays the public function."""

from __future__ import annotations

from benmm.ingest.pipeline import EncodeSummary, default_workers, encode, encode_summary

__all__ = ["EncodeSummary", "default_workers", "encode", "encode_summary"]
