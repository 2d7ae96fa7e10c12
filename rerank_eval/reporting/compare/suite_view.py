"""What the compared results' suite says of its rows: dataset order, groups, the headline rows.

Results of one suite may each hold other datasets (some MIRACL languages here, others there), so
no single result tells the whole suite. Order and headline rows come from every result of the
baseline's suite (name and average label alike), and where those do not record them (results
written before they did), from the packaged suite of that name: another suite's rows are never
the baseline suite's headline rows. Groups come from every result, so that a row holding part of
a group is told whichever result's suite says so.
"""

from __future__ import annotations

from dataclasses import dataclass

from rerank_eval.config.reader import packaged_config
from rerank_eval.config.schema import SuiteSpec
from rerank_eval.reporting.compare.columns import RunColumn


@dataclass(frozen=True)
class SuiteView:
    order: list[str]  # dataset keys in suite order (empty where unknown)
    groups: dict[str, list[str]]  # group row -> its members in any compared result's suite
    in_average: set[str]  # the rows of the headline average


def suite_view(runs: list[RunColumn], baseline: RunColumn) -> SuiteView:
    suite = baseline.manifest.suite
    same = [
        run
        for run in runs
        if (run.manifest.suite.name, run.manifest.suite.average_label) == (suite.name, suite.average_label)
    ]
    packaged = packaged_config().suites.get(suite.name)
    order = next((run.manifest.suite.keys for run in same if run.manifest.suite.keys), [])
    if not order and packaged is not None:
        order = [dataset.key for dataset in packaged.datasets]
    in_average = {run.groups[d.key] for run in same for d in run.manifest.datasets if d.in_average}
    return SuiteView(order, _groups(runs, packaged), in_average)


def _groups(runs: list[RunColumn], packaged: SuiteSpec | None) -> dict[str, list[str]]:
    """Every compared result's groups, each with the members any of their suites give it (a row
    holding fewer is a part, whichever result's suite says so); where no result records its
    suite's groups (all written before they did; `{}` is a record), the packaged suite's."""
    recorded = [run for run in runs if "groups" in run.manifest.raw.get("suite", {})]
    groups: dict[str, list[str]] = {}
    for run in recorded:
        for name, members in run.manifest.suite.groups.items():
            groups[name] = list(dict.fromkeys([*groups.get(name, []), *members]))
    if not recorded and packaged is not None:
        return packaged.groups()
    return groups
