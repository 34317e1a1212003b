"""Writers never destroy what is not theirs. (Embedding on several ranks assembles once, on the global
rank 0: tests/test_retrieval_predict.py.)"""

from __future__ import annotations

from pathlib import Path

import pytest

from benmm.errors import RetrievalError
from benmm.synth.archive import SynthError, synthesize


def test_index_overwrite_replaces_only_an_index(retrieval_index_dir: Path, tmp_path: Path) -> None:
    from benmm.retrieval.index import RetrievalIndex

    ix = RetrievalIndex.load(retrieval_index_dir)
    precious = tmp_path / "thesis"
    precious.mkdir()
    (precious / "thesis.tex").write_text("years of work")
    with pytest.raises(RetrievalError, match="is not a benmm index"):
        ix.save(precious, overwrite=True)
    assert (precious / "thesis.tex").read_text() == "years of work"
    first = ix.save(tmp_path / "ix")
    assert ix.save(first, overwrite=True) == first  # an index is replaced


def test_synth_overwrite_replaces_only_an_archive(tmp_path: Path) -> None:
    precious = tmp_path / "data"
    precious.mkdir()
    (precious / "notes.txt").write_text("keep me")
    with pytest.raises(SynthError, match="is not a BigEarthNet archive"):
        synthesize(precious, pairs=2, workers=1, overwrite=True)
    assert (precious / "notes.txt").read_text() == "keep me"
    arc = synthesize(tmp_path / "arc", pairs=2, workers=1).path
    assert synthesize(arc, pairs=3, workers=1, overwrite=True).pairs == 3
