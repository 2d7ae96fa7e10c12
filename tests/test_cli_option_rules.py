"""Rules of the command line a mutation round on the options and the benchmark command found
untested: each value that moves the numbers reaches the run plan (or the model's loading) exactly
as typed. The plan is read in process: the command's hand-over to the pipeline is replaced by one
that keeps what it was given, so nothing is downloaded, scored or written."""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from rerank_eval.cli import app
from tests.test_hostile_input import one_line_error


def planned(monkeypatch, *args: Any) -> dict[str, Any]:
    """What `rerank-eval ARGS` hands the pipeline (plan, models, out, fresh) and what its loader
    passes to `load_reranker` for the first model."""
    import rerank_eval.rerankers
    from rerank_eval.cli import benchmark

    seen: dict[str, Any] = {}

    def keep(plan, models, load, out, suite, fresh):
        seen.update(plan=plan, models=models, out=out, suite=suite, fresh=fresh)
        load(models[0])
        return [], Path()  # (as a torchrun rank other than 0: nothing to print)

    def loading(name, **given):
        seen["loaded"] = {"name": name, **given}

    monkeypatch.setattr(benchmark, "_published", keep)
    monkeypatch.setattr(rerank_eval.rerankers, "load_reranker", loading)
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return seen


def test_set_reads_true_false_and_none_in_any_case_as_those_values(monkeypatch):
    """`--set pack_blocks=TRUE` is the boolean, not the text "TRUE" (which a boolean setting
    refuses); `none` is no value (the setting's default)."""
    given = {"pack_blocks": "TRUE", "fused_rms_norm": "False", "compile_elementwise": "none"}
    pairs = [x for name, value in given.items() for x in ("--set", f"{name}={value}")]
    loaded = planned(monkeypatch, "beir", "-d", "scifact", "--model", "bm25", *pairs)["loaded"]
    expected = {
        name: {"true": True, "false": False, "none": None}[value.lower()] for name, value in given.items()
    }
    assert {name: loaded[name] for name in given} == expected
    assert all(type(loaded[name]) is type(value) for name, value in expected.items())


def test_device_dtype_and_trust_remote_code_reach_the_model_as_given(monkeypatch):
    """The benchmark commands pass --device, --dtype and --trust-remote-code on to the model's
    loading (the library's tests check what loading does with them); dropped, a run on a chosen
    GPU or in a chosen precision would silently run on the default one."""
    loaded = planned(
        monkeypatch, "beir", "-d", "scifact", "--model", "bm25",
        "--device", "cuda:3", "--dtype", "float16", "--trust-remote-code",
    )["loaded"]  # fmt: skip
    assert (loaded["name"], loaded["device"], loaded["dtype"]) == ("bm25", "cuda:3", "float16")
    assert loaded["trust_remote_code"] is True
    plain = planned(monkeypatch, "beir", "-d", "scifact", "--model", "bm25")["loaded"]
    assert plain["dtype"] is None and plain["trust_remote_code"] is False


def test_first_stage_settings_reach_the_plan_as_typed_with_empty_and_multi_line_values(monkeypatch):
    """`--first-stage-set query_prefix=` sets the prefix to nothing (not refused, not left out),
    and a prefix spanning two lines (as the packaged Qwen3 one does) is a value, not a name holding
    a control character."""
    given = {"query_prefix": "", "passage_prefix": "Passage:\nText: ", "max_length": "64"}
    pairs = [x for name, value in given.items() for x in ("--first-stage-set", f"{name}={value}")]
    plan = planned(
        monkeypatch, "beir", "-d", "scifact", "--model", "bm25", "--first-stage", "bge-base-en-v1.5", *pairs
    )["plan"]
    assert plan.first_stage_override == "bge-base-en-v1.5"
    assert plan.first_stage_settings == given  # (as text: the first stage's kind reads each as its type)


def test_datasets_are_read_around_commas_and_spaces(monkeypatch):
    """`-d "fiqa, scifact"` (a space after the comma, as people write lists) names fiqa and
    scifact; a repeated --datasets adds to the list (run in the suite's order)."""
    plan = planned(monkeypatch, "beir", "-d", " fiqa, scifact ", "-d", "arguana", "--model", "bm25")["plan"]
    suite_order = [d.key for d in plan.suite.datasets if d.key in {"fiqa", "scifact", "arguana"}]
    assert [d.key for d in plan.datasets] == suite_order


def test_fresh_without_out_never_finishes_the_folder_a_stopped_run_left(monkeypatch, tmp_path):
    """Without --out the command finishes the default folder a stopped run of the same command
    line left; with --fresh it scores again in a folder of its own, so it names no command line
    to finish (the stopped run's scores would otherwise be published beside fresh ones)."""
    import rerank_eval.pipeline.execute
    from rerank_eval.cli import benchmark

    claimed = []

    @contextlib.contextmanager
    def claiming(out, models, suite, command=()):
        claimed.append({"out": out, "models": models, "suite": suite, "command": command})
        yield tmp_path / "default"

    monkeypatch.setattr(benchmark, "result_folder", claiming)
    monkeypatch.setattr(rerank_eval.pipeline.execute, "execute_models", lambda *args: [])
    for extra in ([], ["--fresh"]):
        result = CliRunner().invoke(app, ["beir", "-d", "scifact", "--model", "bm25", *extra])
        assert result.exit_code == 0, result.output
    resumable, fresh = claimed
    assert resumable == {"out": None, "models": ["bm25"], "suite": "beir", "command": sys.argv}
    assert fresh == {**resumable, "command": ()}


def test_a_value_may_hold_an_equals_sign_the_name_ends_at_the_first(monkeypatch, tmp_path):
    """NAME=VALUE splits at the first `=`: a prompt, prefix or file name holding `=` is the value,
    whole, never a longer name (`--set instruction=a=b` is the instruction "a=b")."""
    from tests import builders

    run_file = builders.write_run(tmp_path / "k=v.trec", builders.SCIFACT_RUN)
    seen = planned(
        monkeypatch, "beir", "-d", "scifact", "--model", "bm25", "--run", f"scifact={run_file}",
        "--set", "instruction=score=relevance", "--first-stage", "bge-base-en-v1.5",
        "--first-stage-set", "query_prefix=q=",
    )  # fmt: skip
    assert seen["plan"].runs.overrides == {"scifact": run_file}
    assert seen["plan"].first_stage_settings == {"query_prefix": "q="}
    assert seen["loaded"]["instruction"] == "score=relevance"


@pytest.mark.parametrize(
    "pair",
    [
        ["--first-stage-set", "query_prefix"],
        ["--first-stage-set", "=x"],
        ["--set", "=5"],
        ["--run", "scifact"],
    ],
    ids=["no equals sign", "no name", "no setting name", "no run file"],
)
def test_a_pair_without_a_name_or_an_equals_sign_is_refused_in_one_line(tmp_path, pair):
    """`--first-stage-set query_prefix` is no setting of the prefix to nothing (that is
    `query_prefix=`): a pair missing its `=` or its name is refused, naming the flag."""
    out = tmp_path / "out"
    args = [
        "beir",
        "-d",
        "scifact",
        "--model",
        "bm25",
        "--first-stage",
        "bge-base-en-v1.5",
        *pair,
        "--out",
        out,
    ]
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert one_line_error(result) == f"error: {pair[0]} expects NAME=VALUE, got {pair[1]!r}"
    assert not out.exists() and list(tmp_path.iterdir()) == []
