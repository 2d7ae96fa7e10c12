"""What the compared results' suite says of its rows: dataset order, groups, the headline rows.

Results of one suite may each hold other datasets (some MIRACL languages here, others there), so
no single result tells the whole suite. The facts come from every result of the baseline's suite
(name and average label alike), and where those do not record them (results written before they
did), from the packaged suite of that name. Results of another suite add nothing: their rows are
never the baseline suite's headline rows.
"""

from __future__ import annotations

from dataclasses import dataclass

from rerank_eval.config.reader import load_config
from rerank_eval.reporting.compare.columns import RunColumn


@dataclass(frozen=True)
class SuiteView:
    order: list[str]  # dataset keys in suite order (empty where unknown)
    groups: dict[str, list[str]]  # group row -> its members in the suite
    in_average: set[str]  # the rows of the headline average


def suite_view(runs: list[RunColumn], baseline: RunColumn) -> SuiteView:
    suite = baseline.manifest.suite
    same = [
        run
        for run in runs
        if (run.manifest.suite.name, run.manifest.suite.average_label) == (suite.name, suite.average_label)
    ]
    packaged = load_config().suites.get(suite.name)
    order = next((run.manifest.suite.keys for run in same if run.manifest.suite.keys), [])
    if not order and packaged is not None:
        order = [dataset.key for dataset in packaged.datasets]
    groups: dict[str, list[str]] = {}
    for run in same:
        for name, members in run.manifest.suite.groups.items():
            groups[name] = list(dict.fromkeys([*groups.get(name, []), *members]))
    if not groups and packaged is not None:
        for dataset in packaged.datasets:
            if dataset.group:
                groups.setdefault(dataset.group, []).append(dataset.key)
    in_average = {run.groups[d.key] for run in same for d in run.manifest.datasets if d.in_average}
    return SuiteView(order, groups, in_average)
