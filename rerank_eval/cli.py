"""The `rerank-eval` command line (Typer).

Every command turns a `UserError` into one line on stderr and exit code 2; nothing the user can
fix ends in a traceback.
"""

from __future__ import annotations

import functools
import inspect
import json
import shlex
import signal
import sys
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.text import Text

from rerank_eval.config import BenchmarkConfig, load_config
from rerank_eval.errors import UserError
from rerank_eval.interrupt import STOP_SIGNALS

app = typer.Typer(
    help="Trustworthy nDCG@10 of document rerankers on BEIR and MIRACL.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
# Tables keep their full width when written to a file or a pipe.
console = Console() if Console().is_terminal else Console(width=200)
error_console = Console(stderr=True)
F = TypeVar("F", bound=Callable[..., Any])


def user_errors(command: F) -> F:
    """Print a UserError as one line and exit 2; Ctrl-C exits 130.

    The outer `try` also catches a Ctrl-C that lands while the error line of a first, graceful stop
    is being printed: the second press then still ends in exit 130 and one line, not a traceback.
    """

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            try:
                return command(*args, **kwargs)
            except UserError as exc:
                error_console.print(  # the message quotes user input (paths, ids): escaped
                    f"[bold red]error:[/] {escape(str(exc))}", markup=True, highlight=False, soft_wrap=True
                )
                raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            error_console.print(
                "stopped at once; scores journaled so far are kept: run the same command again to resume",
                highlight=False,
            )
            raise typer.Exit(130) from None

    return wrapper  # type: ignore[return-value]


@app.callback()
def everywhere(
    verbose: Annotated[
        bool, typer.Option("--verbose", help="Also show ir_datasets' own log lines (files opened, retries).")
    ] = False,
) -> None:
    """Trustworthy nDCG@10 of document rerankers on BEIR and MIRACL."""
    from rerank_eval.data import quiet_ir_datasets

    quiet_ir_datasets(not verbose)


# -- options shared by the benchmark commands --------------------------------------------------

ConfigOpt = Annotated[
    Path | None,
    typer.Option(
        "--config",
        help=(
            "A benchmarks YAML file with your own suites and presets (default: the packaged benchmarks.yaml)."
        ),
    ),
]
DatasetsOpt = Annotated[
    str | None,
    typer.Option(
        "--datasets",
        "--languages",
        "-d",
        help=(
            "Comma-separated dataset keys (or groups such as cqadupstack, or "
            "MIRACL language codes); default: the whole suite."
        ),
    ),
]
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
        help="Reranker family when --model is neither a preset nor recognisable from its config.json.",
    ),
]
TopKOpt = Annotated[
    int | None, typer.Option("--top-k", help="Candidates reranked per query (default from the config: 100).")
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
            "against its figures."
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
            "jina-embeddings-v3, bge-base-en-v1.5, ...) or dense:ENCODER (a preset, Hub id or "
            "sentence-transformers checkpoint directory)."
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
    typer.Option("--fresh", help="Ignore scores journaled by an earlier run of this setup; score again."),
]
SettingOpt = Annotated[
    list[str] | None,
    typer.Option("--set", help="NAME=VALUE model setting, e.g. --set max_doc_length=1024; repeatable."),
]


def _parse_pairs(pairs: list[str] | None, what: str) -> dict[str, str]:
    parsed = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key or not value:
            raise UserError(f"{what} expects NAME=VALUE, got {pair!r}")
        parsed[key] = value
    return parsed


def _setting_value(text: str) -> Any:
    """Model settings on the command line: integers, floats, booleans, none, or text."""
    for convert in (int, float):
        try:
            return convert(text)
        except ValueError:
            pass
    return {"true": True, "false": False, "none": None}.get(text.lower(), text)


def _default_out(models: list[str], suite: str) -> Path:
    from rerank_eval.runner import model_folder_name

    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    name = "+".join(model_folder_name(m) for m in models)
    return Path("results") / f"{name}-{suite}-{stamp}"


def _benchmark(
    suite: str,
    config: Path | None,
    datasets: str | None,
    models: list[str] | None,
    family: str | None,
    top_k: int | None,
    metric: list[str] | None,
    run: list[str] | None,
    runs_dir: Path | None,
    run_pattern: str,
    run_reference: str | None,
    first_stage: str | None,
    candidate_order: str,
    out: Path | None,
    device: str | None,
    dtype: str | None,
    setting: list[str] | None,
    fresh: bool,
    trust_remote_code: bool,
) -> None:
    from rerank_eval.evaluation import canonical_measures
    from rerank_eval.first_stage import RunLocation
    from rerank_eval.report import Report, comparison_table
    from rerank_eval.rerankers import load_reranker
    from rerank_eval.results import load_result
    from rerank_eval.runner import CandidateOrder, RunPlan, execute_models

    cfg = load_config(config)
    suite_spec = cfg.suite(suite)
    selected = suite_spec.select([d.strip() for d in datasets.split(",") if d.strip()] if datasets else None)
    model_names = list(models or [cfg.default_model])
    plan = RunPlan(
        config=cfg,
        suite=suite_spec,
        datasets=selected,
        top_k=cfg.top_k if top_k is None else top_k,
        metrics=canonical_measures(metric or cfg.metrics),
        candidate_order=CandidateOrder.parse(candidate_order),
        runs=RunLocation(
            overrides={k: Path(v) for k, v in _parse_pairs(run, "--run").items()},
            folder=runs_dir,
            pattern=run_pattern,
            reference=run_reference,
        ),
        first_stage_override=first_stage,
        fresh=fresh,
        # the same command minus --fresh, which would throw the journaled scores away
        resume_command=shlex.join(["rerank-eval", *(a for a in sys.argv[1:] if a != "--fresh")]),
    )
    plan.validate()
    settings = {k: _setting_value(v) for k, v in _parse_pairs(setting, "--set").items()}

    from rerank_eval.distributed import default_device

    def load(name: str):
        return load_reranker(
            name, device=device or default_device(), dtype=dtype, family=family, config=cfg,
            trust_remote_code=trust_remote_code, **settings,
        )  # fmt: skip

    destination = out or _default_out(model_names, suite)
    folders = execute_models(plan, model_names, load, destination, sys.argv)
    if not folders:
        return  # a torchrun rank other than 0: rank 0 reports
    reports = [Report(saved.manifest, saved.per_query) for saved in map(load_result, folders)]
    console.print(reports[0].table() if len(reports) == 1 else comparison_table(reports))
    console.print(f"results: {destination}")


def _benchmark_command(suite: str | None) -> Callable[..., None]:
    """A benchmark command bound to a suite (beir, miracl) or taking it as argument (run)."""

    @user_errors
    def command(
        suite_name: Annotated[
            str, typer.Argument(metavar="SUITE", help="A suite of the config, e.g. beir or miracl.")
        ],
        datasets: DatasetsOpt = None,
        model: ModelsOpt = None,
        family: FamilyOpt = None,
        top_k: TopKOpt = None,
        metric: MetricOpt = None,
        run: RunOpt = None,
        runs_dir: RunsDirOpt = None,
        run_pattern: RunPatternOpt = "{key}.trec",
        run_reference: RunReferenceOpt = None,
        first_stage: FirstStageOpt = None,
        candidate_order: OrderOpt = "first-stage",
        out: OutOpt = None,
        config: ConfigOpt = None,
        device: DeviceOpt = None,
        dtype: DtypeOpt = None,
        setting: SettingOpt = None,
        fresh: FreshOpt = False,
        trust_remote_code: RemoteCodeOpt = False,
    ) -> None:
        _benchmark(
            suite_name,
            config,
            datasets,
            model,
            family,
            top_k,
            metric,
            run,
            runs_dir,
            run_pattern,
            run_reference,
            first_stage,
            candidate_order,
            out,
            device,
            dtype,
            setting,
            fresh,
            trust_remote_code,
        )

    if suite is None:
        return command

    @functools.wraps(command)
    def bound(**kwargs: Any) -> None:
        command(suite, **kwargs)

    signature = inspect.signature(command, eval_str=True)
    parameters = [p for name, p in signature.parameters.items() if name != "suite_name"]
    bound.__signature__ = signature.replace(parameters=parameters)  # type: ignore[attr-defined]
    bound.__annotations__ = {p.name: p.annotation for p in parameters}
    return bound


app.command(
    "beir",
    help=(
        "Rerank BEIR (default: the published BM25 flat runs as first stage) "
        "and print nDCG@10 per dataset with the BEIR-13 average."
    ),
)(_benchmark_command("beir"))
app.command(
    "miracl",
    help=(
        "Rerank MIRACL dev per language (select with --languages) and print "
        "nDCG@10 per language with the average."
    ),
)(_benchmark_command("miracl"))
app.command("run", help="Rerank any suite of the config (yours with --config) and print its table.")(
    _benchmark_command(None)
)


@app.command("export")
@user_errors
def export(
    result: Annotated[Path, typer.Argument(help="A result folder written by a benchmark command.")],
    csv: Annotated[
        Path | None,
        typer.Option(
            "--csv", help="Write the summary table (one line per dataset and measure) to this CSV file."
        ),
    ] = None,
) -> None:
    """Re-render a saved result (table, CSV) without recomputing anything."""
    from rerank_eval.report import Report
    from rerank_eval.results import check_output_paths, load_result, write_output

    check_output_paths([csv])
    saved = load_result(result)
    report = Report(saved.manifest, saved.per_query)
    console.print(report.table())
    if csv:
        write_output(csv, lambda path: path.write_text(report.summary_csv(), encoding="utf-8"))
        console.print(f"wrote {csv}")


@app.command("compare")
@user_errors
def compare(
    results: Annotated[
        list[Path],
        typer.Argument(help="Result folders (a folder of several models' results counts as each of them)."),
    ],
    baseline: Annotated[
        str | None, typer.Option("--baseline", help="The run (model name or folder name) deltas are against.")
    ] = None,
    metric: Annotated[
        str, typer.Option("--metric", help="The measure to compare (from per_query.csv).")
    ] = "nDCG@10",
    test: Annotated[
        str, typer.Option("--test", help="t-test (paired, two-sided) or randomization.")
    ] = "t-test",
    published: Annotated[
        list[str] | None,
        typer.Option(
            "--published", help="Add published figures (e.g. jina-reranker-v3, pyserini-bm25-flat)."
        ),
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Compare runs whose protocols differ (the table says so).")
    ] = False,
    csv: Annotated[Path | None, typer.Option("--csv", help="Long CSV: one line per row and run.")] = None,
    csv_wide: Annotated[Path | None, typer.Option("--csv-wide", help="Wide CSV: rows × runs.")] = None,
    markdown: Annotated[Path | None, typer.Option("--markdown", help="A Markdown table.")] = None,
    latex: Annotated[Path | None, typer.Option("--latex", help="A LaTeX (booktabs) table.")] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="Everything, as JSON.")] = None,
    plot: Annotated[Path | None, typer.Option("--plot", help="Grouped bars per dataset, as PNG.")] = None,
) -> None:
    """Compare saved results: deltas vs a baseline with significance marks, win/tie/loss, averages."""
    from rerank_eval.comparison import Comparison, check_plot_path
    from rerank_eval.results import check_output_paths, load_results, write_output

    check_output_paths([csv, csv_wide, markdown, latex, json_out, plot])
    if plot is not None:
        check_plot_path(plot)
    comparison = Comparison(load_results(results), metric, baseline, test, published, force)
    console.print(comparison.table())
    outputs = [
        (csv, lambda: comparison.to_csv()),
        (csv_wide, lambda: comparison.to_csv(wide=True)),
        (markdown, comparison.to_markdown),
        (latex, comparison.to_latex),
        (json_out, comparison.to_json),
    ]
    for path, render in outputs:
        if path is not None:
            write_output(path, lambda target, render=render: target.write_text(render(), encoding="utf-8"))
            console.print(f"wrote {path}")
    if plot is not None:
        write_output(plot, comparison.plot)
        console.print(f"wrote {plot}")


@app.command("fetch")
@user_errors
def fetch(
    suite: Annotated[str, typer.Argument(help="The suite whose files to download (beir, miracl, ...).")],
    datasets: DatasetsOpt = None,
    model: Annotated[
        list[str] | None,
        typer.Option("--model", "-m", help="Also download this model (preset, hub id); repeatable."),
    ] = None,
    first_stage: FirstStageOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Pre-download datasets (and their doc stores), first-stage run files and models into their caches,
    for GPU nodes without internet; with a dense --first-stage, encode the corpora too. Copy
    IR_DATASETS_HOME and HF_HOME (and the rerank-eval cache for built-in BM25 indexes and corpus
    embeddings) to the offline machine afterwards."""
    from rerank_eval.fetching import fetch_suite

    cfg = load_config(config)
    names = [d.strip() for d in datasets.split(",") if d.strip()] if datasets else None
    if first_stage:
        cfg.first_stage(first_stage)
    fetch_suite(cfg, cfg.suite(suite).select(names), model or [], first_stage)


@app.command("score")
@user_errors
def score(
    model: ModelOpt = None,
    query: Annotated[str, typer.Option("--query", "-q", help="The query text.")] = "",
    docs: Annotated[
        Path | None,
        typer.Option("--docs", help="One document per line, or a .jsonl file with a text field per line."),
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
        raise UserError("--query must not be empty")
    texts = read_documents_file(docs)
    cfg = load_config(config)
    settings = {k: _setting_value(v) for k, v in _parse_pairs(setting, "--set").items()}
    reranker = load_reranker(
        model or cfg.default_model,
        device=device,
        dtype=dtype,
        family=family,
        config=cfg,
        trust_remote_code=trust_remote_code,
        **settings,
    )
    print(json.dumps(_scores_with_progress(reranker, query, texts)))


# Documents a pointwise model scores per call of `score`, between progress updates.
SCORE_SLICE = 256


def _scores_with_progress(reranker: Any, query: str, texts: list[str]) -> list[float]:
    """Scores in input order, with progress on stderr. A listwise model scores all the documents of
    its query together (every block's query vector enters every score); the others in slices."""
    from rerank_eval.progress import step, track

    if reranker.family == "first-stage-order":
        raise UserError(
            "the bm25 preset keeps a first stage's order and has no scores of its own; "
            "score needs a model (--model PRESET, a Hub id or a checkpoint directory)"
        )
    if reranker.family == "listwise-last-token":
        with step(f"scoring {len(texts):,} documents"):
            return reranker.score(query, texts)
    slices = [texts[start : start + SCORE_SLICE] for start in range(0, len(texts), SCORE_SLICE)]
    tracked = track(slices, len(texts), f"scoring {len(texts):,} documents", size=len)
    return [score for part in tracked for score in reranker.score(query, part)]


def read_documents_file(path: Path) -> list[str]:
    """Documents for `score`, in file order, so scores line up with lines.

    A `.jsonl` file holds one object with a `text` field per line (blank lines skipped); any other
    file holds one document per line, split at line feeds only, a blank line being an empty document.
    """
    from rerank_eval.paths import special_file_kind

    kind = special_file_kind(path)
    if kind:
        raise UserError(f"--docs {path} is {kind}, not a file")
    try:
        content = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise UserError(f"{path} is not valid UTF-8") from None
    except OSError as exc:
        raise UserError(f"cannot read {path}: {exc.strerror}") from None
    lines = [line.removesuffix("\r") for line in content.removesuffix("\n").split("\n")] if content else []
    if not any(line.strip() for line in lines):
        raise UserError(f"{path} has no documents")
    if path.suffix.lower() != ".jsonl":
        return lines
    texts = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            raise UserError(f"{path}, line {number}: not valid JSON") from None
        if not isinstance(record, dict) or not isinstance(record.get("text"), str):
            raise UserError(f"{path}, line {number}: expected an object with a text field")
        texts.append(record["text"])
    return texts


@app.command("bench")
@user_errors
def bench(
    preset: Annotated[
        str, typer.Option("--preset", help="short (≈20-token documents), medium (≈150), long (≈1,000).")
    ] = "medium",
    shape: Annotated[
        str, typer.Option("--shape", help="qwen3-0.6b (jina-reranker-v3's shape, random weights) or tiny.")
    ] = "tiny",
    queries: Annotated[
        int | None, typer.Option("--queries", help="Queries (default 32 on CUDA, 4 on CPU).")
    ] = None,
    candidates: Annotated[int, typer.Option("--candidates", help="Candidates per query.")] = 100,
    doc_tokens: Annotated[
        int | None,
        typer.Option("--doc-tokens", help="Mean document length in tokens (overrides the preset)."),
    ] = None,
    device: DeviceOpt = None,
    dtype: DtypeOpt = None,
    matmul_size: Annotated[
        int | None,
        typer.Option(
            "--matmul-size",
            help="Size of the bf16 matrix product measuring the peak (default 8192 on CUDA, 1024 on CPU).",
        ),
    ] = None,
    json_out: Annotated[
        Path | None, typer.Option("--json", help="Also write the result as JSON here.")
    ] = None,
    fused_rms_norm: Annotated[
        bool,
        typer.Option(
            "--fused-rms-norm/--no-fused-rms-norm",
            help="Ours with one fused kernel per RMSNorm (the reference-style path never fuses).",
        ),
    ] = True,
    trim_last_layer: Annotated[
        bool,
        typer.Option(
            "--trim-last-layer/--no-trim-last-layer",
            help="Ours with the last layer run only at the positions read (the reference-style path "
            "runs it everywhere).",
        ),
    ] = True,
    compile_elementwise: Annotated[
        bool | None,
        typer.Option(
            "--compile-elementwise/--no-compile-elementwise",
            help="Ours with the rotary embedding and SiLU compiled into single kernels (torch.compile; "
            "the warm-up compiles). Default: on CUDA, off on CPUs.",
            show_default=False,
        ),
    ] = None,
    pad_multiple: Annotated[
        int | None,
        typer.Option(
            "--pad-multiple",
            min=1,
            help="Ours with forward-pass lengths rounded up to this multiple. Default: 64 on CUDA "
            "(fewer shapes for cuDNN attention to plan), 1 on CPUs.",
            show_default=False,
        ),
    ] = None,
    pack_blocks: Annotated[
        bool | None,
        typer.Option(
            "--pack-blocks/--no-pack-blocks",
            help="Ours with each batch's blocks packed into one row instead of padded rows. Default: "
            "with FlashAttention (its varlen kernel takes the boundaries); with SDPA transformers builds "
            "a block-diagonal mask, which is exact but slow.",
            show_default=False,
        ),
    ] = None,
    seed: Annotated[
        int,
        typer.Option(
            "--seed",
            help="Workload seed. Runs in one process that repeat a seed repeat its prompt shapes, "
            "which GPU kernels may have planned already.",
        ),
    ] = 0,
    second_pass: Annotated[
        bool,
        typer.Option(
            "--second-pass",
            help="Time both paths again over the same workload, once every prompt shape has run.",
        ),
    ] = False,
) -> None:
    """Benchmark the listwise model: the published procedure's style against ours, same workload, same run."""
    from rerank_eval.bench import PRESETS, SHAPES, run_bench
    from rerank_eval.bench_report import bench_table

    if preset not in PRESETS:
        raise UserError(f"unknown preset {preset!r}; use {', '.join(PRESETS)}")
    if shape not in SHAPES:
        raise UserError(f"unknown shape {shape!r}; use {', '.join(SHAPES)}")
    result = run_bench(
        preset,
        shape,
        queries,
        candidates,
        doc_tokens,
        device,
        dtype,
        matmul_size,
        fused_rms_norm=fused_rms_norm,
        trim_last_layer=trim_last_layer,
        compile_elementwise=compile_elementwise,
        pad_multiple=pad_multiple,
        pack_blocks=pack_blocks,
        seed=seed,
        second_pass=second_pass,
    )
    console.print(bench_table(result))
    text = json.dumps(result, indent=2)
    print(text)
    if json_out:
        from rerank_eval.results import write_output

        write_output(json_out, lambda path: path.write_text(text + "\n", encoding="utf-8"))


@app.command("bench-encode")
@user_errors
def bench_encode(
    shape: Annotated[
        str,
        typer.Option(
            "--shape",
            help="xlm-roberta-large (jina-embeddings-v3's shape, random weights, no adapters) or tiny.",
        ),
    ] = "tiny",
    passages: Annotated[
        int | None,
        typer.Option("--passages", min=1, help="Passages (default 20,000 on CUDA, 2,000 on CPU)."),
    ] = None,
    device: DeviceOpt = None,
    dtype: Annotated[
        str | None,
        typer.Option(
            "--dtype",
            help="Ours' dtype: float32, bfloat16 or float16 (default: bfloat16 on CUDA, float32 on CPU); "
            "the straightforward path runs float32.",
        ),
    ] = None,
    max_batch_tokens: Annotated[
        int | None,
        typer.Option(
            "--max-batch-tokens",
            min=1,
            help="Ours' padded tokens per batch (default 65,536 on CUDA, 8,192 on CPU).",
        ),
    ] = None,
    seed: Annotated[int, typer.Option("--seed", help="Workload seed.")] = 0,
    json_out: Annotated[
        Path | None, typer.Option("--json", help="Also write the result as JSON here.")
    ] = None,
) -> None:
    """Benchmark the dense encoder: the straightforward way (float32, fixed batches of 32 in input order)
    against ours (distinct texts once, length-sorted batches), same workload, same run."""
    from rerank_eval.bench_encode import SHAPES, run_bench_encode
    from rerank_eval.bench_report import encode_table

    if shape not in SHAPES:
        raise UserError(f"unknown shape {shape!r}; use {', '.join(SHAPES)}")
    result = run_bench_encode(shape, passages, device, dtype, max_batch_tokens, seed)
    console.print(encode_table(result))
    text = json.dumps(result, indent=2)
    print(text)
    if json_out:
        from rerank_eval.results import write_output

        write_output(json_out, lambda path: path.write_text(text + "\n", encoding="utf-8"))


@app.command("bench-index")
@user_errors
def bench_index(
    documents: Annotated[int, typer.Option("--docs", help="Passages in the synthetic corpus.")] = 200_000,
) -> None:
    """Measure ir_datasets' doc-store build and the built-in BM25 build (documents/s, peak memory,
    size) on a synthetic MIRACL-like corpus, and project the index to MIRACL English (32.9M)."""
    from rerank_eval.indexbench import measure

    if documents < 1000:
        raise UserError("--docs must be at least 1000")
    result = measure(documents)
    console.print_json(json.dumps(result))


@app.command("models")
@user_errors
def models(config: ConfigOpt = None) -> None:
    """List the model presets: family, Hub id, size, rough GPU memory need, remote code."""
    from rich.table import Table

    cfg: BenchmarkConfig = load_config(config)
    table = Table(title=Text(f"Model presets ({cfg.path})"))
    for column in ("Preset", "Family", "Model", "Size", "GPU memory", "Needs", "Settings"):
        table.add_column(column)
    for preset in cfg.models.values():
        settings = ", ".join(f"{k}={v}" for k, v in preset.settings.items())
        needs = "--trust-remote-code" if preset.trust_remote_code else ""
        if preset.package:
            needs = (
                needs + "; " if needs else ""
            ) + f"offline with pip package {preset.package.replace('_', '-')}"
        cells = (preset.name, preset.family, preset.model or preset.description, preset.size,
                 preset.gpu_memory, needs, settings)  # fmt: skip
        table.add_row(*map(Text, cells))
    console.print(table)


def main() -> None:
    """The console script.

    After an interrupted run (exit 130) only interpreter shutdown is left, which takes a while with
    torch loaded; a further Ctrl-C then is ignored rather than turning exit 130 into death by signal.
    """
    try:
        app()
    except SystemExit as exiting:
        if exiting.code in (128 + signum for signum in STOP_SIGNALS):
            for signum in STOP_SIGNALS:
                signal.signal(signum, signal.SIG_IGN)
        raise
