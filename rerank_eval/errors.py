"""The one exception type that reaches the user as a one-line message.

Anything the user can fix (bad flags, malformed files, unreachable hosts, missing caches) is raised
as `UserError`; the CLI prints its message and exits non-zero without a traceback. Any other
exception is a bug in rerank-eval and keeps its traceback.
"""

from __future__ import annotations


class UserError(Exception):
    """A problem with the user's input or environment, described in one line."""

    exit_code = 2


def describe(exc: BaseException) -> str:
    """An exception from a library, as the tail of a one-line message: its type and first line."""
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0][:200]}" if text else type(exc).__name__
