"""The one exception type that reaches the user as a one-line message, and the one form of a warning.

Anything the user can fix (bad flags, malformed files, unreachable hosts, missing caches) is raised
as `UserError`; the CLI prints its message and exits non-zero without a traceback. Any other
exception is a bug in rerank-eval and keeps its traceback.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Mapping
from typing import TypeVar


class UserError(Exception):
    """A problem with the user's input or environment, described in one line.

    A message may name library parameters through `term(name)`, each given its library spelling in
    `terms` (`{"force": "force=True"}`); `str()` uses those, and a front end its own names through
    `render` (the CLI: `--force`). The marker cannot be confused with text the message quotes.
    """

    exit_code = 2

    def __init__(self, message: str = "", terms: Mapping[str, str] | None = None) -> None:
        self.template, self.terms = message, dict(terms or {})
        super().__init__(self.render({}))

    def render(self, names: Mapping[str, str]) -> str:
        text = self.template
        for name, spelling in self.terms.items():
            text = text.replace(term(name), names.get(name, spelling))
        return text


def term(name: str) -> str:
    """Where a message names library parameter `name` (see `UserError`)."""
    return f"\x1f{name}\x1f"


class MissingDownload(UserError):
    """A file that is not cached and cannot be downloaded here (no internet, HF_HUB_OFFLINE):
    `problem` says what and why, `item` names it ("model X", "dataset Y"), `cache` is the folder a
    copy of it would go into, `variable` the environment variable that points there, `alternative`
    another way to supply it (a file to put somewhere). A run collects every one it would meet
    (`pipeline/offline.py`) to say all that is missing at once, and the fetch command that gets it."""

    def __init__(self, problem: str, item: str, cache: str, variable: str, alternative: str = "") -> None:
        self.problem, self.item, self.cache, self.variable = problem, item, cache, variable
        self.alternative = alternative
        super().__init__(
            self.advice("`rerank-eval fetch` (with this run's suite, datasets, models and --config)")
        )

    def advice(self, fetch: str) -> str:
        """The one line, with `fetch` as what to run on a machine with internet."""
        other = f", or {self.alternative}" if self.alternative else ""
        return (
            f"{self.problem}; run {fetch} on a machine with internet and copy {self.cache} here "
            f"(or point {self.variable} at a copy){other}"
        )


class ParameterError(UserError):
    """A bad value of one parameter of a library call, said in the library's terms.

    `str()` names parameters as the library does (`top_k must be between ...`); a front end names
    them its own way through `render` (the CLI: `--top-k must be between ...`). The problem may
    mention other parameters as `{name}` when it lists them in `mentions`.
    """

    def __init__(self, parameter: str, problem: str, mentions: tuple[str, ...] = ()) -> None:
        self.parameter, self.problem, self.mentions = parameter, problem, mentions
        for name in mentions:
            problem = problem.replace("{" + name + "}", term(name))
        super().__init__(problem, {name: name for name in mentions})

    def render(self, names: Mapping[str, str]) -> str:
        return f"{names.get(self.parameter, self.parameter)} {super().render(names)}"


def closest(name: str, known: Iterable[str], cutoff: float = 0.6) -> str | None:
    """The known name one typo away from `name` (difflib's ratio at least `cutoff`), or the same in
    other letter case (`SW` for `sw`), if any."""
    import difflib

    known = list(known)
    same = [k for k in known if k.casefold() == name.casefold()]
    if same:
        return same[0]
    close = difflib.get_close_matches(name, known, n=1, cutoff=cutoff)
    return close[0] if close else None


def did_you_mean(name: str, known: Iterable[str], cutoff: float = 0.6) -> str:
    """ " (did you mean 'scifact'?)" for a name one typo away from a known one, else ""."""
    close = closest(name, known, cutoff)
    return f" (did you mean {close!r}?)" if close else ""


def describe(exc: BaseException) -> str:
    """An exception from a library, as the tail of a one-line message: its type and first line."""
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0][:200]}" if text else type(exc).__name__


def warn(message: str) -> None:
    """A condition that stops nothing but changes what the user gets (a fallback, scores redone, a
    line left out): one line on stderr, `warning: ...`."""
    print(f"warning: {message}", file=sys.stderr, flush=True)


T = TypeVar("T")


def read_within_memory(read: Callable[[], T], too_large: str) -> T:
    """`read()`, or a UserError saying `too_large` where it runs out of memory. Raised once the
    MemoryError is let go of: its traceback holds the frames that hold what was read so far, and
    an error raised inside the handler would keep it as its context, the memory held while the
    run cleans up (removing a result folder then failed for want of memory). So `read` must hold
    what it reads itself: what a caller's frame holds stays held."""
    try:
        return read()
    except MemoryError:
        pass
    raise UserError(too_large)
