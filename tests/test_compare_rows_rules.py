"""Rules of `rerank-eval compare`'s choice of baseline a mutation round found untested: a
--baseline naming none of the compared runs is refused with the runs it could name, and both
refusals of a --baseline name the flag on the command line (its library parameter otherwise)."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from rerank_eval.cli import app
from rerank_eval.errors import ParameterError
from rerank_eval.reporting.compare.comparison import Comparison
from rerank_eval.results.folder import load_results
from tests.test_comparison import make_result
from tests.test_hostile_input import one_line_error


def error_line(*args) -> str:
    """The one error line `rerank-eval compare ARGS` ends with (exit 2, no traceback)."""
    return one_line_error(CliRunner().invoke(app, ["compare", *map(str, args)])).removeprefix("error: ")


def test_a_baseline_naming_none_of_the_runs_is_refused_with_the_runs_it_could_name(tmp_path):
    """--baseline of a name no compared run has (label or folder): refused as the baseline
    parameter's problem, listing the compared runs' labels, not a crash or another run chosen."""
    base = make_result(tmp_path, "base", 0.0, noise=0.0, datasets=["scifact"])
    other = make_result(tmp_path, "other", 0.05, seed=1, datasets=["scifact"])
    with pytest.raises(ParameterError) as raised:
        Comparison(load_results([base, other]), baseline="nope")
    assert raised.value.parameter == "baseline"
    assert str(raised.value) == "baseline 'nope' is none of the compared runs (base, other)"
    assert error_line(base, other, "--baseline", "nope") == (
        "--baseline 'nope' is none of the compared runs (base, other)"
    )


def test_a_baseline_naming_several_runs_is_refused_naming_the_flag(tmp_path):
    """A folder name two runs share, given as --baseline: the command's error line names
    --baseline (the one thing to change), then the runs' labels to pick from."""
    made = [make_result(tmp_path / top, "bm25", 0.0, datasets=["scifact"], seed=i)
            for i, top in enumerate(("one", "two"))]  # fmt: skip
    with pytest.raises(ParameterError) as raised:
        Comparison(load_results(made), baseline="bm25")
    assert raised.value.parameter == "baseline"
    assert error_line(*made, "--baseline", "bm25") == (
        "--baseline 'bm25' names 2 of the compared runs; give one of one/bm25, two/bm25"
    )
