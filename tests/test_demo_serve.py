"""`benmm demo --serve` hands the demo's retrieval index to the service (demo and server stubbed)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from typer.testing import CliRunner

import benmm.demo
import benmm.retrieval.demo
from benmm.cli.app import app


def _fake_ctx(retrieval: dict[str, Any] | None) -> SimpleNamespace:
    return SimpleNamespace(examples=[], timings={"total": 1.0}, report=Path("r"), retrieval=retrieval)


@pytest.fixture()
def stubbed(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    monkeypatch.setattr(benmm.demo, "summary_table", lambda ctx: "summary")
    monkeypatch.setattr(benmm.demo, "examples_table", lambda ctx: "examples")
    monkeypatch.setattr(benmm.demo, "check_claims", lambda ctx: [])
    def serve_index(index: str, host: str, port: int, announce: Any = None) -> None:
        seen.update(index=index, host=host, port=port)

    monkeypatch.setattr(benmm.retrieval.demo, "serve_index", serve_index)
    return seen


def test_demo_serve_opens_the_demo_index(stubbed: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(benmm.demo, "run_demo", lambda **kw: _fake_ctx({"index": "/x/retrieval/index"}))
    result = CliRunner().invoke(app, ["demo", "--serve", "--port", "8123"])
    assert result.exit_code == 0, result.output
    assert stubbed == {"index": "/x/retrieval/index", "host": "127.0.0.1", "port": 8123}


def test_demo_serve_without_index_is_a_clean_error(stubbed: dict[str, Any],
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(benmm.demo, "run_demo", lambda **kw: _fake_ctx(None))
    result = CliRunner().invoke(app, ["demo", "--serve"])
    assert result.exit_code == 2
    assert "retrieval index" in result.output and "Traceback" not in result.output
    assert stubbed == {}
