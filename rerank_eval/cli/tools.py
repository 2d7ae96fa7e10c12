"""`fetch` and `score`: what a user runs around the benchmarks."""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from rerank_eval.cli.app import app, user_errors
from rerank_eval.cli.options import (
    ConfigOpt,
    DatasetsOpt,
    DeviceOpt,
    DtypeOpt,
    FamilyOpt,
    FirstStageOpt,
    FirstStageSetOpt,
    ModelOpt,
    RemoteCodeOpt,
    SettingOpt,
    dataset_names,
    first_stage_settings_from,
    settings_from,
)
from rerank_eval.config.reader import load_config
from rerank_eval.errors import MissingDownload, UserError, warn


@app.command("fetch")
@user_errors
def fetch(
    suite: Annotated[
        str | None,
        typer.Argument(
            metavar="SUITE",
            help="The suite whose files to download (beir, miracl, ...); none for --model alone.",
        ),
    ] = None,
    datasets: DatasetsOpt = None,
    model: Annotated[
        list[str] | None,
        typer.Option("--model", "-m", help="Also download this model (preset, hub id); repeatable."),
    ] = None,
    first_stage: FirstStageOpt = None,
    first_stage_set: FirstStageSetOpt = None,
    no_first_stage: Annotated[
        bool,
        typer.Option(
            "--no-first-stage",
            help="Datasets and models only: the run will read its own run files (--run, --runs-dir).",
        ),
    ] = False,
    no_encode: Annotated[
        bool,
        typer.Option(
            "--no-encode",
            help="Download dense encoders but encode no corpus: embeddings are keyed by device and dtype, "
            "so a machine without the run's GPU leaves encoding to the run.",
        ),
    ] = False,
    config: ConfigOpt = None,
) -> None:
    """Pre-download a suite's datasets, first-stage runs and models, for GPU nodes without internet.

    Datasets come with their doc stores; with a dense --first-stage the corpora are encoded too (on
    this machine's device: --no-encode leaves that to the run). Copy IR_DATASETS_HOME and HF_HOME
    (and the rerank-eval cache for BM25 indexes and corpus embeddings) to the offline machine
    afterwards."""
    from rerank_eval.pipeline.fetch import fetch_suite
    from rerank_eval.pipeline.interrupt import ending_at_once

    # each concerns a first stage to fetch, which --no-first-stage leaves out
    flags = (
        ("--first-stage", first_stage), ("--first-stage-set", first_stage_set), ("--no-encode", no_encode)
    )  # fmt: skip
    given = [flag for flag, value in flags if value]
    if given and no_first_stage:
        raise UserError(f"{given[0]} and --no-first-stage exclude each other; give one")
    if suite is None:
        _check_models_alone(model, [*given, *(["--datasets"] if datasets else [])])
    cfg = load_config(config)
    names = dataset_names(datasets)
    settings = first_stage_settings_from(first_stage_set)
    cfg.command_line_first_stage(first_stage, settings)
    # every cache is written whole or resumed (downloads, doc stores, indexes, embedding shards)
    stopped = "stopped at once; what is fetched so far is kept: run the same fetch again to go on"
    try:
        with ending_at_once(stopped):
            fetch_suite(
                cfg, [] if suite is None else cfg.suite(suite).select(names), model or [], first_stage,
                not no_first_stage, settings, encode=not no_encode,
            )  # fmt: skip
    except MissingDownload as missing:
        raise UserError(missing.advice("this fetch")) from None


def _check_models_alone(models: list[str] | None, suite_options: list[str]) -> None:
    """`fetch --model M` without a suite fetches models alone (for `score`); what concerns a suite's
    datasets then needs one."""
    if not models:
        raise UserError("fetch needs a suite (e.g. rerank-eval fetch beir), or --model for models alone")
    if suite_options:
        raise UserError(f"{suite_options[0]} concerns a suite's datasets; name the suite (e.g. fetch beir)")


@app.command("score")
@user_errors
def score(
    model: ModelOpt = None,
    query: Annotated[str, typer.Option("--query", "-q", help="The query text.")] = "",
    docs: Annotated[
        Path | None,
        typer.Option(
            "--docs",
            help="One document per line, or a .jsonl file with a text field per line; - reads stdin "
            "(64 MiB at most).",
        ),
    ] = None,
    family: FamilyOpt = None,
    device: DeviceOpt = None,
    dtype: DtypeOpt = None,
    setting: SettingOpt = None,
    config: ConfigOpt = None,
    trust_remote_code: RemoteCodeOpt = False,
) -> None:
    """Score documents for one query and print a JSON array of scores in input order."""
    from rerank_eval.rerankers import load_reranker

    if docs is None:
        raise UserError("--docs FILE is required")
    if not query.strip():
        raise UserError("--query TEXT is required (a query that is not blank)")
    texts = read_documents_file(docs)
    cfg = load_config(config)
    settings = settings_from(setting)
    name = model or cfg.default_model
    try:
        reranker = load_reranker(
            name, device=device, dtype=dtype, family=family, config=cfg, trust_remote_code=trust_remote_code,
            **settings,
        )  # fmt: skip
    except MissingDownload as missing:
        configured = f" --config {shlex.quote(str(config))}" if config else ""
        fetch = f"`rerank-eval fetch --model {shlex.quote(name)}{configured}`"
        raise UserError(missing.advice(fetch)) from None
    print(json.dumps(_scores_with_progress(reranker, query, texts)))


# Documents a pointwise model scores per call of `score`, between progress updates.
SCORE_SLICE = 256
#: the most `score --docs` reads (a query's candidates, not a corpus)
SCORE_INPUT_LIMIT = 64 * 2**20


def _scores_with_progress(reranker: Any, query: str, texts: list[str]) -> list[float]:
    """Scores in input order, with progress on stderr: in one call where the family scores a query
    whole (listwise: every block's query vector enters every score), else in slices."""
    from rerank_eval.rerankers import registry
    from rerank_eval.runtime.progress import step, track

    family = registry.family(reranker.family)
    if not family.needs_model:
        raise UserError(
            "the bm25 and first-stage presets keep a first stage's order and have no scores of their own; "
            "score needs a model (--model PRESET, a Hub id or a checkpoint directory)"
        )
    what = f"scoring {len(texts):,} document{'s' * (len(texts) != 1)}"
    if family.scores_a_query_whole:
        with step(what):
            return reranker.score(query, texts)
    slices = [texts[start : start + SCORE_SLICE] for start in range(0, len(texts), SCORE_SLICE)]
    tracked = track(slices, len(texts), what, size=len)
    return [score for part in tracked for score in reranker.score(query, part)]


def _json_with_text(line: str) -> bool:
    if not line.lstrip().startswith("{"):
        return False
    try:
        record = json.loads(line)
    except ValueError:
        return False
    return isinstance(record, dict) and isinstance(record.get("text"), str)


def read_documents_file(path: Path) -> list[str]:
    """Documents for `score`, in file order, so scores line up with lines.

    A `.jsonl` file holds one object with a `text` field per line (blank lines skipped); any other
    file, and `-` (standard input), holds one document per line, split at line feeds only, a blank
    line being an empty document. At most `SCORE_INPUT_LIMIT` bytes in all and `MAX_LINE_BYTES` a
    line: one query's candidates, not a corpus, and never what exhausts memory.
    """
    from rerank_eval.paths import refuse_special_file
    from rerank_eval.textlines import MAX_LINE_BYTES, JsonLineError, json_line

    source = "standard input" if str(path) == "-" else str(path)
    if str(path) == "-":
        raw = sys.stdin.buffer.read(SCORE_INPUT_LIMIT + 1)
    else:
        refuse_special_file(path, f"--docs {path}")
        try:
            with open(path, "rb") as handle:
                raw = handle.read(SCORE_INPUT_LIMIT + 1)
        except OSError as exc:
            raise UserError(f"cannot read {path}: {exc.strerror}") from None
    if len(raw) > SCORE_INPUT_LIMIT:
        raise UserError(
            f"{source} holds more than {SCORE_INPUT_LIMIT // 2**20} MiB; score takes one query's candidates"
        )
    try:
        content = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise UserError(f"{source} is not valid UTF-8") from None
    lines = [line.removesuffix("\r") for line in content.removesuffix("\n").split("\n")] if content else []
    # (a character is at most 4 bytes: only lines that long are measured in bytes)
    too_long = (
        len(line) > MAX_LINE_BYTES // 4 and len(line.encode("utf-8")) > MAX_LINE_BYTES for line in lines
    )
    long = next((number for number, over in enumerate(too_long, start=1) if over), None)
    if long is not None:
        raise UserError(f"{source}, line {long}: longer than {MAX_LINE_BYTES // 2**20} MiB")
    if not any(line.strip() for line in lines):
        raise UserError(f"{source} has no documents")
    if path.suffix.lower() != ".jsonl":
        if all(_json_with_text(line) for line in lines if line.strip()):
            warn(
                f"every line of {source} is a JSON object with a text field, scored here as "
                "the whole line; to score the texts, give them in a file named .jsonl"
            )
        return lines
    texts = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json_line(line)
        except JsonLineError as exc:
            raise UserError(f"{path}, line {number}: {exc}") from None
        if not isinstance(record, dict) or not isinstance(record.get("text"), str):
            raise UserError(f"{path}, line {number}: expected an object with a text field")
        texts.append(record["text"])
    return texts
