"""The CLI's console and the rich progress bar that the library's Progress protocol plugs into."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

console = Console()
err_console = Console(stderr=True)


class RichProgress:
    """Shows each library task as a rich progress bar row."""

    def __init__(self, progress: Progress) -> None:
        self._progress = progress
        self._task: object | None = None
        self.started = False

    def task(self, description: str, total: int) -> None:
        if not self.started:  # the display starts with the first task: an error before it prints only itself
            self._progress.start()
            self.started = True
        self._task = self._progress.add_task(description, total=max(1, total))

    def advance(self, steps: int = 1) -> None:
        if self._task is not None:
            self._progress.advance(self._task, steps)  # type: ignore[arg-type]


@contextlib.contextmanager
def progress_bar() -> Iterator[RichProgress]:
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    bar = RichProgress(Progress(*columns, console=err_console, transient=False))
    try:
        yield bar
    finally:
        if bar.started:
            bar._progress.stop()
