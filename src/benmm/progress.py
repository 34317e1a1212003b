"""The one progress bar of benmm (rich): description, bar, done/total, an optional rate field, elapsed and
remaining time, on stderr unless a console is given. Every long command (synth, encode, check, stats,
embed, index, demo) shows the same bar."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import Progress


def progress_bar(console: Console | None = None, transient: bool = False, rate: bool = False) -> Progress:
    """A :class:`rich.progress.Progress`; add tasks with ``bar.add_task(description, total=N)`` (and a
    ``rate=""`` field when ``rate``, updated as ``bar.update(task, rate="123 pairs/s")``)."""
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    columns = [TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn()]
    if rate:
        columns.append(TextColumn("{task.fields[rate]}"))
    columns += [TimeElapsedColumn(), TimeRemainingColumn()]
    return Progress(*columns, console=console or Console(stderr=True), transient=transient)
