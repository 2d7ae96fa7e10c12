"""The checks every reader of a benchmarks file applies to an entry, each refusal in one line.

Where a refusal names its file differs (the one layer being merged, or the file an entry of the
merged configuration came from), so each reader says that in `fail`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

from rerank_eval.config.bounded_yaml import as_written
from rerank_eval.errors import UserError, closest
from rerank_eval.paths import name_problem


class EntryChecks(ABC):
    @abstractmethod
    def fail(self, where: str, what: str, within: str | None = None) -> UserError:
        """The refusal of the entry at `where`, naming its file (that of `within`, a place inside
        it, where the refusal is of that: a key one file added to an entry another gave)."""

    def mapping(self, where: str, value: Any) -> dict[str, Any]:
        """A mapping (an absent one is empty); anything else names the entry."""
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise self.fail(where, f"expected a mapping, got {value!r}")
        return value

    def name(self, where: str, value: Any) -> str:
        """A name that also names files (a suite, a dataset key, a preset). YAML reads `1.10` and
        `yes` as a number and a boolean: said so, not refused as a malformed name."""
        if isinstance(value, bool):  # (what was written is gone: yes, on, true, ...)
            raise self.fail(
                where, "yes, no, on, off, true and false are booleans in YAML, not names: quote it"
            )
        if isinstance(value, (int, float)):
            shown = as_written(value)
            raise self.fail(where, f"{shown} is a number in YAML, not a name: quote it ('{shown}')")
        problem = name_problem(value)
        if problem:
            raise self.fail(where, problem)
        return value

    def known_keys(self, where: str, body: dict[str, Any], accepted: tuple[str, ...]) -> None:
        """Refuse a key the entry does not take (a typo would otherwise change the protocol
        silently), suggesting the closest accepted one."""
        for key in body:
            if key not in accepted:
                close = closest(str(key), accepted)
                hint = f"; did you mean {close!r}?" if close else f" (accepted: {', '.join(accepted)})"
                raise self.fail(where, f"unknown key {key!r}{hint}", within=f"{where}.{key}")
