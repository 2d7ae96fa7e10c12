"""Options the commands share, declared once, and the parsing of their NAME=VALUE values."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from rerank_eval.errors import UserError
from rerank_eval.runfiles import typed_number

# The CLI's names for the library parameters its errors name (see errors.UserError).
FLAGS = {
    "top_k": "--top-k",
    "runs.overrides": "--run",
    "runs.folder": "--runs-dir",
    "runs.pattern": "--run-pattern",
    "runs.reference": "--run-reference",
    "models": "--model",
    "baseline": "--baseline",
    "force": "--force",
    "family": "--family",
    "trust_remote_code": "--trust-remote-code",
    "out": "--out",
    "plot": "--plot",
    "first_stage": "--first-stage",
    "first_stage_settings": "--first-stage-set",
    "settings": "--set",
}

ConfigOpt = Annotated[
    Path | None,
    typer.Option(
        "--config",
        help=(
            "A benchmarks YAML file with your own suites and presets, merged over the packaged "
            "benchmarks.yaml."
        ),
    ),
]
DatasetsOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--datasets",
        "--languages",
        "-d",
        help=(
            "Comma-separated dataset keys (or groups such as cqadupstack, "
            "MIRACL language codes, or the average's label such as BEIR-13 for "
            "its datasets), repeatable; default: the whole suite."
        ),
    ),
]


def dataset_names(values: list[str] | None) -> list[str] | None:
    """The names `--datasets` gives (each use comma-separated), None where it is not given. A given
    but empty value (an unset shell variable) is refused: it would run the whole suite."""
    if values is None:
        return None
    names = [name.strip() for value in values for name in value.split(",") if name.strip()]
    if not names:
        raise UserError("--datasets (--languages) names no dataset; leave it out to run the whole suite")
    return names


ModelsOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--model",
        "-m",
        help=(
            "A preset name, a Hub model id or a checkpoint directory; repeat to compare several models "
            "on the same candidates; default: the config's default model (jina-reranker-v3)."
        ),
    ),
]
RemoteCodeOpt = Annotated[
    bool,
    typer.Option(
        "--trust-remote-code",
        help="Allow models whose Hub repository ships its own code (e.g. jina-reranker-v2) to run it.",
    ),
]
ModelOpt = Annotated[
    str | None,
    typer.Option(
        "--model",
        "-m",
        help=(
            "A preset name, a Hub model id or a checkpoint directory; default: the "
            "config's default model (jina-reranker-v3)."
        ),
    ),
]
FamilyOpt = Annotated[
    str | None,
    typer.Option(
        "--family",
        help=(
            "Reranker family of the --model values that are neither presets nor recognisable from their "
            "files (config.json, sentence-transformers' modules.json); others must agree with it."
        ),
    ),
]


def whole_number(text: str | int) -> int:
    """An integer option as written in ASCII digits (at most 64), as `--set` reads numbers
    (`typed_number`): Python's int() would also take "1_0" and other scripts' digits, and Typer's
    reading "5.0", each then recorded as given."""
    if isinstance(text, int):  # (a default)
        return text
    number = typed_number(text)
    if not isinstance(number, int):
        raise typer.BadParameter(f"expected an integer, got {text!r}"[:200])
    return number


def integer_at_least(minimum: int) -> Callable[[str | int], int]:
    """The parser of a count or a size: a whole number of at least `minimum`."""

    def parse(text: str | int) -> int:
        number = whole_number(text)
        if number < minimum:
            wanted = "a positive integer" if minimum == 1 else f"an integer of at least {minimum:,}"
            raise typer.BadParameter(f"expected {wanted}, got {text!r}"[:200])
        return number

    return parse


positive_integer = integer_at_least(1)


TopKOpt = Annotated[
    int | None,
    typer.Option(
        "--top-k", parser=whole_number, help="Candidates reranked per query (default from the config: 100)."
    ),
]
MetricOpt = Annotated[
    list[str] | None,
    typer.Option("--metric", help="An ir_measures measure, repeatable (default from the config: nDCG@10)."),
]
RunOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--run", help="KEY=PATH: a TREC run file to use as the first stage of dataset KEY; repeatable."
    ),
]
RunReferenceOpt = Annotated[
    str | None,
    typer.Option(
        "--run-reference",
        help=(
            "The published first stage your run files reproduce (a reference name of the config, e.g. "
            "pyserini-bm25 for MIRACL, pyserini-bm25-flat for BEIR): the table checks their nDCG@10 "
            "and R@100 against its figures."
        ),
    ),
]
RunsDirOpt = Annotated[
    Path | None,
    typer.Option("--runs-dir", help="A folder of TREC run files, one per dataset, named by --run-pattern."),
]
RunPatternOpt = Annotated[
    str,
    typer.Option(
        "--run-pattern",
        help="File name pattern inside --runs-dir; {key} is the dataset key, {name} its Pyserini name.",
    ),
]
FirstStageOpt = Annotated[
    str | None,
    typer.Option(
        "--first-stage",
        help=(
            "Use this first stage instead of each dataset's default: a first_stages entry (bm25s, "
            "jina-embeddings-v3, bge-base-en-v1.5, ...; `rerank-eval first-stages` lists them) or "
            "dense:ENCODER (a preset, Hub id or sentence-transformers checkpoint directory)."
        ),
    ),
]
FirstStageSetOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--first-stage-set",
        help=(
            "NAME=VALUE: a setting of the first stage chosen, e.g. dimensions=256, max_length=512, "
            "k1=1.2 (`rerank-eval first-stages` lists each kind's); repeatable."
        ),
    ),
]
OrderOpt = Annotated[
    str,
    typer.Option(
        "--candidate-order",
        help="Order candidates are shown to the model: first-stage, reversed or shuffled:SEED.",
    ),
]
OutOpt = Annotated[
    Path | None,
    typer.Option("--out", "-o", help="Result folder (default: results/<model>-<suite>-<time>)."),
]
DeviceOpt = Annotated[
    str | None, typer.Option("--device", help="cuda, cuda:1, cpu, ... (default: CUDA when available).")
]
DtypeOpt = Annotated[
    str | None,
    typer.Option("--dtype", help="float32, bfloat16 or float16 (default: bfloat16 on CUDA, float32 on CPU)."),
]
FreshOpt = Annotated[
    bool,
    typer.Option("--fresh", help="Discard the scores journaled by earlier runs of this setup; score again."),
]
SettingOpt = Annotated[
    list[str] | None,
    typer.Option("--set", help="NAME=VALUE model setting, e.g. --set max_doc_length=1024; repeatable."),
]


def parse_pairs(pairs: list[str] | None, what: str, empty_values: bool = False) -> dict[str, str]:
    """NAME=VALUE pairs; `empty_values`: NAME= gives the empty text (a prefix set to none)."""
    parsed = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key or not (value or empty_values):
            raise UserError(f"{what} expects NAME=VALUE, got {pair!r}")
        if key in parsed and parsed[key] != value:  # which one was meant?
            raise UserError(f"{what} gives {key} twice ({parsed[key]!r} and {value!r}); give it once")
        parsed[key] = value
    return parsed


def settings_from(pairs: list[str] | None) -> dict[str, Any]:
    """--set NAME=VALUE pairs as model settings."""
    return {k: setting_value(v) for k, v in parse_pairs(pairs, "--set").items()}


def first_stage_settings_from(pairs: list[str] | None) -> dict[str, str]:
    """--first-stage-set NAME=VALUE pairs, as text: the first stage's kind reads each as its type
    (NAME= is the empty text, e.g. no prefix)."""
    return parse_pairs(pairs, "--first-stage-set", empty_values=True)


def setting_value(text: str) -> Any:
    """Model settings on the command line: integers, floats, booleans, none, or text. Numbers as
    `--first-stage-set` reads them (`typed_number`); anything else stays text, which a number
    setting refuses."""
    number = typed_number(text)
    if number is not None:
        return number
    return {"true": True, "false": False, "none": None}.get(text.lower(), text)
