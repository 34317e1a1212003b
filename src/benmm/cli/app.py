"""The ``benmm`` command line: a thin Typer app.

Each area registers its commands from ``benmm/cli/<area>.py`` (kept small and separate so the
CLI stays thin); this module only builds the app and turns :class:`BenmmError` into a clean message
and exit code 2, never a traceback.
"""

from __future__ import annotations

import importlib
from typing import Any

import typer
from rich.console import Console
from typer.core import TyperGroup

from benmm import __version__
from benmm.errors import BenmmError

err_console = Console(stderr=True)

#: command modules, each exposing ``register(app)``; imported lazily so `benmm --help` stays fast
COMMAND_MODULES = (
    "benmm.cli.archive",
    "benmm.cli.data",
    "benmm.cli.experiment",
    "benmm.cli.retrieval",
    "benmm.cli.retrieval_eval",
    "benmm.cli.store",
    "benmm.cli.synth",
    "benmm.cli.train",
)


class _BenmmGroup(TyperGroup):
    """Prints benmm's typed errors and OS errors (paths, permissions, disk space) as one line and exits 2;
    other errors are bugs and keep their traceback."""

    def invoke(self, ctx: Any) -> Any:  # typer vendors its own click Context
        try:
            return super().invoke(ctx)
        except BenmmError as exc:
            err_console.print(f"[bold red]error:[/] {exc}", markup=True, highlight=False)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            err_console.print("[yellow]interrupted[/]")
            raise typer.Exit(130) from None
        except OSError as exc:  # an unwritable or full output, a missing file: the user's, not a bug
            where = f"{exc.filename}: " if exc.filename else ""
            err_console.print(f"[bold red]error:[/] {where}{exc.strerror or exc} (check the path, its "
                              "permissions and the free disk space)", markup=True, highlight=False)
            raise typer.Exit(2) from None


app = typer.Typer(
    cls=_BenmmGroup,
    name="benmm",
    help="BigEarthNet-MM toolkit: archive -> store -> multi-modal multi-label models -> retrieval.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"benmm {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version."
    ),
) -> None:
    """BigEarthNet-MM toolkit: archive -> store -> multi-modal multi-label models -> retrieval."""


for _module in COMMAND_MODULES:
    importlib.import_module(_module).register(app)


def main() -> None:
    app(prog_name="benmm")


if __name__ == "__main__":  # pragma: no cover
    main()
