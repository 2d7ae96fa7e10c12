"""Rules of the command line's wiring (`cli/app.py`), of the listwise bench's workload and paths
(`bench/listwise.py`) and of the CPU side of the Qwen3 and jina-embeddings-v3 kernels, each pinned
where a mutation round found it unchecked. Every figure is worked out here by hand; no model is
downloaded."""

from __future__ import annotations

import errno
import importlib
import io
import itertools
import signal
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import typer
from rich.console import Console
from typer.testing import CliRunner

from rerank_eval.bench import listwise

# (the package's `app` is the Typer application, which hides the module of that name)
app_module = importlib.import_module("rerank_eval.cli.app")

# -- cli/app.py: the one-line error policy -------------------------------------------------------------


def failing(raised: BaseException):
    """A command under `user_errors` that raises `raised`."""

    @app_module.user_errors
    def command() -> None:
        raise raised

    return command


def test_a_path_too_long_or_looping_is_one_line_naming_the_problem_and_the_path(capsys):
    """OSError ENAMETOOLONG and ELOOP, wherever first met, are `error: <what>: <path>` and exit 2."""
    for number, said in ((errno.ENAMETOOLONG, "file name too long"), (errno.ELOOP, "symlink loop")):
        with pytest.raises(typer.Exit) as exiting:
            failing(OSError(number, "the system's wording", "/x/aaaa"))()
        assert exiting.value.exit_code == 2
        assert capsys.readouterr().err == f"error: {said}: /x/aaaa\n"


def test_any_other_os_error_is_not_taken_for_a_path_problem(capsys):
    """A disk that is full is no bad path: the OSError itself goes on, and no error line is said."""
    full = OSError(errno.ENOSPC, "No space left on device", "/x/out")
    with pytest.raises(OSError) as raised:
        failing(full)()
    assert raised.value is full and capsys.readouterr().err == ""


def test_a_user_error_names_parameters_by_their_command_line_flags(capsys):
    """A message that names a library parameter (`force=True` in Python) says the CLI's flag."""
    from rerank_eval.errors import UserError, term

    with pytest.raises(typer.Exit) as exiting:
        failing(
            UserError(f"the runs differ (use {term('force')} to compare anyway)", {"force": "force=True"})
        )()
    assert exiting.value.exit_code == 2
    assert capsys.readouterr().err == "error: the runs differ (use --force to compare anyway)\n"


def test_a_stopped_command_exits_with_the_signals_code(capsys):
    """A run stopped by SIGTERM exits 143 (the shell's code for it), by Ctrl-C 130: the error's own
    exit code, not the 2 of other errors."""
    from rerank_eval.pipeline.interrupt import Interrupted

    for signum, code in ((signal.SIGTERM, 143), (signal.SIGINT, 130)):
        with pytest.raises(typer.Exit) as exiting:
            failing(Interrupted("stopped; run it again to resume", signum))()
        assert exiting.value.exit_code == code
        assert capsys.readouterr().err == "error: stopped; run it again to resume\n"


def scratch_app(raised: BaseException) -> typer.Typer:
    """An application of the same class as rerank-eval's whose one command raises `raised`."""
    scratch = typer.Typer(cls=app_module.OneLineUsageErrors, add_completion=False)

    @scratch.command()
    def go() -> None:
        raise raised

    @scratch.command()
    def other() -> None:  # (two commands: `go` is then named on the command line)
        pass

    return scratch


def test_an_abort_says_aborted_and_exits_1():
    """Click's Abort (a prompt answered with Ctrl-D) ends as Click's own does: `Aborted!`, exit 1."""
    result = CliRunner().invoke(scratch_app(typer.Abort()), ["go"])
    assert (result.exit_code, result.output) == (1, "Aborted!\n")


def test_a_click_error_keeps_its_own_exit_code_on_its_one_line():
    """Click's errors other than usage errors exit 1 (their own code), on the same one line."""
    # Typer's own copy of Click, reached through a public class (its module is private)
    click_exception = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")
    result = CliRunner().invoke(scratch_app(click_exception("the file is locked.")), ["go"])
    assert (result.exit_code, result.output) == (1, "error: the file is locked\n")


def test_the_error_line_is_not_highlighted_on_a_terminal(monkeypatch):
    """Only `error:` is styled: the message (numbers, paths) is printed as written, uncoloured."""
    out = io.StringIO()
    terminal = Console(file=out, force_terminal=True, color_system="truecolor", markup=False)
    monkeypatch.setattr(app_module, "error_console", terminal)
    app_module.print_error("exit 42 at /tmp/x.csv after 3.5 s")
    assert out.getvalue().endswith(" exit 42 at /tmp/x.csv after 3.5 s\n")


def test_the_help_offers_no_shell_completion_options():
    """Completion is not installed by the tool (`add_completion=False`): the help lists none of it."""
    result = CliRunner().invoke(app_module.app, ["--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0 and "--install-completion" not in result.output


def test_output_to_a_pipe_is_200_columns_wide(capsys):
    """Written to a file or a pipe (as under pytest), a line of 190 characters is not wrapped."""
    app_module.console.print("x" * 190)
    assert capsys.readouterr().out == "x" * 190 + "\n"


@pytest.fixture
def kept_handlers():
    before = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    yield
    for signum, handler in before.items():
        signal.signal(signum, handler)


@pytest.mark.parametrize(
    ("code", "ignored"), [(130, True), (143, True), (2, False), (0, False), (129, False)]
)
def test_a_stopped_exit_ignores_further_stop_signals_and_others_do_not(
    monkeypatch, kept_handlers, code, ignored
):
    """Exit 130 (SIGINT) and 143 (SIGTERM) make the console script ignore both stop signals on its
    way out and end the process at once (`os._exit`, here recorded); any other exit leaves the
    handlers as they were and goes through interpreter shutdown."""
    ended: list[int] = []

    def exiting() -> None:
        raise SystemExit(code)

    def ending_at_once(status: int) -> None:
        ended.append(status)
        raise SystemExit(status)

    monkeypatch.setattr(app_module, "app", exiting)
    monkeypatch.setattr(app_module.os, "_exit", ending_at_once)
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, signal.default_int_handler)
    with pytest.raises(SystemExit) as raised:
        app_module.main()
    assert raised.value.code == code
    assert ended == ([code] if ignored else [])
    for signum in (signal.SIGINT, signal.SIGTERM):
        expected = signal.SIG_IGN if ignored else signal.default_int_handler
        assert signal.getsignal(signum) == expected, (code, signum)


# -- bench/listwise.py: the workload ---------------------------------------------------------------------


def test_synthetic_words_are_w_and_base_26_letters_least_significant_first():
    """`word(i)`: "w", then i's base-26 digits as letters, least significant first (a = 0), so every
    index below WORDS is a distinct word of letters only."""
    assert [listwise.word(i) for i in (0, 1, 25, 26, 27, 51, 52, 675, 676)] == [
        "wa", "wb", "wz", "wab", "wbb", "wzb", "wac", "wzz", "waab",
    ]  # fmt: skip
    words = [listwise.word(i) for i in range(listwise.WORDS)]
    assert len(set(words)) == listwise.WORDS and all(w.isalpha() and w.islower() for w in words)


def test_a_document_has_at_least_four_words_however_short_the_preset():
    """Lengths drawn around a median of 1 word are raised to 4 (log-normal σ 0.5 around 1 never
    reaches 5 in these 60 draws)."""
    requests = listwise.Workload("short", 2, 30, 1).requests()
    assert {len(text.split()) for request in requests for text in request.texts} == {4}


def test_document_lengths_are_log_normal_with_sigma_one_half():
    """The logarithms of 2,000 drawn lengths spread with σ 0.5 (the sample's is within 0.03)."""
    requests = listwise.Workload("medium", 20, 100, 100, seed=5).requests()
    logs = np.log([len(text.split()) for request in requests for text in request.texts])
    assert abs(np.std(logs) - 0.5) < 0.03 and 90 <= np.exp(np.median(logs)) <= 110


def test_the_seed_decides_the_workload():
    """One seed, one workload; another seed, other queries and documents."""
    first, again = (listwise.Workload("short", 2, 3, 20, seed=1).requests() for _ in range(2))
    other = listwise.Workload("short", 2, 3, 20, seed=2).requests()
    assert first == again
    assert [r.query for r in first] != [r.query for r in other]
    assert [r.texts for r in first] != [r.texts for r in other]


def test_the_synthetic_model_runs_the_attention_the_listwise_family_picks(monkeypatch, tmp_path):
    """The bench's backbone is built with the attention a loaded checkpoint would get on that
    device and dtype (on CUDA in float32: SDPA with repeated key/value heads); the tokenizer and
    the reranker around it are stand-ins here."""
    from rerank_eval.rerankers.listwise.qwen3_kernels import REPEATED_KV_SDPA, register_repeated_kv_attention

    monkeypatch.setattr(
        listwise, "listwise_attention", lambda device, dtype: register_repeated_kv_attention()
    )
    monkeypatch.setattr(listwise, "synthetic_tokenizer", lambda folder: [0] * 10)
    monkeypatch.setattr(
        listwise.ListwiseLastToken, "from_parts", lambda checkpoint, tokenizer, backbone, *a: backbone
    )
    backbone = listwise.random_reranker("tiny", torch.device("cpu"), torch.float32, tmp_path)
    assert backbone.config._attn_implementation == REPEATED_KV_SDPA


class WordTokenizer:
    """One token a word: `E` is the embed token (id 1), `R` the rerank token (id 2), others 0."""

    def __call__(self, text: str, add_special_tokens: bool = True, return_tensors: str | None = None):
        ids = [{"E": 1, "R": 2}.get(piece, 0) for piece in text.split()]
        return {"input_ids": torch.tensor([ids]) if return_tensors == "pt" else ids}


def test_the_reference_style_path_strips_special_strings_and_counts_its_prompt_tokens(monkeypatch):
    """As the published code does (and ours), the special-token strings typed in a query or a
    document are removed before the prompt is built, and its blocks are planned from the stripped
    lengths; the tokens it reports are its prompts'."""
    from rerank_eval.rerankers.base import RerankRequest
    from rerank_eval.rerankers.listwise.procedure import EMBED_TOKEN, RERANK_TOKEN

    built = []

    def build_prompt(query, docs):  # each document then its embed token, the query then R
        built.append((query, list(docs)))
        return " ".join([*(f"{doc} E" for doc in docs), query, "R"])

    monkeypatch.setattr(listwise, "build_prompt", build_prompt)
    # blocks by the published rule: 14 tokens less 2 copies of the 2-word query leave 10; after
    # documents of 3, 2 and 1 words 4 are left, at most one document's 4: one block of all three
    settings = SimpleNamespace(max_query_length=50, max_doc_length=4, context_length=14, block_size=10,
                               block_query_copies=2)  # fmt: skip
    model = SimpleNamespace(
        tokenizer=WordTokenizer(), settings=settings, device="cpu", embed_id=1, rerank_id=2,
        backbone=lambda input_ids, output_hidden_states: SimpleNamespace(
            hidden_states=[torch.arange(input_ids.shape[1] * 2.0).view(1, -1, 2)]
        ),
        projector=lambda states: states,
    )  # fmt: skip
    texts = (f"wb wc{EMBED_TOKEN} wd", f"we {RERANK_TOKEN}wf", "wg")
    request = RerankRequest("q0", f"wa {RERANK_TOKEN}wb{EMBED_TOKEN}", ("0", "1", "2"), texts, (0, 1, 2))
    scores, tokens = listwise.reference_style_scores(model, request)
    assert built == [("wa wb", ["wb wc wd", "we wf", "wg"])]
    assert tokens == 3 + 1 + 2 + 1 + 1 + 1 + 2 + 1  # documents and their E, query and its R
    assert scores.shape == (3,) and scores.dtype == np.float32


# -- bench/listwise.py: the paths and what run_bench runs ------------------------------------------------


class Recorded:
    """A listwise reranker of no model that writes down what the bench does with it: prompts of 2
    tokens a candidate, two queries a call."""

    queries_per_call = 2
    attention = "eager"  # (not the default SDPA)

    def __init__(self, events: list, dtype: torch.dtype = torch.float32, **settings) -> None:
        self.events, self.dtype = events, dtype
        names = ("fused_rms_norm", "trim_last_layer", "compile_elementwise", "pad_multiple", "pack_blocks")
        self.settings = SimpleNamespace(**{name: settings.get(name) for name in names})

    def _blocks(self, requests):
        return [SimpleNamespace(input_ids=[0] * 2 * len(r.texts)) for r in requests]

    def use_published_modules(self, on: bool) -> None:
        self.events.append(("published", on))

    def forget_documents(self) -> None:
        self.events.append("forget")


def fake_requests(count: int, candidates: int = 3) -> list[SimpleNamespace]:
    return [SimpleNamespace(qid=f"q{i}", texts=("d",) * candidates) for i in range(count)]


@pytest.fixture
def no_measuring(monkeypatch):
    """Model FLOPs and peaks that need no backbone, a clock that moves 1 s a reading; each peak
    reset written down."""
    events: list = []
    ticks = iter(range(1000))
    monkeypatch.setattr(listwise, "time", SimpleNamespace(perf_counter=lambda: float(next(ticks))))
    monkeypatch.setattr(listwise, "model_flops", lambda model, lengths: float(sum(lengths)))
    monkeypatch.setattr(listwise, "peak_memory", lambda device: 0)
    monkeypatch.setattr(listwise, "reset_peak", lambda device: events.append("reset"))
    return events


def test_the_reference_style_path_runs_transformers_modules_from_a_fresh_peak(monkeypatch, no_measuring):
    """The peak is reset first; every query of the reference-style path runs under the published
    modules, switched back after the last; its token rate counts the prompts' tokens."""
    events = no_measuring
    model = Recorded(events)

    def reference_style_scores(model_, request):
        events.append(("scored", request.qid))
        return np.zeros(3), 0

    monkeypatch.setattr(listwise, "reference_style_scores", reference_style_scores)
    result, scores = listwise.run_reference(model, fake_requests(2), torch.device("cpu"), (None, None))
    assert events == ["reset", ("published", True), ("scored", "q0"), ("scored", "q1"), ("published", False)]
    assert len(scores) == 2
    assert result.tokens_per_second == round(12 / result.seconds, 1)  # 2 prompts of 3 × 2 tokens


def test_our_path_starts_from_a_fresh_peak_and_scores_two_queries_a_call(monkeypatch, no_measuring):
    from rerank_eval.pipeline import score

    events = no_measuring

    def score_with_backoff(model_, chunk, prepared):
        events.append(("scored", [r.qid for r in chunk]))
        return [np.zeros(3) for _ in chunk]

    monkeypatch.setattr(score, "prepared_ahead", lambda model_, chunks: ((c, None) for c in chunks))
    monkeypatch.setattr(score, "score_with_backoff", score_with_backoff)
    result, scores = listwise.run_ours(Recorded(events), fake_requests(3), torch.device("cpu"), (None, None))
    assert events == ["reset", ("scored", ["q0", "q1"]), ("scored", ["q2"])] and len(scores) == 3
    assert result.tokens_per_second == round(18 / result.seconds, 1)


def test_the_second_pass_tokenizes_documents_again_before_each_path(monkeypatch):
    events: list = []
    path = listwise.PathResult(1.0, 0, 0, 0, 0, 0, 0, None, None)
    monkeypatch.setattr(listwise, "run_reference", lambda *a: events.append("reference") or (path, []))
    monkeypatch.setattr(listwise, "run_ours", lambda *a: events.append("ours") or (path, []))
    listwise.timed_again(Recorded(events), fake_requests(1), torch.device("cpu"), (None, None))
    assert events == ["forget", "reference", "forget", "ours"]


@pytest.fixture
def recorded_bench(monkeypatch):
    """run_bench over fake requests and Recorded rerankers; what it runs written down in order.
    Ours scores candidates 0, 1, 2; the float32 model swaps the last two of q1 (tau 1/3 there)."""
    events: list = []
    built: list = []

    def random_reranker(shape, device, dtype, folder, **settings):
        built.append((dtype, settings))
        return Recorded(events, dtype, **settings)

    def scores_of(model, request):
        if model.dtype == torch.float32 and request.qid == "q1" and len(built) == 2:
            return np.array([0.0, 2.0, 1.0])
        return np.arange(3.0)

    def run(name):
        def path(model, requests, device, peaks):
            events.append((name, str(model.dtype).removeprefix("torch."), len(requests)))
            seconds = 4.0 if name == "reference" else 2.0
            return listwise.PathResult(seconds, 0, 0, 0, 0, 0, 0, None, None), [
                scores_of(model, r) for r in requests
            ]

        return path

    monkeypatch.setattr(listwise, "measured_matmul_peak", lambda *a: 1e9)
    monkeypatch.setattr(listwise, "non_embedding_parameters", lambda model: 0)
    monkeypatch.setattr(listwise, "random_reranker", random_reranker)
    monkeypatch.setattr(listwise, "run_ours", run("ours"))
    monkeypatch.setattr(listwise, "run_reference", run("reference"))
    monkeypatch.setattr(listwise.Workload, "requests", lambda self: fake_requests(self.queries))
    return events, built


def test_the_bench_warms_up_on_one_query_then_starts_cold(recorded_bench):
    """Ours runs once on the first query (kernels, compiles), the documents it tokenized are
    forgotten, then the reference-style path and ours run the whole workload."""
    events, _ = recorded_bench
    result = listwise.run_bench("short", "tiny", 5, 3, device="cpu", dtype="float32")
    assert events == [("ours", "float32", 1), "forget", ("reference", "float32", 5), ("ours", "float32", 5)]
    assert result["speedup"] == 2.0 and result["second_pass"] is None


def test_a_float32_bench_is_not_compared_with_float32(recorded_bench):
    """Its rank agreement with its own float32 scores is no measurement: none is run or given."""
    _, built = recorded_bench
    result = listwise.run_bench("short", "tiny", 3, 3, device="cpu", dtype="float32", compare_float32=True)
    assert [dtype for dtype, _ in built] == [torch.float32]
    assert result["kendall_tau_vs_float32"] is None and result["kendall_tau_queries"] is None


def test_a_bfloat16_bench_asked_not_to_compare_builds_no_float32_model(recorded_bench):
    """`compare_float32=False` (the slow float32 run left out) holds in bfloat16 too."""
    events, built = recorded_bench
    result = listwise.run_bench("short", "tiny", 3, 3, device="cpu", dtype="bfloat16", compare_float32=False)
    assert [dtype for dtype, _ in built] == [torch.bfloat16]
    assert result["kendall_tau_vs_float32"] is None and result["kendall_tau_queries"] is None
    assert all(event[1] == "bfloat16" for event in events if event != "forget")


def test_the_bench_settings_reach_the_model_and_the_float32_one_but_packing(recorded_bench):
    """Every kernel setting asked for builds the model and is reported as the model holds it (its
    attention as it runs it); the float32 comparison model gets the same ones, but packed blocks
    (float32 attention on CUDA takes no mask). With 3 queries (fewer than 8) the comparison covers
    all 3: q1's float32 ranks swap two of three candidates (tau 1/3), so tau = (1 + 1/3 + 1) / 3 =
    0.7778 to four places."""
    events, built = recorded_bench
    asked = {"fused_rms_norm": False, "trim_last_layer": False, "compile_elementwise": True,
             "pad_multiple": 8, "pack_blocks": True}  # fmt: skip
    result = listwise.run_bench("short", "tiny", 3, 3, device="cpu", dtype="bfloat16", **asked)
    assert built == [(torch.bfloat16, asked), (torch.float32, {**asked, "pack_blocks": None})]
    assert {name: result["model"][name] for name in asked} == asked
    assert result["model"]["attention"] == "eager"  # the one the model runs
    assert result["kendall_tau_queries"] == 3 and result["kendall_tau_vs_float32"] == 0.7778
    assert events[-1] == ("ours", "float32", 3)


# -- first_stage/dense/jina_kernels.py (the CPU side) ---------------------------------------------------


def test_packed_rows_lay_texts_end_to_end_with_int32_bounds():
    """Ids end to end, positions restarting at 0 for each text, and the cumulative lengths as the
    int32 tensor the varlen kernel takes (and as a tuple for the host)."""
    from rerank_eval.first_stage.dense.jina_kernels import pack

    packed = pack([[5, 6], [7], [8, 9, 10]])
    assert packed.ids.tolist() == [[5, 6, 7, 8, 9, 10]] and packed.ids.dtype == torch.long
    assert packed.positions.tolist() == [[0, 1, 0, 0, 1, 2]]
    assert packed.starts.dtype == torch.int32 and packed.starts.tolist() == [0, 2, 3, 6]
    assert packed.bounds == (0, 2, 3, 6)


def test_packed_attention_on_a_cpu_uses_the_scale_it_is_given():
    """Text by text, with the scale asked for (here 1, not 1/√d = 1/2): each text's output is SDPA's
    over that text alone at that scale."""
    from rerank_eval.first_stage.dense.jina_kernels import Packing, packed_attention

    generator = torch.Generator().manual_seed(4)
    bounds = (0, 3, 5)
    states = [torch.randn(5, 2, 4, generator=generator) for _ in range(3)]
    got = packed_attention(*states, Packing(torch.tensor(bounds, dtype=torch.int32), bounds), 1.0)
    for start, end in itertools.pairwise(bounds):
        alone = torch.nn.functional.scaled_dot_product_attention(
            *(t[start:end].transpose(0, 1) for t in states), scale=1.0
        ).transpose(0, 1)
        assert torch.allclose(got[start:end], alone, atol=1e-6)


def test_the_fused_add_and_layer_norm_keeps_the_norms_epsilon(monkeypatch):
    """LayerNorm(states + residual) with the module's own eps (0.5 here, far from the default
    1e-5); compiled or not is another matter, so it runs eager."""
    from rerank_eval import compiling
    from rerank_eval.first_stage.dense import jina_kernels

    monkeypatch.setattr(compiling, "compiled", lambda function: function)
    generator = torch.Generator().manual_seed(6)
    norm = torch.nn.LayerNorm(8, eps=0.5)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5, generator=generator)
        norm.bias.normal_(0.0, 0.1, generator=generator)
    states, residual = torch.randn(2, 3, 8, generator=generator), torch.randn(2, 3, 8, generator=generator)
    with torch.no_grad():
        got = jina_kernels._add_norm(norm, states, residual)
        assert got.shape == (2, 3, 8)
        assert torch.allclose(got, norm(states + residual), atol=1e-6)


def test_a_varlen_trial_that_gives_nan_is_a_failure(monkeypatch):
    """NaN compares false with every tolerance: a kernel that returns NaN is said to differ, never
    taken for one that agrees."""
    from rerank_eval.first_stage.dense import jina_kernels

    exact = jina_kernels.packed_attention

    def nan_on_the_trial(query, *args):
        out = exact(query, *args)
        return out * float("nan") if query.dtype == torch.bfloat16 else out

    monkeypatch.setattr(jina_kernels, "packed_attention", nan_on_the_trial)
    config = SimpleNamespace(num_attention_heads=2, hidden_size=8)
    assert jina_kernels.packing_failure(config, torch.device("cpu"), torch.float32) is None
    failure = jina_kernels.packing_failure(config, torch.device("cpu"), torch.bfloat16)
    assert failure == "the varlen kernel differs from SDPA by nan on a trial input"


# -- rerankers/listwise/qwen3_kernels.py (the CPU side) ------------------------------------------------


def qwen3(**overrides):
    """A 2-layer Qwen3 backbone with random weights."""
    from transformers import Qwen3Config, Qwen3Model

    config = Qwen3Config(
        vocab_size=40, hidden_size=16, intermediate_size=24, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=1, head_dim=8, max_position_embeddings=64, **overrides,
    )  # fmt: skip
    config._attn_implementation = "sdpa"
    torch.manual_seed(0)
    return Qwen3Model(config).eval()


def test_the_fused_rms_norm_keeps_the_norms_epsilon():
    """One kernel with the module's own epsilon (0.25 here, far from the default 1e-6): on rows of
    mean square near 0.25 the two give the same values."""
    from transformers.models.qwen3.modeling_qwen3 import Qwen3RMSNorm

    from rerank_eval.rerankers.listwise.qwen3_kernels import use_fused_rms_norm

    norm = Qwen3RMSNorm(16, eps=0.25)
    holder = torch.nn.Sequential(norm)
    hidden = torch.randn(3, 16, generator=torch.Generator().manual_seed(8)) * 0.5
    with torch.no_grad():
        expected = holder(hidden)
        assert use_fused_rms_norm(holder, True) == 1
        assert torch.allclose(holder(hidden), expected, atol=1e-6)


def test_the_compiled_attention_refuses_a_key_value_cache():
    """It keeps no cache: handed one (by either name transformers uses) it says so."""
    from rerank_eval.rerankers.listwise.qwen3_kernels import use_compiled_elementwise

    model = qwen3()
    use_compiled_elementwise(model, True)
    attention = model.layers[0].self_attn
    cos_sin = (torch.ones(1, 3, 8), torch.zeros(1, 3, 8))
    for name in ("cache", "past_key_values"):
        with pytest.raises(ValueError, match="keeps no key/value cache"):
            attention(
                torch.zeros(1, 3, 16), position_embeddings=cos_sin, attention_mask=None, **{name: object()}
            )


def test_only_a_silu_mlp_is_switched_to_the_compiled_kernel():
    """The compiled MLP computes SiLU(gate) × up: an MLP of another activation keeps transformers'
    module, while the attentions are switched."""
    from transformers.models.qwen3.modeling_qwen3 import Qwen3Attention, Qwen3MLP

    from rerank_eval.rerankers.listwise.qwen3_kernels import use_compiled_elementwise

    model = qwen3(hidden_act="gelu")
    use_compiled_elementwise(model, True)
    assert all(type(m) is Qwen3MLP for m in model.modules() if isinstance(m, Qwen3MLP))
    assert all(type(m) is not Qwen3Attention for m in model.modules() if isinstance(m, Qwen3Attention))


def test_the_trimmed_last_layer_of_a_compiled_backbone_runs_the_compiled_kernel(monkeypatch):
    """Trimmed and compiled together, the last layer's queries and keys go through the compiled
    norm-and-rotary kernel as every other layer's do (recorded here; computed eager)."""
    from rerank_eval import compiling
    from rerank_eval.rerankers.listwise import qwen3_kernels

    asked: list[bool] = []
    eager = qwen3_kernels.normed_rotated

    def recorded(norm, states, cos, sin, compiled):
        asked.append(compiled)
        return eager(norm, states, cos, sin, False)

    monkeypatch.setattr(qwen3_kernels, "normed_rotated", recorded)
    monkeypatch.setattr(compiling, "compiled", lambda function, every_size_dynamic=False: function)
    model = qwen3()
    qwen3_kernels.use_trimmed_last_layer(model, True)
    qwen3_kernels.use_compiled_elementwise(model, True)
    with torch.inference_mode(), qwen3_kernels.last_layer_at(model, torch.tensor([[1, 4]])):
        out = model(input_ids=torch.tensor([[1, 2, 3, 4, 5]]), use_cache=False).last_hidden_state
    assert out.shape == (1, 2, 16)
    assert asked == [True] * 4  # queries and keys of 2 layers


def test_the_sequence_starts_given_reach_the_trimmed_layers_mask(monkeypatch):
    """With sequences packed in a row, the starts handed to `last_layer_at` are what the trimmed
    layer bounds each kept position's keys by (its only guard where attention takes no mask)."""
    from rerank_eval.rerankers.listwise import qwen3_kernels

    used = []
    allowed_keys = qwen3_kernels._allowed_keys

    def recorded(keep, length, attention_mask, window, starts):
        used.append(starts)
        return allowed_keys(keep, length, attention_mask, window, starts)

    monkeypatch.setattr(qwen3_kernels, "_allowed_keys", recorded)
    model = qwen3()
    qwen3_kernels.use_trimmed_last_layer(model, True)
    keep, starts = torch.tensor([[1, 4]]), torch.tensor([[0, 3]])
    with torch.inference_mode(), qwen3_kernels.last_layer_at(model, keep, starts):
        model(input_ids=torch.tensor([[1, 2, 3, 4, 5]]), use_cache=False)
    assert len(used) == 1 and used[0] is starts
