"""The progress bar every long-running subcommand shows on stderr (simulate, bench)."""

from __future__ import annotations

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn


def progress_bar(show: bool) -> Progress:
    """A transient bar of done / total per task, with elapsed time; a no-op when `show` is false
    (piped output, `--no-progress`)."""
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        transient=True,
        disable=not show,
    )
