"""A saved result's per-query values checked before anything reads them: a folder may be damaged,
edited or foreign, and a `nan` or a duplicated line in `per_query.csv` would change a mean or a
significance test without a word. Columns, finiteness, stages and uniqueness are checked, then the
table against its manifest (`consistency_problem`): every dataset, stage and measure the run wrote,
each with the same judged queries, and values within what the measure can take. The first problem
found is reported in one line. (The manifest's fields are checked in `manifest.py`.)
"""

from __future__ import annotations

import math

import pandas as pd

from rerank_eval.config.schema import top_k_problem
from rerank_eval.errors import UserError
from rerank_eval.evaluation.measures import parse_measures
from rerank_eval.results.manifest import Manifest

PER_QUERY_KEY = ["dataset", "stage", "measure", "query_id"]
STAGES = {"first_stage", "reranked"}
#: ir_measures' measures whose values are fractions (of relevant, retrieved or judged documents, or of
#: an ideal gain): anything above 1 was written by hand. Counts (NumRet, NumRel...) are unbounded.
FRACTIONS = {"nDCG", "P", "R", "AP", "RR", "Success", "Judged", "Bpref", "Rprec", "IPrec", "ERR",
             "SetP", "SetR", "SetF", "SetAP"}  # fmt: skip
#: a fraction's rounding slack: trec_eval's nDCG divides two sums accumulated in different orders
FRACTION_SLACK = 1e-9


def per_query_problem(frame: pd.DataFrame) -> str | None:
    """What is wrong with a per_query.csv table (None when nothing is): its columns, a value that is
    not a finite number or is negative, an unknown stage, or a (dataset, stage, measure, query)
    given twice."""
    expected = [*PER_QUERY_KEY, "value"]
    if sorted(frame.columns) != sorted(expected):
        return f"has columns {', '.join(map(str, frame.columns))}; expected {', '.join(expected)}"
    values = pd.to_numeric(frame["value"], errors="coerce")
    bad = frame.index[~values.map(lambda v: math.isfinite(v) if v == v else False)]
    if len(bad):
        return f"line {bad[0] + 2}: value {str(frame.loc[bad[0], 'value'])!r} is not a finite number"
    negative = frame.index[values < 0]
    if len(negative):  # no measure of ir_measures is below zero: an edit, not a result
        return f"line {negative[0] + 2}: value {str(frame.loc[negative[0], 'value'])!r} is negative"
    stages = frame.index[~frame["stage"].isin(STAGES)]
    if len(stages):
        return f"line {stages[0] + 2}: unknown stage {frame.loc[stages[0], 'stage']!r}"
    duplicated = frame.index[frame.duplicated(PER_QUERY_KEY)]
    if len(duplicated):
        row = frame.loc[duplicated[0]]
        what = f"{row['measure']} of query {row['query_id']} ({row['dataset']}, {row['stage']})"
        return f"line {duplicated[0] + 2}: {what} appears twice"
    frame["value"] = values
    return None


def consistency_problem(manifest: Manifest, frame: pd.DataFrame) -> str | None:
    """What in a checked per_query.csv table disagrees with its manifest (None when nothing does),
    naming the file.

    A complete run writes, for each of its datasets and both stages, one value per judged query
    (`coverage.judged_queries`; unjudged queries are not evaluated) of every measure the protocol
    names. Rows removed from or added to the table would move a mean, and a fraction above 1 is an
    edit; both are refused rather than averaged.
    """
    if manifest.raw.get("complete", True) is not True:
        return "manifest.json says the run did not complete"
    if not manifest.datasets:
        return "manifest.json lists no datasets"
    try:
        # as written (earlier versions wrote the user's spelling, NDCG@10, in both files)
        measures = dict(zip(manifest.protocol.measures, parse_measures(manifest.protocol.measures)))
    except UserError as problem:
        return f"manifest.json's protocol: {problem}"
    problem = _manifest_range_problem(manifest)
    if problem:
        return problem
    judged = {record.key: record.coverage.judged_queries for record in manifest.datasets}
    if len(judged) < len(manifest.datasets):
        return "manifest.json lists a dataset twice"
    strangers = sorted(set(frame["dataset"]) - set(judged))
    if strangers:
        return f"per_query.csv holds values of dataset {strangers[0]!r}, which the manifest does not list"
    unknown = sorted(set(frame["measure"]) - set(measures))
    if unknown:
        return f"per_query.csv holds values of measure {unknown[0]!r}, which the protocol does not name"
    return _coverage_problem(frame, judged, sorted(measures)) or _range_problem(frame, measures)


def _manifest_range_problem(manifest: Manifest) -> str | None:
    """A recorded number no run writes, which a table would print as it stands: a top-k outside
    what a run accepts, a count below zero or above the judged queries, a negative time, a
    published figure that is no fraction, a protocol without metrics or naming one with no values."""
    protocol = manifest.protocol
    problem = top_k_problem(protocol.top_k)
    if problem:
        return f"manifest.json's protocol.top_k {problem}"
    if not protocol.metrics:
        return "manifest.json's protocol names no metrics"
    unmeasured = [metric for metric in protocol.metrics if metric not in protocol.measures]
    if unmeasured:
        return f"manifest.json's protocol.metrics names {unmeasured[0]!r}, which protocol.measures lacks"
    for record in manifest.datasets:
        coverage, stage = record.coverage, record.first_stage
        where = f"manifest.json's dataset {record.key!r}"
        if not 0 <= coverage.queries_without_run <= coverage.judged_queries:
            return (
                f"{where}: queries_without_run {coverage.queries_without_run} is not between 0 and "
                f"its {coverage.judged_queries} judged queries"
            )
        if record.timings.rerank_seconds < 0 or record.timings.resumed_queries < 0:
            return f"{where}: a timing or resumed-query count is negative"
        references = (stage.reference_ndcg10, stage.reference_r100, stage.group_reference_ndcg10)
        if any(figure is not None and not 0 <= figure <= 1 for figure in references):
            return f"{where}: a published first-stage figure is not between 0 and 1"
    return None


def _coverage_problem(frame: pd.DataFrame, judged: dict[str, int], measures: list[str]) -> str | None:
    """Whether every (dataset, stage, measure) holds the same judged queries, as many as recorded."""
    groups = frame.groupby(["dataset", "stage", "measure"], sort=True)["query_id"]
    queries = {key: frozenset(ids) for key, ids in groups}
    for dataset, count in judged.items():
        expected = None
        for stage in sorted(STAGES):
            for measure in measures:
                found = queries.get((dataset, stage, measure), frozenset())
                if len(found) != count:
                    where = f"{dataset} ({stage}, {measure})"
                    return f"per_query.csv holds {len(found)} values of {where}; the manifest records {count}"
                expected = expected or found
                if found != expected:
                    other = sorted(found ^ expected)[0]
                    return f"per_query.csv holds query {other!r} of {dataset} for some measures, not all"
    return None


def _range_problem(frame: pd.DataFrame, measures: dict) -> str | None:
    """A fraction above 1."""
    fractions = [name for name, measure in measures.items() if measure.NAME in FRACTIONS]
    above = frame.index[frame["measure"].isin(fractions) & (frame["value"] > 1 + FRACTION_SLACK)]
    if len(above):
        row = frame.loc[above[0]]
        what = f"{row['measure']} {float(row['value'])!r} of query {row['query_id']}"
        return f"per_query.csv line {above[0] + 2}: {what} is above 1"
    return None
