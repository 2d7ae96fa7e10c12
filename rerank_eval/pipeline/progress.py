"""Progress for long steps that works in a terminal (a live bar) and in a log file (lines)."""

from __future__ import annotations

import contextlib
import sys
import threading
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
    with counting(total, description) as advance:
        for item in items:
            yield item
            advance(size(item))


@contextlib.contextmanager
def counting(total: int, description: str) -> Iterator[Callable[[int], None]]:
    """A count towards `total` that any thread may advance (`advance(n)`), shown as a live bar in a
    terminal and as lines in a log; the display ends with the block."""
    if stderr_console.is_terminal:
        columns = (
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
        )
        with Progress(*columns, console=stderr_console, transient=True) as progress:  # thread-safe
            task = progress.add_task(description, total=total)
            yield lambda count: progress.advance(task, count)
    else:
        yield _LoggedCount(total, description).advance


class _LoggedCount:
    """One line at most every 10 s (and at the end), so logs of long jobs stay readable."""

    def __init__(self, total: int, description: str) -> None:
        self.total, self.description = total, description
        self.start = self.last = time.monotonic()
        self.done = 0
        self.lock = threading.Lock()

    def advance(self, count: int) -> None:
        with self.lock:
            self.done += count
            now = time.monotonic()
            # (a total of 0 is unknown: a line every 10 s only)
            if now - self.last >= 10 or 0 < self.total <= self.done:
                rate = self.done / max(now - self.start, 1e-9)
                line = f"{self.description}: {self.done}/{self.total} ({rate:.1f}/s)"
                print(line, file=sys.stderr, flush=True)
                self.last = now


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
