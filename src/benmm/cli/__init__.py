"""The ``benmm`` command line: the Typer app (:mod:`.app`) and one thin module per command group."""

from __future__ import annotations

from benmm.cli.app import app, main

__all__ = ["app", "main"]
