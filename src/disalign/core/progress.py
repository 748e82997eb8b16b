"""Progress on stderr for every step that takes more than a moment; results on stdout.

On a terminal a rich progress bar; when stderr is redirected (a log file, CI), one plain line at
most every few seconds, so a long run still shows that it moves.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

console = Console(stderr=True)
results_console = Console()
for _console in (console, results_console):
    if not _console.is_terminal:
        _console.width = max(_console.width, 120)  # logs and CI: tables wider than the 80-column default

LOG_EVERY_SECONDS = 10.0


@contextmanager
def progress_bar(description: str, total: int) -> Iterator[Callable[..., None]]:
    """Yields `advance(n=1, **fields)`; fields such as loss or tokens/s show beside the bar."""
    if not console.is_terminal:
        yield _plain_progress(description, total)
        return
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[status]}"),
    )
    with Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task(description, total=total, status="")

        def advance(n: int = 1, **fields: float | str) -> None:
            progress.update(task, advance=n, status=_status(fields))

        yield advance


def _plain_progress(description: str, total: int) -> Callable[..., None]:
    start = last = time.perf_counter()
    done = 0

    def advance(n: int = 1, **fields: float | str) -> None:
        nonlocal done, last
        done += n
        now = time.perf_counter()
        if now - last >= LOG_EVERY_SECONDS or (done >= total and now - start >= LOG_EVERY_SECONDS):
            last = now
            console.print(f"{description}: {done}/{total} ({now - start:.0f} s) {_status(fields)}".rstrip())

    return advance


def _status(fields: dict[str, float | str]) -> str:
    return "  ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}" for k, v in fields.items())
