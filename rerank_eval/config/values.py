"""The typed values of a merged benchmarks file's entries (numbers, flags, texts, figures, top-k,
measures), each checked as it is read and refused in one line naming the file and the entry."""

from __future__ import annotations

import re
from typing import Any

from rerank_eval.config.bounded_yaml import as_written
from rerank_eval.config.checks import EntryChecks
from rerank_eval.config.schema import top_k_problem
from rerank_eval.errors import UserError
from rerank_eval.paths import repository_path_problem
from rerank_eval.textlines import CONTROL_CHARACTERS
from rerank_eval.typed import KIND_NAMES, is_kind


class ValueChecks(EntryChecks):
    """What an entry's values must be; `fail` (the reader's) names the file they came from."""

    def number(self, where: str, value: Any, kind: type[int] | type[float]) -> Any:
        """An int (or a finite float where floats are allowed), never a bool or a string."""
        if not is_kind(value, kind):
            raise self.fail(where, f"expected {KIND_NAMES[kind]}, got {value!r}"[:200])
        return kind(value)

    def flag(self, where: str, value: Any, default: bool) -> bool:
        """A YAML boolean (true/false), never a string such as 'no', which would read as true."""
        if value is None:
            return default
        if not isinstance(value, bool):
            raise self.fail(where, f"expected true or false, got {value!r}")
        return value

    def language(self, where: str, value: Any) -> str:
        """An ISO 639-1 code (default en): the analyzers pick stemmer and stopwords by it, and
        "english" or "eng" would otherwise give a BM25 with neither, without a word."""
        code = self.text(where, value, "en")
        if not re.fullmatch(r"[a-z]{2}", code):
            raise self.fail(
                where, f"expected a two-letter ISO 639-1 code such as en or sw, got {code!r}"[:200]
            )
        return code

    def text(self, where: str, value: Any, default: str | None = None, prose: bool = False) -> Any:
        """A string (a number is taken as written: `2.50` stays `2.50`); an absent one is `default`.
        Names, ids and labels are one line without control characters (they reach run files,
        manifests and terminals; YAML's `|` would end one in a line feed); `prose` (a description)
        may span lines."""
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise self.fail(where, f"expected a string, got {value!r}")
        text = value if isinstance(value, str) else as_written(value)
        if not prose and CONTROL_CHARACTERS.search(text):
            raise self.fail(where, f"holds a line break or another control character: {text!r}"[:200])
        return text

    def repository_path(self, where: str, value: Any) -> str | None:
        """A path (or a part of one) inside a Hub repository: a dataset's run file or run name."""
        text = self.text(where, value)
        problem = None if text is None else repository_path_problem(text)
        if problem:
            raise self.fail(where, problem)
        return text

    def required_text(self, where: str, value: Any) -> str:
        """A non-empty string (a key of a mapping, an id)."""
        text = self.text(where, value)
        if not text:
            raise self.fail(where, f"expected a non-empty string, got {value!r}")
        return text

    def named_values(self, where: str, value: Any, kind: type) -> dict[str, Any]:
        """A mapping from names to numbers (published figures) or to texts (instructions)."""
        named = self.mapping(where, value)
        if kind is float:
            return {
                self.required_text(where, k): self.number(f"{where}.{k}", v, float) for k, v in named.items()
            }
        return {self.required_text(where, k): self.text(f"{where}.{k}", v, "") for k, v in named.items()}

    def published_figures(self, where: str, value: Any) -> dict[str, float]:
        """Published figures by source: fractions, as the measures report them (a percentage
        would be checked as a difference of tens)."""
        figures = self.named_values(where, value, float)
        for name, figure in figures.items():
            if not 0 <= figure <= 1:
                raise self.fail(f"{where}.{name}", f"expected a fraction between 0 and 1, got {figure!r}")
        return figures

    def dataset_key(self, where: str, value: Any) -> str:
        """A dataset key: a name, and not one whose run file would collide with another's
        first-stage run (`runs/KEY.first-stage.trec`)."""
        key = self.name(where, value)
        if key.endswith(".first-stage"):
            raise self.fail(where, f"{key!r} cannot be used as a dataset key: it ends in .first-stage")
        return key

    def top_k(self, value: Any) -> int:
        top_k = self.number("defaults.top_k", value, int)
        problem = top_k_problem(top_k)
        if problem:
            raise self.fail("defaults.top_k", problem)
        return top_k

    def metrics(self, value: Any) -> tuple[str, ...]:
        from rerank_eval.evaluation.measures import parse_measures

        metrics = [value] if isinstance(value, str) else value
        if not isinstance(metrics, list) or not metrics or not all(isinstance(m, str) for m in metrics):
            raise self.fail("defaults.metrics", f"expected a non-empty list of measure names, got {value!r}")
        try:
            parse_measures(metrics)
        except UserError as exc:
            raise self.fail("defaults.metrics", str(exc)) from None
        return tuple(metrics)
