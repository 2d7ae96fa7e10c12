"""Ctrl-C (or SIGTERM, as batch schedulers send before SIGKILL) during a run: the first stops
before the next forward pass, the second at once.

The first abandons the chunk of queries in progress (it is not journaled, and a resumed run scores
it again whole), so a stop takes at most one forward pass on any device. While a dataset is being
loaded (nothing scored yet to lose) the first stops at once.

Either way the score journal stays valid (whole lines, synced), so the same command resumes.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

from rerank_eval.errors import UserError

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
#: what a run says when it stops at once: scores are journaled, embeddings and indexes written whole
STOPPED_AT_ONCE = "stopped at once; the scores, corpus shards and indexes finished so far are kept"


class Interrupted(UserError):
    """The user (or a scheduler) asked to stop; the journal has everything scored so far. The exit
    code is the shell's for the signal: 130 after Ctrl-C, 143 after SIGTERM."""

    exit_code = 130

    def __init__(self, message: str, signum: int = signal.SIGINT) -> None:
        super().__init__(message)
        self.exit_code = 128 + int(signum)


class StopRequested(Exception):
    """Raised where scoring can stop cleanly (before a forward pass) once a stop was asked for."""


class StopRequest:
    """Installs SIGINT and SIGTERM handlers for the duration of a `with` block (main thread only)."""

    def __init__(self) -> None:
        self.requested = False
        self.signum: int = signal.SIGINT  # the signal that asked to stop
        self._previous: dict[int, Any] = {}
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
            self._previous = {signum: signal.signal(signum, self._handle) for signum in STOP_SIGNALS}
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)
        self._previous = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.signum = signum
        if self.requested or self._preparing:
            raise KeyboardInterrupt
        self.requested = True
        name = "SIGTERM" if signum == signal.SIGTERM else "Ctrl-C"
        print(
            f"{name}: stopping before the next forward pass; the chunk in progress is scored again "
            f"on resume (Ctrl-C again to stop at once)",
            file=sys.stderr,
            flush=True,
        )


@contextmanager
def ending_at_once(message: str) -> Iterator[None]:
    """For work whose every write is atomic and resumable (`fetch`): Ctrl-C or SIGTERM prints
    `message` as the error line and ends the process at once with the shell's code for the
    signal. Raising instead would wait for library threads to finish (huggingface_hub downloads
    a model's files in a thread pool: minutes for large shards, past a scheduler's grace period)."""

    def end(signum: int, frame: FrameType | None) -> None:
        try:  # straight to the descriptor: the signal may land inside a write to sys.stderr
            shown = "\x1b[?25h\r\x1b[2K" if os.isatty(2) else ""  # a progress bar hid the cursor
            os.write(2, f"{shown}error: {message}\n".encode())
        finally:
            os._exit(128 + signum)

    previous: dict[int, Any] = {}
    if threading.current_thread() is threading.main_thread():
        previous = {signum: signal.signal(signum, end) for signum in STOP_SIGNALS}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
