"""Progress for long steps that works in a terminal (a live bar) and in a log file (lines)."""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

T = TypeVar("T")

stderr_console = Console(stderr=True)


def track(
    items: Iterable[T], total: int, description: str, size: Callable[[T], int] = lambda _: 1
) -> Iterator[T]:
    """Yield `items`, advancing by `size(item)` towards `total` after each one."""
    if stderr_console.is_terminal:
        yield from _track_live(items, total, description, size)
    else:
        yield from _track_lines(items, total, description, size)


def _track_live(items: Iterable[T], total: int, description: str, size: Callable[[T], int]) -> Iterator[T]:
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=stderr_console, transient=True) as progress:
        task = progress.add_task(description, total=total)
        for item in items:
            yield item
            progress.advance(task, size(item))


def _track_lines(items: Iterable[T], total: int, description: str, size: Callable[[T], int]) -> Iterator[T]:
    """One line at most every 10 s (and at the end), so logs of long jobs stay readable."""
    start = last = time.monotonic()
    done = 0
    for item in items:
        yield item
        done += size(item)
        now = time.monotonic()
        if now - last >= 10 or done >= total:
            rate = done / max(now - start, 1e-9)
            print(f"{description}: {done}/{total} ({rate:.1f}/s)", file=sys.stderr, flush=True)
            last = now


@contextlib.contextmanager
def step(description: str) -> Iterator[None]:
    """A step without a count: a spinner in a terminal, start and end lines in a log."""
    start = time.monotonic()
    if stderr_console.is_terminal:
        with stderr_console.status(description):
            yield
    else:
        print(f"{description} ...", file=sys.stderr, flush=True)
        yield
    elapsed = time.monotonic() - start
    stderr_console.print(f"{description}: done in {elapsed:.1f} s", highlight=False)
