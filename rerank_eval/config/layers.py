"""Benchmarks files read as layers: the packaged file first, then the user's `--config` on top.

A user file states only what it adds or changes. Entries merge by name (first stages, model
presets, suites) and, inside a suite of the same name, datasets merge by key; the later layer's
entry replaces the earlier one whole, so what a result used is always one file's entry, never a
mixture of two. `defaults` (top level and a suite's) merge key by key. Every entry remembers the
file it came from, so a refusal names that file and the entry's place in it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from rerank_eval.config.bounded_yaml import Refused, load_bounded, read_bounded
from rerank_eval.config.checks import EntryChecks
from rerank_eval.errors import UserError
from rerank_eval.paths import refuse_special_file

TOP_LEVEL_KEYS = ("defaults", "first_stages", "suites", "models")
NAMED_SECTIONS = ("first_stages", "models")


@dataclass(frozen=True)
class ConfigLayer:
    """One benchmarks file as read: its path, content hash and top-level mapping."""

    path: Path
    sha256: str
    raw: dict[str, Any]


@dataclass
class MergedConfig:
    """The layers merged, with the file each entry came from (`origins`, keyed by the entry's
    place as refusals name it: `defaults.KEY`, `first_stages.NAME`, `suites.NAME`)."""

    raw: dict[str, Any]
    origins: dict[str, Path] = field(default_factory=dict)
    #: per suite, each merged dataset entry's place in its own file (`suites.NAME.datasets[I]`)
    #: and that file
    dataset_places: dict[str, list[tuple[str, Path]]] = field(default_factory=dict)
    #: per suite defined by an earlier file, the dataset keys later files added to it
    additions: dict[str, set[str]] = field(default_factory=dict)

    def origin(self, where: str, fallback: Path) -> Path:
        """The file of the most specific entry that `where` lies in."""
        best, best_length = fallback, -1
        for place, path in self.origins.items():
            inside = where == place or where.startswith((place + ".", place + "["))
            if inside and len(place) > best_length:
                best, best_length = path, len(place)
        return best


def read_layer(path: Path) -> ConfigLayer:
    """One benchmarks file, read strictly (see bounded_yaml); errors name the file. Its path is
    made absolute: local datasets' relative paths start at its folder, and a result records it."""
    path = path.absolute()
    refuse_special_file(path, f"config {path}")
    try:
        content = read_bounded(path)
        raw = load_bounded(content)
    except OSError as exc:
        raise UserError(f"cannot read config {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise UserError(f"{path}: not valid UTF-8") from None
    except Refused as exc:
        raise UserError(f"{path}, line {exc.line}: {exc.problem}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}, line {mark.line + 1}" if mark is not None else str(path)
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise UserError(f"{where}: not valid YAML: {problem}") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise UserError(f"{path}: expected a mapping at the top level")
    return ConfigLayer(path, hashlib.sha256(content).hexdigest(), raw)


def merge_layers(layers: list[ConfigLayer]) -> MergedConfig:
    """The layers merged in order (later wins), each checked for its shape as it is merged."""
    merged = MergedConfig({"defaults": {}, "first_stages": {}, "suites": {}, "models": {}})
    for layer in layers:
        _LayerMerger(layer, merged).merge()
    return merged


class _LayerMerger(EntryChecks):
    def __init__(self, layer: ConfigLayer, merged: MergedConfig) -> None:
        self.layer, self.merged = layer, merged

    def fail(self, where: str, what: str, within: str | None = None) -> UserError:
        return UserError(f"{self.layer.path}: {where}: {what}")  # (one file: its own)

    def merge(self) -> None:
        raw = self.layer.raw
        self.known_keys("top level", raw, TOP_LEVEL_KEYS)
        defaults = self.mapping("defaults", raw.get("defaults"))
        self.merged.raw["defaults"].update(defaults)
        for key in defaults:
            self.merged.origins[f"defaults.{key}"] = self.layer.path
        for section in NAMED_SECTIONS:
            for name, body in self.mapping(section, raw.get(section)).items():
                self.merged.raw[section][self.name(section, name)] = body
                self.merged.origins[f"{section}.{name}"] = self.layer.path
        for name, body in self.mapping("suites", raw.get("suites")).items():
            self.suite(self.name("suites", name), body)

    def suite(self, name: str, body: Any) -> None:
        where = f"suites.{name}"
        body = self.mapping(where, body)
        datasets = body.get("datasets", [])
        if not isinstance(datasets, list):
            raise self.fail(where, f"datasets: expected a list, got {datasets!r}")
        suites = self.merged.raw["suites"]
        if name not in suites:
            suites[name] = {"datasets": []}
            self.merged.dataset_places[name] = []
        else:
            self.merged.additions.setdefault(name, set())  # keys this and later files add to it
        suite = suites[name]
        for key, value in body.items():
            if key == "defaults":
                defaults = self.mapping(f"{where}.defaults", value)
                suite.setdefault("defaults", {}).update(defaults)
                for field_name in defaults:
                    self.merged.origins[f"{where}.defaults.{field_name}"] = self.layer.path
            elif key != "datasets":
                suite[key] = value
                self.merged.origins[f"{where}.{key}"] = self.layer.path
        self.merged.origins.setdefault(where, self.layer.path)
        self.merged.origins.setdefault(f"{where}.average_label", self.layer.path)
        places = self.merged.dataset_places[name]
        seen: set[Any] = set()
        positions: dict[str, int] = {}  # each key's first place among the entries merged so far
        for index, old in enumerate(suite["datasets"]):
            old_key = old.get("key") if isinstance(old, dict) else None
            if isinstance(old_key, str):
                positions.setdefault(old_key, index)
        for index, entry in enumerate(datasets):
            place = f"{where}.datasets[{index}]"
            key = entry.get("key") if isinstance(entry, dict) else None
            key = key if isinstance(key, str) else None  # any other is refused when read
            if key is not None and key in seen:
                raise self.fail(where, f"dataset key {key!r} appears twice")
            seen.add(key)
            position = positions.get(key) if key is not None else None
            if position is None:
                if key is not None:
                    positions[key] = len(suite["datasets"])
                suite["datasets"].append(entry)
                places.append((place, self.layer.path))
                if name in self.merged.additions and key is not None:
                    self.merged.additions[name].add(key)
            else:
                suite["datasets"][position] = entry
                places[position] = (place, self.layer.path)
