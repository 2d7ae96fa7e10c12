"""Ctrl-C during a run: the first stops before the next forward pass, the second at once.

The first abandons the chunk of queries in progress (it is not journaled, and a resumed run scores
it again whole), so a stop takes at most one forward pass on any device. While a dataset is being
loaded (nothing scored yet to lose) the first stops at once.

Either way the score journal stays valid (whole lines, synced), so the same command resumes.
"""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

from rerank_eval.errors import UserError


class Interrupted(UserError):
    """The user asked to stop; the journal has everything scored so far."""

    exit_code = 130


class StopRequested(Exception):
    """Raised where scoring can stop cleanly (before a forward pass) once a stop was asked for."""


class StopRequest:
    """Installs a SIGINT handler for the duration of a `with` block (main thread only)."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: Any = None
        self._preparing = False

    @contextmanager
    def preparing(self) -> Iterator[None]:
        """Loading data holds no scores and its caches are built atomically: Ctrl-C stops at once."""
        self._preparing = True
        try:
            yield
        finally:
            self._preparing = False

    def raise_if_requested(self) -> None:
        if self.requested:
            raise StopRequested

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.requested or self._preparing:
            raise KeyboardInterrupt
        self.requested = True
        print(
            "stopping before the next forward pass; the chunk in progress is scored again on resume "
            "(Ctrl-C again to stop at once)",
            file=sys.stderr,
            flush=True,
        )
