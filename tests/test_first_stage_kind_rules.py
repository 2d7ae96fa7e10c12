"""Rules of the first-stage kind interface (rerank_eval/first_stage/base.py, registry.py,
run_file.py) that a mutation round found unchecked: which values a setting accepts at the edges
of its bounds, what a manifest record holds by default, which published figures a first stage is
checked against, where a user's run file is looked for, and what that file's record says.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pytest

from rerank_eval.config.reader import load_config
from rerank_eval.config.schema import DatasetSpec, FirstStageSpec
from rerank_eval.errors import ParameterError, UserError
from rerank_eval.first_stage.base import (
    BM25_SETTINGS,
    FirstStageRecord,
    FirstStageRequest,
    RunLocation,
    Setting,
    reference_fields,
)
from rerank_eval.first_stage.registry import register, resolve
from rerank_eval.first_stage.run_file import read_user_run
from tests.builders import write_run


@pytest.fixture(scope="module")
def packaged():
    return load_config(None)


def _spec(**fields) -> DatasetSpec:
    return DatasetSpec("scifact", "beir/scifact", "en", None, False, True, **fields)


# -- a setting's bounds ---------------------------------------------------------------------------


def test_a_bound_is_itself_accepted():
    """bounds are (lowest, highest) accepted: both ends are valid values, one step past is not."""
    fraction = Setting(float, bounds=(0.0, 1.0))
    assert fraction.check("b", 0.0) == 0.0
    assert fraction.check("b", 1.0) == 1.0
    with pytest.raises(UserError, match=re.escape("b: must be between 0.0 and 1.0, got 1.01")):
        fraction.check("b", 1.01)
    count = Setting(int, bounds=(1, 8))
    assert (count.check("n", 1), count.check("n", 8)) == (1, 8)


def test_bm25_b_of_one_and_k1_of_zero_are_accepted_from_the_command_line(packaged):
    """b = 1 (full length normalisation) and k1 = 0 (binary term frequency) are BM25 settings in use."""
    tuned = packaged.first_stage("bm25s", {"b": "1", "k1": "0"})
    assert (tuned.settings["b"], tuned.settings["k1"]) == (1.0, 0.0)
    assert tuned.name == "bm25s (b=1.0, k1=0.0)"


def test_bm25_defaults_are_pyserinis():
    """the published runs' parameters: a config entry without k1 and b gets k1 = 0.9, b = 0.4."""
    assert {name: s.default for name, s in BM25_SETTINGS.items()} == {"k1": 0.9, "b": 0.4}
    assert BM25_SETTINGS["b"].bounds == (0.0, 1.0)


def test_a_mistyped_setting_in_a_config_entry_is_refused_not_left_at_its_default(tmp_path):
    """`k_1: 1.2` ignored would run BM25 at k1 = 0.9 under an entry that says otherwise."""
    path = tmp_path / "typo.yaml"
    path.write_text("first_stages:\n  f: {kind: bm25s, k_1: 1.2}\n")
    message = "first_stages.f: unknown setting 'k_1' (did you mean 'k1'?); accepted: b, k1"
    with pytest.raises(UserError, match=re.escape(message)):
        load_config(path)


# -- what a changed setting is checked as ---------------------------------------------------------


def test_a_kinds_own_checks_of_a_change_name_the_entry(packaged):
    """an entry's settings, changed, are checked by its kind under the entry's name."""
    with pytest.raises(ParameterError) as raised:
        packaged.first_stage("jina-embeddings-v3", {"adapters": {"other": "x"}})
    assert raised.value.parameter == "first_stage_settings"
    assert raised.value.problem.startswith("jina-embeddings-v3.adapters: expected {query: SUBFOLDER")


def test_a_kind_is_registered_once():
    from rerank_eval.first_stage.registry import kind

    with pytest.raises(ValueError, match="first stage kind 'bm25s' is registered twice"):
        register(kind("bm25s"))
    assert kind("bm25s").name == "bm25s"


def test_a_trailing_colon_is_an_unknown_entry_not_a_kind(packaged):
    """`KIND:ARGUMENT` needs an argument: `bm25s:` is a mistyped entry name, said with the entries."""
    with pytest.raises(UserError, match="unknown first stage 'bm25s:'; did you mean 'bm25s'"):
        resolve("bm25s:", packaged.first_stages)


# -- the manifest record --------------------------------------------------------------------------


def test_a_record_counts_no_duplicate_lines_and_no_execution_unless_told():
    record = FirstStageRecord(kind="bm25s", label="BM25").to_json()
    assert record["duplicate_lines"] == 0
    assert record["execution"] == {}
    assert record["settings"] is None and record["fallback_from"] is None


def test_reference_fields_take_each_figure_from_its_own_table():
    spec = _spec(reference={"p": 0.5}, reference_r100={"p": 0.8}, group_reference={"p": 0.4})
    assert reference_fields(spec, "p") == {
        "reference_name": "p",
        "reference_ndcg10": 0.5,
        "reference_r100": 0.8,
        "group_reference_ndcg10": 0.4,
    }


def _request(spec: DatasetSpec, reference: tuple[str, ...] | None) -> FirstStageRequest:
    source = None if reference is None else FirstStageSpec("x", "bm25s", "x", reference=reference)
    return FirstStageRequest(spec, source, None, {}, 10)


def test_a_first_stage_is_checked_against_its_first_name_with_an_ndcg_figure():
    spec = _spec(reference_r100={"a": 0.9}, reference={"b": 0.5, "c": 0.6})
    assert _request(spec, ("a", "b", "c")).reference_fields()["reference_name"] == "b"


def test_a_groups_ndcg_figure_counts_as_an_ndcg_figure():
    spec = _spec(reference_r100={"a": 0.9}, group_reference={"g": 0.4})
    fields = _request(spec, ("a", "g")).reference_fields()
    assert (fields["reference_name"], fields["group_reference_ndcg10"]) == ("g", 0.4)


def test_without_an_ndcg_figure_the_first_name_with_any_figure_is_used():
    spec = _spec(reference_r100={"a": 0.9})
    fields = _request(spec, ("z", "a")).reference_fields()
    assert (fields["reference_name"], fields["reference_r100"]) == ("a", 0.9)


def test_a_first_stage_without_a_figure_or_a_source_is_checked_against_nothing():
    spec = _spec(reference={"b": 0.5})
    assert _request(spec, ("z",)).reference_fields() == {}
    assert _request(spec, None).reference_fields() == {}


# -- a user's run file ----------------------------------------------------------------------------


def test_a_run_file_is_named_after_the_key_unless_the_pattern_names_the_run_name(tmp_path):
    spec = _spec(run_name="SciFact")
    assert RunLocation(folder=tmp_path).path_for(spec) == tmp_path / "scifact.trec"
    assert RunLocation(folder=tmp_path, pattern="{name}.run").path_for(spec) == tmp_path / "SciFact.run"
    assert RunLocation(folder=tmp_path, pattern="{name}.run").path_for(_spec()) == tmp_path / "scifact.run"


def test_a_run_file_given_for_the_dataset_comes_before_the_folder(tmp_path):
    mine = tmp_path / "mine.trec"
    assert RunLocation(overrides={"scifact": mine}, folder=tmp_path).path_for(_spec()) == mine
    assert RunLocation().path_for(_spec()) is None


def test_a_run_files_record_names_the_file_its_hash_and_its_duplicates(tmp_path):
    path = write_run(tmp_path / "mine.trec", {"q1": {"d1": 2.0, "d2": 1.0}})
    with path.open("a") as out:
        out.write("q1 Q0 d1 3 0.5 again\n")
    spec = _spec(reference={"p": 0.5})
    run, record = read_user_run(path, RunLocation(reference="p"), spec)
    assert run == {"q1": {"d1": 2.0, "d2": 1.0}}
    assert (record.kind, record.label, record.path) == ("run-file", "run file mine.trec", str(path))
    assert record.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert record.duplicate_lines == 1
    assert (record.reference_name, record.reference_ndcg10) == ("p", 0.5)
    assert record.name is None and record.settings is None


def test_a_missing_run_file_is_said_with_its_dataset(tmp_path):
    with pytest.raises(
        UserError, match=re.escape(f"run file for scifact not found: {tmp_path / 'none.trec'}")
    ):
        read_user_run(tmp_path / "none.trec", RunLocation(), _spec())


def test_a_run_file_without_a_named_reference_is_checked_against_nothing(tmp_path):
    path = write_run(tmp_path / "mine.trec", {"q1": {"d1": 1.0}})
    _, record = read_user_run(path, RunLocation(), _spec(reference={"p": 0.5}))
    assert record.reference_name is None and record.reference_ndcg10 is None
    assert Path(record.path) == path
