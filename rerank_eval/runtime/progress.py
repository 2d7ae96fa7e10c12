"""Progress for long steps that works in a terminal (a live bar) and in a log file (lines)."""

from __future__ import annotations

import contextlib
import os
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
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

T = TypeVar("T")

stderr_console = Console(stderr=True, markup=False)  # descriptions name paths: never markup
#: the least time between two lines of progress in a log (ours, and libraries' tqdm bars)
LOGGED_SECONDS = 10


def calm_library_bars() -> None:
    """In a log (stderr not a terminal), libraries' own tqdm bars (ir_datasets' downloads and doc
    store builds, the Hub's downloads) redraw at most every LOGGED_SECONDS, as our lines do, instead
    of every 0.1 s, which fills a batch job's log. tqdm reads TQDM_* when imported, so this runs
    before any library imports it; a value the user set stays."""
    if not stderr_console.is_terminal:
        os.environ.setdefault("TQDM_MININTERVAL", str(LOGGED_SECONDS))


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
            TextColumn("{task.description}", markup=False),
            BarColumn(),
            MofNCompleteColumn(),
            _RateColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
        )
        with Progress(*columns, console=stderr_console, transient=True) as progress:  # thread-safe
            task = progress.add_task(description, total=total)
            yield lambda count: progress.advance(task, count)
    else:
        yield _LoggedCount(total, description).advance


class _RateColumn(ProgressColumn):
    """Items per second over rich's recent window (blank until it has one)."""

    def render(self, task: Task) -> Text:
        return Text("" if task.speed is None else f"{task.speed:,.1f}/s")


def duration(seconds: float) -> str:
    """`1 h 02 min`, `2 min 48 s`, `12 s`: a time left, as precise as a reader needs it."""
    whole = round(seconds)
    hours, rest = divmod(whole, 3600)
    if hours:
        return f"{hours} h {rest // 60:02d} min"
    return f"{rest // 60} min {rest % 60:02d} s" if rest >= 60 else f"{rest} s"


class _LoggedCount:
    """One line at most every LOGGED_SECONDS (and at the end), with the rate so far and the time left at that
    rate, so that a batch job's log says when it will be done; logs of long jobs stay readable."""

    def __init__(self, total: int, description: str) -> None:
        self.total, self.description = total, description
        self.start = self.last = time.monotonic()
        self.done = 0
        self.lock = threading.Lock()

    def advance(self, count: int) -> None:
        with self.lock:
            self.done += count
            now = time.monotonic()
            # a line where this advance reaches the total; past it (a total that was an estimate) or
            # where the total is unknown (0), a line every LOGGED_SECONDS only
            reached = 0 < self.total <= self.done < self.total + count
            if now - self.last >= LOGGED_SECONDS or reached:
                rate = self.done / max(now - self.start, 1e-9)
                counted = f"{self.done}/{self.total}" if self.total else f"{self.done}"
                line = f"{self.description}: {counted} ({rate:.1f}/s"
                if self.done < self.total and rate > 0:
                    line += f", {duration((self.total - self.done) / rate)} left"
                line += ")"
                print(line, file=sys.stderr, flush=True)
                self.last = now


@contextlib.contextmanager
def step(description: str) -> Iterator[None]:
    """A step without a count: a spinner in a terminal, start and end lines in a log."""
    start = time.monotonic()
    if stderr_console.is_terminal:
        with stderr_console.status(Text(description)):  # (a str status is read as markup)
            yield
    else:
        print(f"{description} ...", file=sys.stderr, flush=True)
        yield
    elapsed = time.monotonic() - start
    stderr_console.print(f"{description}: done in {elapsed:.1f} s", highlight=False)
