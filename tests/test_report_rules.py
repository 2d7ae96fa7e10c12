"""The numbers a report derives from per-query values, and what it reads back from a manifest.

Each test builds a manifest and per-query values by hand and checks an aggregate against a value
worked out here: a group's mean of its members' means, which rows enter the headline average, the
published-figure checks and the depth they need, and which manifest formats are read.
"""

from __future__ import annotations

import copy

import pandas as pd
import pytest

from rerank_eval.errors import UserError
from rerank_eval.reporting.report import Report, models_table, reference_check, report_table
from rerank_eval.results.manifest import command_words, format_for, lasting_record, read_manifest


def record(key: str, *, row: str | None = None, in_average: bool = True, seconds: float = 1.0,
           **first_stage) -> dict:  # fmt: skip
    return {
        "key": key,
        **({"row": row} if row else {}),
        "ir_datasets_id": f"beir/{key}",
        "drop_self_matches": False,
        "in_average": in_average,
        "first_stage": {"kind": "hub", "label": "BM25", **first_stage},
        "coverage": {"judged_queries": 2, "queries_without_run": 0},
        "timings": {"rerank_seconds": seconds},
    }


def manifest(datasets: list[dict], *, top_k: int = 100, average_rows: list[str] | None = None,
             groups: dict | None = None, **extra) -> dict:  # fmt: skip
    return {
        "protocol": {
            "top_k": top_k,
            "metrics": ["nDCG@10"],
            "measures": ["nDCG@10"],
            "candidate_order": "first-stage",
        },
        "suite": {
            "name": "beir",
            "average_label": "BEIR-13",
            "average_rows": average_rows or [],
            **({"groups": groups} if groups else {}),
        },
        "model": {"name": "m"},
        "datasets": datasets,
        **extra,
    }


def frame(values: dict[tuple[str, str, str], list[float]]) -> pd.DataFrame:
    """per_query.csv's rows from {(dataset, stage, measure): per-query values}."""
    return pd.DataFrame.from_records(
        {"dataset": d, "stage": s, "measure": m, "query_id": f"q{i}", "value": v}
        for (d, s, m), values_ in values.items()
        for i, v in enumerate(values_)
    )


def report(data: dict, values: dict) -> Report:
    return Report(read_manifest(data, "manifest.json"), frame(values))


def rows(r: Report) -> dict:
    return {row.name: row for row in r.rows + r.averages}


FORUMS = {
    ("scifact", "first_stage", "nDCG@10"): [0.5, 0.7],
    ("scifact", "reranked", "nDCG@10"): [0.6, 0.8],
    ("forum-a", "first_stage", "nDCG@10"): [0.2, 0.2],
    ("forum-a", "reranked", "nDCG@10"): [1.0, 0.0],
    ("forum-b", "first_stage", "nDCG@10"): [0.4],
    ("forum-b", "reranked", "nDCG@10"): [0.2],
    ("fiqa", "first_stage", "nDCG@10"): [0.1, 0.1],
    ("fiqa", "reranked", "nDCG@10"): [0.1, 0.3],
}


def forums_report(**suite) -> Report:
    datasets = [
        record("scifact", seconds=0.5),
        record("forum-a", row="group", seconds=1.5),
        record("forum-b", row="group", seconds=2.0),
        record("fiqa", in_average=False, seconds=4.0),
    ]
    return report(manifest(datasets, average_rows=["scifact", "group"], **suite), FORUMS)


def test_a_group_row_is_the_mean_of_its_members_means_not_of_their_pooled_queries():
    """CQADupStack's figure is the mean of its forums' means: forum-a (1.0, 0.0) and forum-b (0.2)
    give 0.35, where pooling the three queries would give 0.4. Its queries and seconds add up."""
    group = rows(forums_report())["group"]
    assert group.kind == "group"
    assert group.members == ["forum-a", "forum-b"]
    assert group.value("reranked", "nDCG@10") == pytest.approx(0.35)
    assert group.value("first_stage", "nDCG@10") == pytest.approx(0.3)
    assert (group.queries, group.seconds) == (3, 3.5)


def test_the_headline_average_holds_the_rows_in_it_and_a_second_average_holds_every_row():
    """scifact (0.7) and the group (0.35) are in the headline average: 0.525; fiqa (0.2) is not,
    so a second average of all three rows follows: (0.7 + 0.35 + 0.2) / 3."""
    r = forums_report()
    headline, everything = r.averages
    assert (headline.name, headline.members) == ("BEIR-13", ["scifact", "group"])
    assert headline.value("reranked", "nDCG@10") == pytest.approx(0.525)
    assert headline.value("first_stage", "nDCG@10") == pytest.approx((0.6 + 0.3) / 2)
    assert (headline.queries, headline.seconds) == (5, 4.0)
    assert (everything.name, everything.members) == ("Average, all 3 rows", ["scifact", "group", "fiqa"])
    assert everything.value("reranked", "nDCG@10") == pytest.approx((0.7 + 0.35 + 0.2) / 3)
    assert (everything.queries, everything.seconds) == (7, 8.0)
    assert not headline.in_average and not everything.in_average


def test_an_average_shows_only_the_measures_every_row_in_it_has():
    """A measure one row lacks (R@100 of the first stage, recorded for scifact alone) is absent from
    the average rather than the mean of the rows that have it."""
    values = {**FORUMS, ("scifact", "first_stage", "R@100"): [1.0, 1.0]}
    datasets = [record("scifact"), record("fiqa")]
    r = report(manifest(datasets, average_rows=["scifact", "fiqa"]), values)
    (average,) = r.averages
    assert average.value("first_stage", "R@100") is None
    assert average.value("reranked", "nDCG@10") == pytest.approx((0.7 + 0.2) / 2)


def test_a_group_published_figure_is_its_own_else_the_mean_of_its_members_where_each_has_one():
    """forum-a's published nDCG@10 0.3 and forum-b's 0.5 make the group's 0.4; only forum-a has an
    R@100, so the group has none. A figure published for the whole group (0.45 on both) wins."""
    values = {k: v for k, v in FORUMS.items() if k[0].startswith("forum")}
    members = [
        record("forum-a", row="group", reference_ndcg10=0.3, reference_r100=0.6),
        record("forum-b", row="group", reference_ndcg10=0.5),
    ]
    (group,) = report(manifest(members), values).rows
    assert group.references == pytest.approx({"nDCG@10": 0.4})
    for member in members:
        member["first_stage"]["group_reference_ndcg10"] = 0.45
    (group,) = report(manifest(members), values).rows
    assert group.references == pytest.approx({"nDCG@10": 0.45})
    members[1]["first_stage"]["group_reference_ndcg10"] = None  # one member's first stage lacks it
    (group,) = report(manifest(members), values).rows
    assert group.references == pytest.approx({"nDCG@10": 0.4})


def published(top_k: int, first_stage_ndcg: list[float], **figures) -> Report:
    values = {
        ("scifact", "first_stage", "nDCG@10"): first_stage_ndcg,
        ("scifact", "reranked", "nDCG@10"): [0.9, 0.9],
        ("scifact", "first_stage", f"R@{top_k}"): [0.5, 0.7],
        ("fiqa", "first_stage", "nDCG@10"): [0.1, 0.1],
        ("fiqa", "reranked", "nDCG@10"): [0.1, 0.3],
    }
    datasets = [record("scifact", reference_name="pyserini", **figures), record("fiqa")]
    return report(manifest(datasets, top_k=top_k, average_rows=["scifact", "fiqa"]), values)


def test_a_published_figure_is_checked_at_the_depth_it_was_published_at_and_no_shallower():
    """R@100 is checked in a top-100 run (its recall is R@100) and not in a top-50 one, whose
    recall is R@50; nDCG@10 is checked from a top-10 run on."""
    assert published(100, [0.7, 0.7], reference_ndcg10=0.7, reference_r100=0.6).checked_measures == [
        "nDCG@10",
        "R@100",
    ]
    assert published(50, [0.7, 0.7], reference_ndcg10=0.7, reference_r100=0.6).checked_measures == ["nDCG@10"]
    assert published(10, [0.7, 0.7], reference_ndcg10=0.7).checked_measures == ["nDCG@10"]
    assert published(100, [0.7, 0.7]).checked_measures == []


def test_the_published_check_column_says_ok_within_the_tolerance_else_the_difference():
    """scifact's first stage 0.7320 against a published 0.7325 is OK (exactly the tolerance away);
    0.7300 shows its difference -0.0025; R@100 0.6 against 0.61 shows -0.0100; fiqa, which has no
    published figure, and the average are left empty."""
    table = report_table(published(100, [0.7320, 0.7320], reference_ndcg10=0.7325, reference_r100=0.61))
    names = [c.name for c in table.columns]
    checks = [names.index("First stage nDCG@10 vs published"), names.index("First stage R@100 vs published")]
    by_row = {cells[0].value: [cells[i].value for i in checks] for cells in table.rows}
    assert by_row == {"scifact": ["OK", "-0.0100"], "fiqa": ["", ""], "BEIR-13": ["", ""]}
    table = report_table(published(100, [0.7300, 0.7300], reference_ndcg10=0.7325))
    assert [cells[-1].value for cells in table.rows] == ["-0.0025", "", ""]
    assert "First stage vs published (nDCG@10): OK within ±0.0005 of the published figure (pyserini)" in (
        " ".join(table.caption)
    )


def test_a_published_figure_without_a_first_stage_value_leaves_its_check_empty():
    """A row with a published figure but no first-stage value of that measure has nothing to check."""
    r = published(100, [0.7, 0.7], reference_ndcg10=0.7)
    scifact = r.rows[0]
    scifact.values.pop(("first_stage", "nDCG@10"))
    assert r.reference_check(scifact, "nDCG@10") == ""
    assert reference_check(0.7330, 0.7325) == "OK"
    assert reference_check(0.7331, 0.7325) == "+0.0006"


# -- what is read back from a manifest --


@pytest.mark.parametrize("version", [1, 2])
def test_manifests_of_every_known_format_are_read(version):
    """Format 1 (written whenever no dataset is in local files) and format 2 are both read."""
    assert read_manifest(manifest([record("scifact")], format=version), "m.json").format == version


def test_a_manifest_without_a_format_is_read_as_the_current_one_with_the_defaults_of_old_fields():
    """Fields earlier versions did not write take their defaults: the model's place and family,
    the suite's groups and keys, each dataset's row, timings of resumed queries and candidates."""
    read = read_manifest(manifest([record("scifact")]), "m.json")
    assert read.format == 2
    assert (read.model.position, read.model.family) == (None, None)
    assert (read.suite.groups, read.suite.keys) == ({}, [])
    (dataset,) = read.datasets
    assert (dataset.row, dataset.row_name, dataset.candidates_sha256) == (None, "scifact", None)
    assert dataset.timings.resumed_queries == 0
    assert read.raw["datasets"][0]["key"] == "scifact"


@pytest.mark.parametrize(
    ("version", "says"),
    [(0, "m.json is damaged: format 0 is none of 1 to 2"),
     (3, "m.json has manifest format 3; this rerank-eval reads up to 2 (a newer version wrote it)")],
)  # fmt: skip
def test_a_format_no_version_wrote_or_a_newer_one_is_refused_in_one_line(version, says):
    """A format below 1 was never written; one above this version's is a newer version's."""
    with pytest.raises(UserError) as raised:
        read_manifest(manifest([record("scifact")], format=version), "m.json")
    assert str(raised.value) == says


@pytest.mark.parametrize(
    ("change", "says"),
    [(lambda m: m["protocol"].update(top_k=True), "protocol.top_k should be"),
     (lambda m: m["datasets"][0]["timings"].update(rerank_seconds=float("nan")),
      "datasets[0].timings.rerank_seconds should be"),
     (lambda m: m["datasets"][0].pop("in_average"), "datasets[0].in_average is missing"),
     (lambda m: m["suite"].update(groups={"g": "a"}), "suite.groups.g is not a list"),
     (lambda m: m["suite"].update(groups=["a"]), "suite.groups is not a mapping"),
     (lambda m: m["protocol"].update(metrics="nDCG@10"), "protocol.metrics is not a list"),
     (lambda m: m["model"].update(name="m\x1b[2J"), "model.name holds a control character"),
     (lambda m: m["datasets"].__setitem__(0, "scifact"), "datasets[0] is not a mapping")],
)  # fmt: skip
def test_a_damaged_field_is_named_in_one_line(change, says):
    """A boolean is no number, a number must be finite, a required field must be there, a mapping
    or list must be one, and text printed to terminals holds no control character."""
    data = manifest([record("scifact")])
    change(data)
    with pytest.raises(UserError) as raised:
        read_manifest(data, "m.json")
    assert str(raised.value).startswith(f"m.json is damaged: {says}")


def test_null_is_read_where_a_field_may_be_null_and_values_keep_their_types():
    """A local dataset's null ir_datasets_id and a null first-stage figure are read as None; a
    published figure written as an int is kept; the groups' members are read as listed."""
    data = manifest([record("scifact", reference_ndcg10=1, reference_r100=None)], groups={"g": ["a", "b"]})
    data["datasets"][0]["ir_datasets_id"] = None
    read = read_manifest(data, "m.json")
    (dataset,) = read.datasets
    assert dataset.ir_datasets_id is None
    assert (dataset.first_stage.reference_ndcg10, dataset.first_stage.reference_r100) == (1, None)
    assert read.suite.groups == {"g": ["a", "b"]}
    assert read.protocol.metrics == ["nDCG@10"]


def test_what_is_not_a_manifest_is_said_so_naming_what_it_lacks():
    with pytest.raises(UserError, match=r"^m.json is not a rerank-eval manifest \(no suite, datasets\)$"):
        read_manifest({"protocol": {}, "model": {}}, "m.json")
    with pytest.raises(UserError, match=r"\(no protocol, suite, model, datasets\)$"):
        read_manifest([], "m.json")


def test_the_format_written_is_2_only_where_a_dataset_is_in_local_files():
    """So that older versions read every result that does not use format 2's one addition."""
    assert format_for([{"key": "a"}, {"key": "b"}]) == 1
    assert format_for([{"key": "a"}, {"key": "b", "local_files": {}}]) == 2
    assert format_for([]) == 1


def test_a_command_line_is_identified_by_its_words_without_the_program_and_fresh():
    assert command_words(["/usr/bin/rerank-eval", "beir", "--fresh", "--model", "m"]) == [
        "beir",
        "--model",
        "m",
    ]
    assert command_words(("python", "beir")) == ["beir"]
    assert command_words("rerank-eval beir") is None


def test_the_lasting_record_leaves_out_times_timings_and_how_the_first_stage_was_obtained():
    data = manifest([record("scifact")], started="t0", finished="t1", seconds=3.0,
                    command=["rerank-eval", "beir", "--fresh"])  # fmt: skip
    data["datasets"][0]["first_stage"]["execution"] = {"device": "cpu"}
    data["datasets"].append("not a record")
    original = copy.deepcopy(data)
    kept = lasting_record(data)
    assert data == original
    assert not {"started", "finished", "seconds"} & set(kept)
    assert kept["command"] == ["beir"]
    assert "timings" not in kept["datasets"][0]
    assert kept["datasets"][0]["first_stage"] == {"kind": "hub", "label": "BM25"}
    assert kept["datasets"][0]["coverage"] == data["datasets"][0]["coverage"]
    assert kept["datasets"][1] == "not a record"
    assert lasting_record(["not", "a", "command"]) == ["not", "a", "command"]


def test_each_row_is_labelled_dataset_group_or_average_as_the_summary_names_it():
    """summary.csv's `kind` column: a dataset alone in its row is a dataset (no "mean over its 1
    members" note), the forums' row a group, the averages averages."""
    r = forums_report()
    assert [(row.name, row.kind) for row in r.rows + r.averages] == [
        ("scifact", "dataset"),
        ("group", "group"),
        ("fiqa", "dataset"),
        ("BEIR-13", "average"),
        ("Average, all 3 rows", "average"),
    ]
    assert list(r.summary_frame().drop_duplicates("dataset").kind) == [
        "dataset",
        "group",
        "dataset",
        "average",
        "average",
    ]
    assert [line for line in r.caption() if "mean over its" in line] == [
        "group: mean over its 2 members (forum-a, forum-b)."
    ]


def test_a_group_row_lacking_members_of_the_suites_group_is_no_headline_figure():
    """The suite's group has three forums and the result two: the row says which it lacks, and the
    average over it is labelled a subset, not the suite's headline figure."""
    r = forums_report(groups={"group": ["forum-a", "forum-b", "forum-c"]})
    assert rows(r)["group"].missing == ["forum-c"]
    assert r.averages[0].name == "BEIR-13 subset (2 of 2, 1 in part)"
    assert r.averages[0].value("reranked", "nDCG@10") == pytest.approx(0.525)
    assert (
        "group: mean over 2 of its 3 members (forum-a, forum-b), not the whole group's figure." in r.caption()
    )
    assert rows(forums_report(groups={"group": ["forum-a", "forum-b"]}))["group"].missing == []


def test_a_dataset_without_reranked_values_counts_no_queries():
    """Its row says 0 queries (not 1, and no traceback) where per_query.csv holds no reranked value
    of the first metric for it, and the summary leaves its Δ empty."""
    values = {
        k: v
        for k, v in FORUMS.items()
        if k[0] in ("scifact", "fiqa") and k != ("fiqa", "reranked", "nDCG@10")
    }
    r = report(manifest([record("scifact"), record("fiqa")], average_rows=["scifact", "fiqa"]), values)
    assert [row.queries for row in r.rows] == [2, 0]
    assert r.rows[1].value("reranked", "nDCG@10") is None
    summary = r.summary_frame().set_index(["dataset", "measure"])
    assert summary.loc[("fiqa", "nDCG@10"), "first_stage"] == pytest.approx(0.1)
    assert pd.isna(summary.loc[("fiqa", "nDCG@10"), "delta"])
    assert summary.loc[("scifact", "nDCG@10"), "delta"] == pytest.approx(0.1)


def test_the_rule_before_the_averages_falls_after_the_last_row_and_only_where_there_are_averages():
    """The table's `averages_from` is the index of the first average row (3 rows before them), and
    None for a table without averages (one dataset)."""
    assert report_table(forums_report()).averages_from == 3
    single = report(manifest([record("scifact")]), {k: v for k, v in FORUMS.items() if k[0] == "scifact"})
    assert (single.averages, report_table(single).averages_from) == ([], None)


def test_the_models_table_shows_a_dash_where_a_model_has_no_row_and_bolds_the_best_of_the_others():
    """Model m2 has no fiqa: its cell is a dash (no traceback), m1's is bold as the only value; on
    scifact m2's 0.9 beats m1's 0.7, each with its Δ from the first stage's 0.6."""
    one = forums_report()
    two_values = {
        k: ([0.9, 0.9] if k == ("scifact", "reranked", "nDCG@10") else v) for k, v in FORUMS.items()
    }
    two_data = manifest([record("scifact")], average_rows=["scifact"])
    two_data["model"]["name"] = "m2"
    two = report(two_data, {k: v for k, v in two_values.items() if k[0] == "scifact"})
    table = models_table([one, two])
    names = [c.name for c in table.columns]
    m1, m2 = names.index("m"), names.index("m2")
    cells = {row[0].value: (row[m1], row[m2]) for row in table.rows}
    assert [(c.text, c.bold) for c in cells["scifact"]] == [
        ("0.7000 (+0.1000)", False),
        ("0.9000 (+0.3000)", True),
    ]
    assert [(c.text, c.bold) for c in cells["fiqa"]] == [("0.2000 (+0.1000)", True), ("–", False)]
    assert all(len(row) == len(table.columns) for row in table.rows)


def test_the_models_table_shows_recall_once_where_it_is_the_metric():
    """With R@100 as the metric of a top-100 run, the first stage's recall is the metric's own
    column, not a second one."""
    data = manifest([record("scifact")])
    data["protocol"]["metrics"] = ["R@100"]
    values = {("scifact", s, "R@100"): [0.5, 0.7] for s in ("first_stage", "reranked")}
    table = models_table([report(data, values), report(data, values)])
    assert [c.name for c in table.columns].count("R@100 first stage") == 1
    assert all(len(row) == len(table.columns) for row in table.rows)
