"""Writers never destroy what is not theirs, and sharded embedding assembles exactly once."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

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


def test_shards_finishing_together_assemble_once(reben_sample_root: Path, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    from benmm.retrieval import embed as E

    calls: list[int] = []
    real_assemble, real_once = E._assemble, E._assemble_once
    both_done = threading.Barrier(2, timeout=30)

    def slow_assemble(*args: Any) -> Any:
        calls.append(1)
        time.sleep(0.3)  # the window in which the other shard could assemble too
        return real_assemble(*args)

    def together(*args: Any) -> Any:
        both_done.wait()  # both shards have written all their parts: they reach the end at once
        return real_once(*args)

    monkeypatch.setattr(E, "_assemble", slow_assemble)
    monkeypatch.setattr(E, "_assemble_once", together)
    out = tmp_path / "emb"
    results: list[Any] = []
    errors: list[BaseException] = []

    def shard(i: int) -> None:
        try:
            results.append(E.embed_store("band-stats", reben_sample_root, out, chunk=5, shard=(i, 2),
                                         recommended=False))
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=shard, args=(i,)) for i in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert len(calls) == 1, f"assembled {len(calls)} times"
    assert all(r is not None and len(r.vectors) == 24 for r in results)
    assert not (out / "parts").exists()
