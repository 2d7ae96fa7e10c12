"""YAML read defensively: a benchmarks file may come from someone else.

PyYAML's `safe_load` builds no arbitrary objects, but it shares aliased nodes (a 0.6 KB "billion
laughs" file then grows to gigabytes as soon as its strings are used), recurses once per nesting
level (20,000 nested brackets raise RecursionError) and keeps the last of two equal keys without a
word. Its numbers are Python's `int()` of the text: past 4,300 digits that raises a ValueError, and
YAML 1.1's base-60 numbers (`1:00:00`) are converted in quadratic time (a 4 MB one takes minutes).
This loader refuses aliases, limits size and nesting, refuses duplicate keys, base-60 numbers and
numbers longer than any a benchmarks file needs; each refusal names the line. A number keeps the
text it was written as, for the values read as text (`split: 0x1F` names the split `0x1F`, not 31).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

#: a benchmarks file is a few KB (the packaged one 18 KB); anything this large is not one, and
#: PyYAML's pure-Python parser takes about a minute per MB of dataset entries
MAX_BYTES = 512 * 1024
#: mappings and lists nested deeper than this are refused (ours nest 5 deep)
MAX_DEPTH = 32
#: the longest number accepted (a top_k, a BM25 parameter, a published figure need a few characters)
MAX_NUMBER_CHARACTERS = 64


class Refused(yaml.YAMLError):
    """A YAML construct this loader does not accept, at a line (1-based)."""

    def __init__(self, line: int, problem: str) -> None:
        super().__init__(problem)
        self.line = line
        self.problem = problem


class WrittenInt(int):
    """An int that remembers how it was written (`010`, `0x1F`, `1_000`)."""

    written = ""


class WrittenFloat(float):
    """A float that remembers how it was written (`2.50`, `1.0e+3`)."""

    written = ""


def as_written(value: int | float) -> str:
    """A number's text as the YAML file wrote it (as Python writes it where it came from elsewhere)."""
    return getattr(value, "written", "") or str(value)


class _BoundedLoader(yaml.SafeLoader):
    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise Refused(
                event.start_mark.line + 1, f"aliases (*{event.anchor}) are not accepted; write the value out"
            )
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise Refused(
                    self.peek_event().start_mark.line + 1, f"nested more than {MAX_DEPTH} levels deep"
                )
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_number(self, node: yaml.ScalarNode) -> WrittenInt | WrittenFloat:
        text, line = node.value, node.start_mark.line + 1
        if ":" in text:
            raise Refused(line, f"{text[:40]!r} is a base-60 number (YAML 1.1); quote it if it is text")
        if len(text) > MAX_NUMBER_CHARACTERS:
            raise Refused(
                line,
                f"a number of {len(text):,} characters (at most {MAX_NUMBER_CHARACTERS} are accepted)",
            )
        if node.tag.endswith(":int"):
            number: WrittenInt | WrittenFloat = WrittenInt(self.construct_yaml_int(node))
        else:
            number = WrittenFloat(self.construct_yaml_float(node))
        number.written = text
        return number

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if not isinstance(key, (str, int, float, bool)) and key is not None:
                raise Refused(key_node.start_mark.line + 1, "a key must be a plain value")
            if key in seen:
                raise Refused(key_node.start_mark.line + 1, f"key {key!r} appears twice in one mapping")
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


_BoundedLoader.add_constructor("tag:yaml.org,2002:int", _BoundedLoader.construct_number)
_BoundedLoader.add_constructor("tag:yaml.org,2002:float", _BoundedLoader.construct_number)


def read_bounded(path: Path) -> bytes:
    """The bytes of the file at `path`, read no further than MAX_BYTES + 1 (a 2 GB file was read
    whole, then refused); Refused where it holds more."""
    with open(path, "rb") as handle:
        content = handle.read(MAX_BYTES + 1)
        if len(content) > MAX_BYTES:
            size = max(os.fstat(handle.fileno()).st_size, len(content))
            raise Refused(1, f"the file is {size:,} bytes; a benchmarks file is at most {MAX_BYTES:,}")
    return content


def load_bounded(content: bytes) -> Any:
    """The YAML document in `content` (of `read_bounded`); Refused or yaml.YAMLError when it is not
    acceptable."""
    loader = _BoundedLoader(content.decode("utf-8"))
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()
