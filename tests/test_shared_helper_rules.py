"""Shared helpers at their edges: what a name or path may be and what lies inside a folder, the
type checks on untrusted values, when torch.compile is used, a result folder's checks, how a
comparison labels and groups its columns, reranker settings and the batching helpers. Each test
pins a rule with values worked out by hand (a mutation round over these modules)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from rerank_eval import compiling
from rerank_eval.errors import UserError
from rerank_eval.models import common
from rerank_eval.paths import (
    data_file_problem,
    file_name,
    fills_only,
    inside,
    lies_inside,
    name_problem,
    refuse_special_file,
    repository_path_problem,
    special_file_kind,
)
from rerank_eval.reporting.compare.columns import RunColumn, labelled
from rerank_eval.reporting.compare.suite_view import suite_view
from rerank_eval.rerankers.settings import (
    InstructedSettings,
    ListwiseSettings,
    NoSettings,
    PointwiseSettings,
    read_settings,
)
from rerank_eval.results.checks import consistency_problem, per_query_problem
from rerank_eval.results.folder import _per_query_table
from rerank_eval.results.manifest import read_manifest
from rerank_eval.typed import declared_length, is_kind, is_positive_integer
from tests.test_hostile_input import saved_result

# -- names and paths -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["a", "9", "a" * 128, "a.b_c+d-e", "x.y"])
def test_a_name_of_letters_digits_and_dot_underscore_plus_dash_is_accepted(name):
    """A name starting with a letter or digit, of at most 128 such characters, names a file."""
    assert name_problem(name) is None


@pytest.mark.parametrize(
    "name",
    ["a" * 129, ".hidden", "-x", "_x", "a/b", "ab/", "a..b", "a b", 123, None, ""],
)
def test_a_name_that_could_leave_its_folder_or_is_no_text_is_refused(name):
    """129 characters, a leading dot, dash or underscore, a slash anywhere (also at the end), `..`,
    a space and anything not a string are refused in one sentence naming the value."""
    problem = name_problem(name)
    assert problem == (
        f"{name!r} cannot be used as a name: use letters, digits and . _ + - (starting with a "
        "letter or digit, no '..', at most 128 characters)"
    )


def test_a_repository_path_is_plain_relative_parts():
    """`runs/bm25.trec` is a path inside a repository; absolute paths, backslashes, empty parts
    (`a//b`, a trailing slash), `.` and `..` parts are not."""
    assert repository_path_problem("runs/bm25.trec") is None
    assert repository_path_problem("a..b/c.d") is None
    for path in [
        "/etc/passwd",
        "a\\b",
        "runs/../../x",
        "..",
        "a//b",
        "runs/",
        "./a",
        "a/./b",
        "",
    ]:
        problem = f"{path!r} is not a path inside the repository (no '..', not absolute)"
        assert repository_path_problem(path) == problem


@pytest.mark.parametrize(
    ("template", "fills"),
    [
        ("runs/{key}.trec", True),
        ("plain.trec", True),
        ("{key}-{split}", True),
        ("{key!r}", False),  # a conversion
        ("{key:>9}", False),  # a format spec (a width asks for memory)
        ("{other}", False),
        ("{key.__class__}", False),
        ("{key[0]}", False),
        ("{}", False),
        ("{key}{other}", False),
        ("{key", False),  # an unmatched brace
    ],
)
def test_a_template_fills_only_plain_named_fields(template, fills):
    """Only plain `{key}` and `{split}` fields may be filled; any other field, an attribute, an
    index, a conversion, a spec or an unmatched brace makes the template unusable."""
    assert fills_only(template, ("key", "split")) is fills


@pytest.mark.parametrize(
    ("text", "name"),
    [
        ("BAAI/bge-reranker-v2-m3", "BAAI_bge-reranker-v2-m3"),
        ("a+b.c_d", "a+b.c_d"),
        ("", "_"),
        (".", "_."),
        ("..", "_.."),
        ("...", "_..."),
        ("../x", ".._x"),
        ("é", "_"),
    ],
)
def test_free_text_becomes_a_file_name_that_stays_in_its_folder(text, name):
    """Anything but letters, digits and . _ + - becomes _, an empty name is `_`, a name of dots only
    is prefixed with `_`."""
    assert file_name(text) == name


def test_a_file_name_from_free_text_is_at_most_128_characters():
    """Long free text is cut to 128 characters."""
    assert file_name("x" * 300) == "x" * 128


def test_what_lies_inside_a_folder_is_told_by_resolved_paths(tmp_path):
    """The root itself and places under it lie inside; a sibling whose name starts with the root's,
    a `..` leaving it and a symlink inside pointing out do not."""
    root = tmp_path / "out"
    (root / "sub").mkdir(parents=True)
    (tmp_path / "outside").mkdir()
    (root / "link").symlink_to(tmp_path / "outside")
    assert lies_inside(root, root)
    assert lies_inside(root, root / "sub" / "file.txt")
    assert not lies_inside(root, tmp_path / "outer")
    assert not lies_inside(root, tmp_path / "out-x" / "f")
    assert not lies_inside(root, root / ".." / "f")
    assert not lies_inside(root, root / "link" / "f")
    assert inside(root, root / "sub") == root / "sub"
    with pytest.raises(UserError) as refused:
        inside(root, root / "link" / "f")
    assert str(refused.value) == f"refusing to write {root / 'link' / 'f'}: it lies outside {root}"


def test_special_files_are_named_for_what_they_are(tmp_path):
    """A folder, a FIFO (also behind a symlink), a device and a symlink loop are named; a regular
    file and a missing path are None."""
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    (tmp_path / "to-fifo").symlink_to(fifo)
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    (tmp_path / "file").write_text("x")
    assert special_file_kind(tmp_path) == "a directory"
    assert special_file_kind(fifo) == "a FIFO (named pipe)"
    assert special_file_kind(tmp_path / "to-fifo") == "a FIFO (named pipe)"
    assert special_file_kind(Path("/dev/null")) == "a character device"
    assert special_file_kind(tmp_path / "loop") == "a symlink loop"
    assert special_file_kind(tmp_path / "file") is None
    assert special_file_kind(tmp_path / "missing") is None
    with pytest.raises(UserError, match=r"^the qrels file is a directory, not a file$"):
        refuse_special_file(tmp_path, "the qrels file")
    refuse_special_file(tmp_path / "missing", "the qrels file")


def test_a_data_file_of_exactly_its_limit_is_read_and_one_byte_more_is_not(tmp_path):
    """The limit is inclusive; sizes are written with thousands separators; a missing file and a
    folder are said to be so."""
    path = tmp_path / "data"
    path.write_bytes(b"x" * 1000)
    assert data_file_problem(path, 1000) is None
    path.write_bytes(b"x" * 1001)
    assert data_file_problem(path, 1000) == "holds 1,001 bytes, more than 1,000"
    assert data_file_problem(tmp_path / "missing", 1000) == "is missing"
    assert data_file_problem(tmp_path, 1000) == "is a directory"


# -- typed values ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "kind", "expected"),
    [
        (True, bool, True),
        (1, bool, False),
        (True, int, False),
        (True, float, False),
        (True, str, False),
        (2, int, True),
        (2.0, int, False),
        (2, float, True),
        (2.5, float, True),
        (float("nan"), float, False),
        (float("inf"), float, False),
        (10**400, float, False),  # beyond every float
        ("x", str, True),
        ({}, dict, True),
    ],
)
def test_a_value_is_of_a_kind_as_json_and_yaml_mean_it(value, kind, expected):
    """A bool only where a bool is asked; an int (never a bool) for int; a finite int or float for
    a number."""
    assert is_kind(value, kind) is expected


def test_a_positive_integer_and_a_declared_length():
    """At least 1, an int and no bool; a declared length below 10**9 is one, 10**9 and more (and
    transformers' int(1e30)) declare none."""
    assert [is_positive_integer(v) for v in (1, 0, -1, True, 1.0, "1")] == [True] + [False] * 5
    assert declared_length(512) == 512
    assert declared_length(10**9 - 1) == 10**9 - 1
    assert declared_length(10**9) is None
    assert declared_length(int(1e30)) is None
    assert [declared_length(v) for v in (True, 0, -5, 512.0, None)] == [None] * 5


# -- torch.compile ---------------------------------------------------------------------------------


def test_compiling_is_the_default_on_cuda_with_triton_only(monkeypatch):
    """Compiled by default only where the device is CUDA and Triton is there; never on a CPU."""
    import torch.utils._triton as triton

    monkeypatch.setattr(triton, "has_triton", lambda: True)
    assert compiling.compile_by_default(torch.device("cuda"))
    assert not compiling.compile_by_default(torch.device("cpu"))
    monkeypatch.setattr(triton, "has_triton", lambda: False)
    assert not compiling.compile_by_default(torch.device("cuda"))


def test_a_failed_trial_is_its_first_line_and_trials_run_in_inference_mode():
    """A failure is `Type: first line` (leading blank lines skipped, an empty message kept empty);
    the trial runs in inference mode, as the real calls do."""

    def failing(message):
        def trial():
            raise ValueError(message)

        return trial

    cpu = torch.device("cpu")
    assert compiling.trial_failure(failing("\n\nno compiler\nmore detail"), cpu) == "ValueError: no compiler"
    assert compiling.trial_failure(failing(""), cpu) == "ValueError: "
    seen = []
    assert compiling.trial_failure(lambda: seen.append(torch.is_inference_mode_enabled()), cpu) is None
    assert seen == [True]


def test_rotary_is_transformers_formula():
    """states * cos + rotate_half(states) * sin, rotate_half being (-second half, first half)."""
    states = torch.tensor([[[1.0, 2.0, 3.0, 4.0]]])  # one token, one head, d = 4
    cos = torch.tensor([[0.5, 0.5, 0.5, 0.5]])
    sin = torch.tensor([[1.0, 1.0, 1.0, 1.0]])
    # rotate_half: (-3, -4, 1, 2); 0.5 * (1, 2, 3, 4) + (-3, -4, 1, 2)
    assert compiling.rotary(states, cos, sin).tolist() == [[[-2.5, -3.0, 2.5, 4.0]]]


# -- a result folder's checks ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> Path:
    return saved_result(tmp_path_factory.mktemp("saved"))


def problem_of(saved: Path, edit_manifest=None, edit_table=None) -> str | None:
    """What the checks say of the saved result (bm25 over the scifact fixture: 3 judged queries,
    nDCG@10, R@100 and Judged@10 at both stages) after the edits."""
    data = json.loads((saved / "manifest.json").read_text())
    if edit_manifest:
        edit_manifest(data)
    frame, _ = _per_query_table(saved / "per_query.csv")
    if edit_table:
        frame = edit_table(frame)
    return per_query_problem(frame) or consistency_problem(read_manifest(data, "manifest.json"), frame)


def test_the_saved_result_passes_its_checks(saved):
    assert problem_of(saved) is None


def test_a_value_that_is_no_finite_number_or_negative_is_named_by_its_line(saved):
    """inf and nan are no finite numbers and -0.5 is negative; the line counts the header (row 0
    is line 2); 0 is a value."""

    def value(row, text):
        def edit(frame):
            frame["value"] = frame["value"].astype(str)
            frame.loc[row, "value"] = text
            return frame

        return edit

    assert problem_of(saved, edit_table=value(1, "inf")) == "line 3: value 'inf' is not a finite number"
    assert problem_of(saved, edit_table=value(0, "nan")) == "line 2: value 'nan' is not a finite number"
    assert problem_of(saved, edit_table=value(2, "-0.5")) == "line 4: value '-0.5' is negative"
    assert per_query_problem(_zeroed(saved)) is None


def _zeroed(saved: Path):
    frame, _ = _per_query_table(saved / "per_query.csv")
    frame["value"] = 0.0
    return frame


def test_one_query_id_in_two_datasets_is_no_duplicate():
    """A duplicate is the same (dataset, stage, measure, query); the same query id in two datasets
    is not one."""
    import pandas as pd

    frame = pd.DataFrame(
        {
            "dataset": ["a", "b"],
            "stage": ["reranked"] * 2,
            "measure": ["nDCG@10"] * 2,
            "query_id": ["1", "1"],
        }
        | {"value": [0.5, 0.5]}
    )
    assert per_query_problem(frame) is None


def test_a_manifest_without_complete_and_records_at_their_edges_are_read(saved):
    """A manifest without `complete` (older runs), every judged query without a run, a rerank time
    of 0 and published figures of exactly 0 and 1 are what runs write."""

    def edit(data):
        del data["complete"]
        record = data["datasets"][0]
        record["coverage"]["queries_without_run"] = record["coverage"]["judged_queries"]
        record["timings"]["rerank_seconds"] = 0
        record["first_stage"] |= {
            "reference_ndcg10": 0,
            "reference_r100": 1,
            "group_reference_ndcg10": 0,
        }

    assert problem_of(saved, edit) is None


def test_a_group_figure_that_is_no_fraction_is_refused(saved):
    """The group's published nDCG@10 is checked like the dataset's own figures."""

    def edit(data):
        data["datasets"][0]["first_stage"]["group_reference_ndcg10"] = 1.5

    assert problem_of(saved, edit) == (
        "manifest.json's dataset 'scifact': a published first-stage figure is not between 0 and 1"
    )


def test_a_metric_the_measures_lack_and_no_datasets_are_refused(saved):
    """protocol.metrics must be among protocol.measures; a manifest must list datasets."""

    def metric(data):
        data["protocol"]["metrics"] = ["nDCG@10", "MRR@10"]

    def no_datasets(data):
        data["datasets"] = []

    lacks = "manifest.json's protocol.metrics names 'MRR@10', which protocol.measures lacks"
    assert problem_of(saved, metric) == lacks
    assert problem_of(saved, no_datasets) == "manifest.json lists no datasets"


def test_a_query_swapped_in_one_measure_or_a_stage_missing_is_refused(saved):
    """Every (stage, measure) must hold the same judged queries, both stages included."""

    swapped = []

    def swap(frame):
        rows = frame.index[(frame.stage == "reranked") & (frame.measure == "R@100")]
        swapped.append(frame.loc[rows[0], "query_id"])
        frame.loc[rows[0], "query_id"] = "~not-a-query"  # (sorts after every id of the fixture)
        return frame

    def no_first_stage(frame):
        return frame[frame.stage != "first_stage"].reset_index(drop=True)

    assert problem_of(saved, edit_table=swap) == (
        f"per_query.csv holds query {swapped[0]!r} of scifact for some measures, not all"
    )
    assert problem_of(saved, edit_table=no_first_stage) == (
        "per_query.csv holds 0 values of scifact (first_stage, Judged@10); the manifest records 3"
    )


def test_a_fraction_above_1_by_more_than_rounding_is_refused_at_its_line(saved):
    """1.0005 is no rounding of a fraction; the line counts the header."""

    def raise_one(frame):
        row = frame.index[(frame.stage == "reranked") & (frame.measure == "nDCG@10")][0]
        frame.loc[row, "value"] = 1.0005
        return frame

    frame, _ = _per_query_table(saved / "per_query.csv")
    row = frame.index[(frame.stage == "reranked") & (frame.measure == "nDCG@10")][0]
    query = frame.loc[row, "query_id"]
    assert problem_of(saved, edit_table=raise_one) == (
        f"per_query.csv line {row + 2}: nDCG@10 1.0005 of query {query} is above 1"
    )


# -- a comparison's columns and suite --------------------------------------------------------------


def column(label: str, shown: str, path: str | None = None, manifest=None, groups=None) -> RunColumn:
    return RunColumn(
        label,
        Path(shown).name,
        Path(path or shown),
        Path(shown),
        manifest,
        {},
        groups or {},
    )


def test_runs_sharing_a_model_name_are_told_apart_by_the_shortest_distinct_path_end():
    """Two `bm25` runs in folders `one/bm25` and `two/bm25` are labelled by two path parts; a run
    with its own name keeps it."""
    columns = labelled(
        [
            column("bm25", "/r/one/bm25"),
            column("bm25", "/r/two/bm25"),
            column("minilm", "/r/one/minilm"),
        ]
    )
    assert [c.label for c in columns] == ["one/bm25", "two/bm25", "minilm"]


def test_a_label_equal_to_a_reserved_one_or_to_another_runs_is_replaced_by_its_folder():
    """A run named like a published column takes its folder name; a folder name that is another
    run's label or a reserved one is not taken either (all runs sharing a name go one part further)."""
    assert [c.label for c in labelled([column("BM25", "/r/a/run1")], reserved=["BM25"])] == ["run1"]
    columns = labelled([column("x", "/r/a/minilm"), column("x", "/r/b/y"), column("minilm", "/r/c")])
    assert [c.label for c in columns] == ["a/minilm", "b/y", "minilm"]
    columns = labelled([column("x", "/r/a/BM25"), column("x", "/r/b/y")], reserved=["BM25"])
    assert [c.label for c in columns] == ["a/BM25", "b/y"]


def test_a_result_given_twice_is_refused_and_paths_that_cannot_tell_runs_apart_too():
    """One result (one resolved path) given twice is refused; where every path end is
    the same once escaped, the run is refused rather than given a label twice."""
    with pytest.raises(UserError, match="is given twice"):
        labelled([column(label, f"/r/{label}", "/real/x") for label in "ab"])
    with pytest.raises(UserError) as refused:
        labelled([column("m", "/r/a\x01"), column("m", "/r/a\\x01")])
    assert str(refused.value) == "cannot tell the result /r/a\x01 from the others by its path; rename it"


def test_a_label_with_a_control_character_is_written_as_its_escape():
    """A line break in a folder name shows as `\\n` in the label, not as the two quotes of repr."""
    columns = labelled([column("m", "/r/a\nb"), column("m", "/r/c")])
    assert [c.label for c in columns] == ["a\\nb", "c"]


def run_of(suite: dict, datasets: list[tuple[str, bool]], raw_groups: bool = True) -> RunColumn:
    """A run of a suite named `suite["name"]` (not a packaged one) holding `datasets`."""
    suite_record = SimpleNamespace(
        name=suite["name"], average_label=suite.get("average_label", "Avg"), keys=suite.get("keys", []),
        groups=suite.get("groups", {}),
    )  # fmt: skip
    records = [SimpleNamespace(key=key, in_average=average, row_name=key) for key, average in datasets]
    raw = {"suite": {"groups": suite_record.groups} if raw_groups else {}}
    manifest = SimpleNamespace(suite=suite_record, datasets=records, raw=raw)
    rows = {key: key for key, _ in datasets}
    return column("m", f"/r/{suite['name']}-{len(datasets)}", manifest=manifest, groups=rows)


def test_a_suites_order_and_headline_rows_come_from_runs_of_the_baselines_suite_alone():
    """Order: the first run of the baseline's suite (same name and average label) recording one;
    headline rows: datasets in the average of those runs only."""
    baseline = run_of({"name": "mine"}, [("a", True)])
    same = run_of({"name": "mine", "keys": ["b", "a"]}, [("b", True), ("c", False)])
    other_label = run_of({"name": "mine", "average_label": "Other", "keys": ["z"]}, [("d", True)])
    other = run_of({"name": "theirs", "keys": ["y"]}, [("e", True)])
    view = suite_view([baseline, other_label, other, same], baseline)
    assert view.order == ["b", "a"]
    assert view.in_average == {"a", "b"}


def test_recorded_groups_merge_and_an_empty_record_is_a_record():
    """Groups of every run are merged member by member in order; `{}` recorded means no groups
    (the packaged suite's are not taken)."""
    one = run_of({"name": "beir", "groups": {"g": ["x", "y"]}}, [("x", True)])
    two = run_of({"name": "beir", "groups": {"g": ["y", "z"]}}, [("z", True)])
    assert suite_view([one, two], one).groups == {"g": ["x", "y", "z"]}
    empty = run_of({"name": "beir", "groups": {}}, [("x", True)])
    assert suite_view([empty], empty).groups == {}


# -- reranker settings -----------------------------------------------------------------------------


def test_settings_take_none_positive_integers_up_to_16m_and_true_or_false():
    """None keeps the default; 1 and 2**24 are taken, 0 and 2**24 + 1 are not; a bool setting takes
    true or false and no 1; a text setting given a number is read as its text, and one given a
    list, a mapping or true is refused (not written out as Python's "['a', 'b']")."""
    assert read_settings(PointwiseSettings, {"max_length": None}, "f") == PointwiseSettings()
    largest = read_settings(PointwiseSettings, {"max_length": 1, "max_batch_tokens": 1 << 24}, "f")
    assert largest.max_batch_tokens == 1 << 24
    for settings, values, message in [
        (
            PointwiseSettings,
            {"max_length": 0},
            "max_length of family f must be a positive integer, got 0",
        ),
        (
            PointwiseSettings,
            {"max_length": (1 << 24) + 1},
            "max_length of family f must be at most 16,777,216, got 16,777,217",
        ),
        (
            ListwiseSettings,
            {"trim_last_layer": 1},
            "trim_last_layer of family f must be true or false, got 1",
        ),
        *[
            (InstructedSettings, {"instruction": value}, f"instruction of family f must be text, got {shown}")
            for value, shown in ((["a", "b"], "['a', 'b']"), ({"a": 1}, "{'a': 1}"), (True, "True"))
        ],
    ]:
        with pytest.raises(UserError) as refused:
            read_settings(settings, values, "f")
        assert str(refused.value) == f"setting {message}"
    assert read_settings(InstructedSettings, {"instruction": 12}, "f").instruction == "12"


def test_an_unknown_setting_is_named_with_what_a_family_accepts():
    """The first unknown name in order is named, with the accepted names or `none`."""
    with pytest.raises(UserError) as refused:
        read_settings(NoSettings, {"zeta": 1, "alpha": 2}, "first-stage-order")
    assert str(refused.value) == "unknown setting 'alpha' for family first-stage-order (accepted: none)"


def test_an_instruction_holding_any_special_string_is_refused():
    """Both of the prompt's special strings are refused in an instruction."""
    from rerank_eval.rerankers.listwise.procedure import SPECIAL_STRINGS

    for special in SPECIAL_STRINGS:
        with pytest.raises(UserError, match="one of the prompt's special strings"):
            ListwiseSettings(instruction=f"rank {special} these")


# -- batching --------------------------------------------------------------------------------------


def test_token_budget_batches_take_longest_first_up_to_exactly_the_budget():
    """Lengths 3, 10, 5, 10, 4 with a budget of 20: 10+10 fill it exactly (2 × 10), then 5 and 4
    and 3 (3 × 5 = 15); with 14, 5 × 3 = 15 is over, so 3 goes alone; an item over the budget
    is a batch of its own; ties keep their order."""
    lengths = [3, 10, 5, 10, 4]
    assert common.token_budget_batches(lengths, 20) == [[1, 3], [2, 4, 0]]
    assert common.token_budget_batches(lengths, 14) == [[1], [3], [2, 4], [0]]
    assert common.token_budget_batches([50, 1], 20) == [[0], [1]]
    assert common.token_budget_batches([], 20) == []


def test_packed_batches_count_each_row_rounded_up_to_its_multiple():
    """Consecutive lengths 3, 4, 5 under a budget of 8: 3 + 4 = 7 fits and 7 + 5 does not; with a
    multiple of 4, 3 + 4 rounds to 8 and still fits, 3 + 4 + 5 = 12 starts again and the count
    restarts there; 3 + 2 = 5 fits a budget of 6 but rounds up to 8, which does not."""
    assert common.packed_batches([3, 4, 5], 8) == [[0, 1], [2]]
    assert common.packed_batches([3, 4, 5], 8, multiple=4) == [[0, 1], [2]]
    assert common.packed_batches([3, 6], 8, multiple=4) == [[0], [1]]
    assert common.packed_batches([4, 4, 4, 4], 8) == [[0, 1], [2, 3]]
    assert common.packed_batches([3, 2], 6) == [[0, 1]]
    assert common.packed_batches([3, 2], 6, multiple=4) == [[0], [1]]


def test_character_groups_fill_their_budget_and_a_longer_text_is_alone():
    """Budget 10: 4 + 6 fill it exactly, 11 goes alone (first or not), counts restart each group."""
    assert common.character_groups([4, 6, 3], 10) == [slice(0, 2), slice(2, 3)]
    assert common.character_groups([11, 2], 10) == [slice(0, 1), slice(1, 2)]
    assert common.character_groups([6, 6, 4], 10) == [slice(0, 1), slice(1, 3)]
    assert common.character_groups([], 10) == []


def test_tokenized_ids_are_cut_to_keep():
    """Each text's ids are cut to the first `keep`."""

    def tokenizer(texts, **options):
        return {"input_ids": [list(range(len(text))) for text in texts]}

    assert common.tokenized(tokenizer, ["abcdef", "ab"], 3) == [[0, 1, 2], [0, 1]]


def test_right_padding_pads_with_the_pad_id_masks_real_tokens_and_rounds_up_the_width():
    """Rows (5, 6, 7) and (8,) padded with 0 ... pad id 9: width 3, or 4 with a multiple of 4; the
    mask is 1 on real tokens only."""
    ids, mask = common.right_padded([[5, 6, 7], [8]], pad_id=9)
    assert ids.tolist() == [[5, 6, 7], [8, 9, 9]]
    assert mask.tolist() == [[1, 1, 1], [1, 0, 0]]
    ids, mask = common.right_padded([[5, 6, 7], [8]], pad_id=9, multiple=4)
    assert ids.tolist() == [[5, 6, 7, 9], [8, 9, 9, 9]]
    assert mask.tolist() == [[1, 1, 1, 0], [1, 0, 0, 0]]
    assert common.rounded_up(5, 4) == 8 and common.rounded_up(8, 4) == 8 and common.rounded_up(1, 1) == 1


def test_dtype_names_and_defaults():
    """bf16, fp16 and fp32 are aliases; bfloat16 is CUDA's default and float32 the CPU's; the CPU
    batch budget is 8,192 tokens."""
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert common.pick_dtype("bf16", cpu) is torch.bfloat16
    assert common.pick_dtype("fp16", cpu) is torch.float16
    assert common.pick_dtype(None, cuda) is torch.bfloat16
    assert common.pick_dtype(None, cpu) is torch.float32
    assert common.default_batch_tokens(cpu) == 8_192


def test_flash_attention_runs_where_installed_on_cuda_in_half_precision(monkeypatch):
    """bf16 and fp16 on CUDA with flash_attn importable: FlashAttention-2; float32, a CPU, or no
    flash_attn: SDPA."""
    import sys
    import types

    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    monkeypatch.setitem(sys.modules, "flash_attn", types.ModuleType("flash_attn"))
    assert common.attention_implementation(cuda, torch.bfloat16) == "flash_attention_2"
    assert common.attention_implementation(cuda, torch.float16) == "flash_attention_2"
    assert common.attention_implementation(cuda, torch.float32) == "sdpa"
    assert common.attention_implementation(cpu, torch.bfloat16) == "sdpa"
    monkeypatch.setitem(sys.modules, "flash_attn", None)  # (an import of it then fails)
    assert common.attention_implementation(cuda, torch.bfloat16) == "sdpa"


def test_a_cuda_index_is_one_of_the_gpus_there_are(monkeypatch):
    """With two GPUs, cuda:1 is the last one there is; cuda:2 is refused naming the count."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert common.pick_device("cuda:1") == torch.device("cuda", 1)
    with pytest.raises(UserError) as refused:
        common.pick_device("cuda:2")
    assert str(refused.value) == "device 'cuda:2': there are 2 CUDA GPU(s), up to cuda:1"


def test_byte_level_pre_tokenizers_split_at_spaces_unless_their_regex_is_off():
    """ByteLevel's use_regex is true unless written false (the tokenizers library's default)."""
    assert common._splits_at_spaces({"type": "ByteLevel"})
    assert not common._splits_at_spaces({"type": "ByteLevel", "use_regex": False})


class WordTokenizer:
    """A tokenizer whose tokens are the words of the text (a whitespace pre-tokenizer)."""

    backend_tokenizer = SimpleNamespace(
        pre_tokenizer=SimpleNamespace(__getstate__=lambda: json.dumps({"type": "WhitespaceSplit"}))
    )

    def __call__(self, text, add_special_tokens, verbose):
        return {"input_ids": text.split()}


def test_a_bounded_prefix_holds_more_than_eight_tokens_beyond_those_asked():
    """Words of 12 letters and a space, 5 tokens asked: the first cut, at character 168 (from
    (5 + 16) × 8), holds 13 words, exactly 5 + 8, which leaves no room, so the prefix doubles to the
    next cut after 336: 26 words."""
    text = " ".join(["abcdefghijkl"] * 80)
    prefix = common.bounded_text(WordTokenizer(), text, 5)
    assert len(prefix.split()) == 26 and text.startswith(prefix + " ")


@pytest.mark.parametrize(
    "measure", ["RR@10", "P@5", "AP", "R@100", "Success@1", "Judged@10", "Bpref", "ERR@10"]
)
def test_every_fraction_measure_above_1_is_refused_and_a_count_is_not(measure):
    """Each measure whose values are fractions is refused at 1.5 (line 2: the first row); a count
    such as NumRet is unbounded."""
    import pandas as pd

    from rerank_eval.evaluation.measures import parse_measures
    from rerank_eval.results.checks import _range_problem

    names = [measure, "NumRet"]
    measures = dict(zip(names, parse_measures(names), strict=True))
    frame = pd.DataFrame({"measure": names, "value": [1.5, 7.0], "query_id": ["q1", "q1"]})
    assert _range_problem(frame, measures) == f"per_query.csv line 2: {measure} 1.5 of query q1 is above 1"
    assert _range_problem(frame[frame.measure == "NumRet"], measures) is None


def test_checked_values_are_numbers_afterwards():
    """A table whose values came as text holds them as numbers once checked (the range check and
    every mean read them as such)."""
    import pandas as pd

    frame = pd.DataFrame(
        {
            "dataset": ["a"],
            "stage": ["reranked"],
            "measure": ["nDCG@10"],
            "query_id": ["1"],
            "value": ["0.25"],
        }
    )
    assert per_query_problem(frame) is None
    assert frame["value"].tolist() == [0.25]


def test_an_elementwise_function_is_compiled_once_for_every_shape(monkeypatch):
    """torch.compile is called once per function (later calls reuse it); asked, with every size
    dynamic."""
    calls = []
    monkeypatch.setattr(torch, "compile", lambda function, **options: calls.append(options) or function)

    def double(x):
        return 2 * x

    rows_dynamic = compiling.compiled(double)
    assert rows_dynamic is compiling.compiled(double) and calls == [{}]
    assert torch.equal(rows_dynamic(torch.ones(3, 2)), torch.full((3, 2), 2.0))
    assert compiling.compiled(double, every_size_dynamic=True) is double
    assert compiling.compiled(double, every_size_dynamic=True) is double
    assert calls == [{}, {"dynamic": True}]


@pytest.mark.skipif(not (shutil.which("g++") or shutil.which("c++")), reason="needs a C++ compiler")
def test_compiled_rows_are_dynamic_and_widths_constant_whatever_ran_before():
    """One kernel per width, each for any number of rows, even after other widths compiled (left
    to automatic dynamic shapes, a second width would make every size symbolic from then on)."""
    import torch._dynamo

    def scaled(states, weight):
        return states * weight

    torch._dynamo.reset()
    kernel = compiling.compiled(scaled)
    with torch.inference_mode():
        for rows, width in ((3, 4), (5, 8)):
            kernel(torch.ones(rows, width), torch.ones(width))
        with torch._dynamo.config.patch(error_on_recompile=True):
            for rows, width in ((7, 4), (40, 8), (2, 4)):
                assert torch.equal(kernel(torch.ones(rows, width), torch.full((width,), 3.0)),
                                   torch.full((rows, width), 3.0))  # fmt: skip
            with pytest.raises(torch._dynamo.exc.RecompileError):
                kernel(torch.ones(7, 16), torch.ones(16))


def test_a_recorded_order_beats_the_packaged_suites_and_the_packaged_one_fills_in():
    """Runs of the packaged `beir` suite recording their order keep it; where none records one, the
    packaged suite's order is taken (trec-covid first)."""
    recorded = run_of({"name": "beir", "average_label": "BEIR", "keys": ["nq", "scifact"]}, [("nq", True)])
    assert suite_view([recorded], recorded).order == ["nq", "scifact"]
    unrecorded = run_of({"name": "beir", "average_label": "BEIR"}, [("nq", True)])
    assert suite_view([unrecorded], unrecorded).order[:2] == ["trec-covid", "nfcorpus"]


def test_a_run_column_holds_the_reranked_values_of_its_metric_under_an_escaped_model_name(tmp_path):
    """The label is the model name with control characters escaped; the values are the reranked
    stage's of the metric asked for; the path is the folder resolved (a symlink's target) and the
    shown path the folder as given; a metric without values is named with those there are."""
    import pandas as pd

    from rerank_eval.reporting.compare.columns import run_column

    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    frame = pd.DataFrame(
        {
            "dataset": ["d", "d", "d"],
            "stage": ["first_stage", "reranked", "reranked"],
            "measure": ["nDCG@10", "nDCG@10", "R@100"],
            "query_id": ["q", "q", "q"],
            "value": [0.1, 0.2, 0.3],
        }
    )
    manifest = SimpleNamespace(model=SimpleNamespace(name="bad\x1b[31m"), datasets=[])
    saved = SimpleNamespace(folder=tmp_path / "link", manifest=manifest, per_query=frame)
    run = run_column(saved, "nDCG@10")
    assert run.label == "bad\\x1b[31m"
    assert run.values["d"].to_dict() == {"q": 0.2}
    assert run.path == tmp_path.resolve() / "real"
    assert run.shown == tmp_path / "link"
    assert run.folder == "link"
    with pytest.raises(UserError) as refused:
        run_column(saved, "P@5")
    assert str(refused.value).endswith("has no per-query values for P@5; it has: R@100, nDCG@10")
