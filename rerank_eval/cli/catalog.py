"""`models`, `suites`, `first-stages` and `datasets`: what can be run, as the configuration (packaged, with a
user's `--config` merged over it) declares it.

Tables keep what users type whole (preset, family, suite and dataset names never wrap or cut);
longer free text folds instead.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table
from rich.text import Text

from rerank_eval.cli.app import app, console, user_errors
from rerank_eval.cli.options import FLAGS, ConfigOpt, FirstStageSetOpt, first_stage_settings_from
from rerank_eval.config.reader import load_config
from rerank_eval.config.schema import BenchmarkConfig, DatasetSpec, FirstStageSpec
from rerank_eval.errors import UserError

if TYPE_CHECKING:
    from rerank_eval.first_stage.base import Setting


def _typed_column(table: Table, header: str, values: list[str]) -> None:
    """A column of names users type: as wide as its longest value, never wrapped."""
    table.add_column(header, no_wrap=True, min_width=max(map(len, [*values, header]), default=0))


def _config_table(what: str, cfg: BenchmarkConfig) -> Table:
    """A table titled with what it lists and the benchmarks files it comes from, at least as wide
    as that title: a narrow table (a suite of one dataset) would wrap a path in the middle."""
    files = " + ".join(str(f.path) for f in cfg.files) or str(cfg.path)
    title = f"{what} ({files})"
    return Table(title=Text(title), min_width=len(title))


@app.command("models")
@user_errors
def models(config: ConfigOpt = None) -> None:
    """List the model presets: family, Hub id, size, rough GPU memory need; then what each needs and sets."""
    cfg = load_config(config)
    presets = list(cfg.models.values())
    table = _config_table("Model presets", cfg)
    _typed_column(table, "Preset", [p.name for p in presets])
    _typed_column(table, "Family", [p.family for p in presets])
    for column in ("Model", "Size", "GPU memory"):
        table.add_column(column, overflow="fold")
    for preset in presets:
        cells = (
            preset.name,
            preset.family,
            preset.model or preset.description,
            preset.size,
            preset.gpu_memory,
        )
        table.add_row(*map(Text, cells))
    console.print(table)
    # what a preset needs and sets, a line each (a table column would be cut on a narrow terminal)
    for preset in presets:
        needs = ["--trust-remote-code"] if preset.trust_remote_code else []
        offline = f"offline from pip package {preset.package.replace('_', '-')}" if preset.package else ""
        settings = ", ".join(f"{k}={v}" for k, v in preset.settings.items())
        details = [f"needs {'; '.join(needs)}"] * bool(needs) + [offline] * bool(offline)
        details += [f"settings {settings}"] * bool(settings)
        details += [f"UNVERIFIED: {preset.unverified}"] * bool(preset.unverified)
        if details:
            console.print(Text(f"{preset.name}: {'; '.join(details)}"))


@app.command("suites")
@user_errors
def suites(config: ConfigOpt = None) -> None:
    """List the suites: datasets, headline average, first stages."""
    cfg = load_config(config)
    table = _config_table("Suites", cfg)
    _typed_column(table, "Suite", list(cfg.suites))
    for column in ("Datasets", "Average", "First stage"):
        table.add_column(column, overflow="fold")
    for suite in cfg.suites.values():
        rows = {d.row for d in suite.datasets}
        in_average = suite.average_rows()
        stages = sorted({d.first_stage or "(command line)" for d in suite.datasets})
        average = f"{suite.average_label} ({_rows(len(in_average))})"
        table.add_row(Text(suite.name), Text(_rows(len(rows))), Text(average), Text(", ".join(stages)))
    console.print(table)
    console.print("the datasets of one: rerank-eval datasets SUITE", highlight=False)


@app.command("first-stages")
@user_errors
def first_stages(
    name: Annotated[
        str | None,
        typer.Argument(
            metavar="NAME", help="One first stage (an entry or dense:ENCODER): show all its settings."
        ),
    ] = None,
    first_stage_set: FirstStageSetOpt = None,
    config: ConfigOpt = None,
) -> None:
    """List the first stages `--first-stage` takes; with NAME, that one's every setting.

    The list gives each one's name, kind, what it is, the published figures it is checked against
    and the settings --first-stage-set can change, then those that cannot run here. With NAME and
    --first-stage-set, what those settings would make of it."""
    from rerank_eval.first_stage import kind as first_stage_kind

    cfg = load_config(config)
    if name is not None:
        settings = first_stage_settings_from(first_stage_set)
        try:
            chosen = cfg.command_line_first_stage(name, settings)
        except UserError as exc:  # (here the first stage is the argument NAME, not --first-stage)
            raise UserError(exc.render({**FLAGS, "first_stage": "NAME"})) from None
        _show_first_stage(chosen)
        return
    if first_stage_set:
        raise UserError(
            "--first-stage-set shows what it makes of one first stage: name it (first-stages NAME)"
        )
    entries = list(cfg.first_stages.values())
    table = _config_table("First stages", cfg)
    _typed_column(table, "Name", [e.name for e in entries])
    _typed_column(table, "Kind", [e.kind for e in entries])
    for column in ("What", "Checked against"):
        table.add_column(column, overflow="fold")
    for entry in entries:
        checked = ", ".join(entry.reference) or "-"
        table.add_row(Text(entry.name), Text(entry.kind), Text(entry.label), Text(checked))
    console.print(table)
    for entry in entries:
        kind = first_stage_kind(entry.kind)
        if not kind.available():
            instead = f"; {entry.fallback} stands in for it" if entry.fallback else ""
            console.print(Text(f"{entry.name}: cannot run here, it needs {kind.requirement}{instead}"))
    console.print(
        "or dense:ENCODER, any sentence-transformers checkpoint (Hub id or folder), "
        "e.g. --first-stage dense:BAAI/bge-base-en-v1.5",
        highlight=False,
    )
    console.print(
        "settings --first-stage-set NAME=VALUE changes, by kind (in brackets: those that change only how "
        "the run is computed, so the first stage keeps its name and published figures):",
        highlight=False,
    )
    for name in sorted({entry.kind for entry in entries}):
        console.print(Text(f"  {name}: {_settings_listed(first_stage_kind(name).settings)}"))


def _show_first_stage(entry: FirstStageSpec) -> None:
    """An entry as `first_stages` would hold it, every setting with its value (null: the
    checkpoint's own, or the kind's choice at run time)."""
    lines = [f"name: {entry.name}", f"kind: {entry.kind}", f"label: {entry.label}"]
    lines.append(f"checked against: {', '.join(entry.reference) or '-'}")
    if entry.fallback:
        lines.append(f"fallback: {entry.fallback}")
    lines += [f"{name}: {json.dumps(value, ensure_ascii=False)}" for name, value in entry.settings.items()]
    for line in lines:
        console.print(Text(line))


def _settings_listed(settings: dict[str, Setting]) -> str:
    """A kind's settings the command line can give (a mapping needs a config entry)."""
    settable = {name: setting for name, setting in settings.items() if setting.kind is not dict}
    defining = sorted(name for name, setting in settable.items() if not setting.execution_only)
    execution = sorted(name for name, setting in settable.items() if setting.execution_only)
    return ", ".join(defining) + (f" [{', '.join(execution)}]" if execution else "")


@app.command("datasets")
@user_errors
def datasets(
    suite: Annotated[
        str, typer.Argument(metavar="SUITE", help="The suite to list (see `rerank-eval suites`).")
    ],
    config: ConfigOpt = None,
) -> None:
    """List a suite's datasets: key for --datasets, source, first stage, in the headline average."""
    cfg = load_config(config)
    spec = cfg.suite(suite)
    table = _config_table(f"Suite {spec.name}", cfg)
    _typed_column(table, "Key", [d.key for d in spec.datasets])
    table.add_column("Source", overflow="fold")
    _typed_column(table, "First stage", [d.first_stage or "-" for d in spec.datasets])
    table.add_column(f"In {spec.average_label}", overflow="fold")
    for dataset in spec.datasets:
        table.add_row(
            Text(dataset.key),
            Text(_source(dataset)),
            Text(dataset.first_stage or "-"),
            Text(_average(dataset)),
        )
    console.print(table)


def _source(dataset: DatasetSpec) -> str:
    if dataset.local is None:
        return str(dataset.ir_datasets_id)
    return dataset.origin.removeprefix("local files in ")


def _average(dataset: DatasetSpec) -> str:
    """In the headline average or not, and the row it is averaged into (CQADupStack's forums)."""
    return ("yes" if dataset.in_average else "no") + (f", row {dataset.group}" if dataset.group else "")


def _rows(count: int) -> str:
    return f"{count} row{'' if count == 1 else 's'}"
