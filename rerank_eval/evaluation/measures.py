"""Per-query metric values through `ir_measures` (pytrec_eval, i.e. trec_eval semantics).

Every judged query gets a value: one the run does not cover scores 0, as with `trec_eval -c`.
Aggregates are never computed here; the reporting layer derives them from these values.

Only each query's order reaches the measures, and it is trec_eval's (score descending, ties by doc
id descending): ir_measures' providers do not all break ties alike (its own Judged takes tied
documents by doc id ascending), so a first-stage run with tied scores would otherwise be judged at
10 in another order than its nDCG@10 is computed in.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable

from rerank_eval.errors import UserError, closest, describe
from rerank_eval.runfiles import Run, trec_order

PerQuery = dict[str, dict[str, float]]  # measure name -> query id -> value
MAX_CUTOFF = 1_000_000


def parse_measures(names: Iterable[str]) -> list:
    import ir_measures

    measures = []
    for name in names:
        try:
            measure = ir_measures.parse_measure(name)
        except (ValueError, NameError, SyntaxError, TypeError):
            raise UserError(f"unknown measure {name!r}{_suggestion(name)}") from None
        try:  # ir_measures' own check: a cutoff that is no integer, a parameter it does not know
            measure.validate_params()
        except AssertionError as exc:  # (a parameter left unset is said as such, not as an address)
            said = re.sub(r"<object object at 0x[0-9a-f]+>", "unset", str(exc))
            raise UserError(f"measure {name!r}: {said}"[:300]) from None
        params = measure.params if isinstance(getattr(measure, "params", None), dict) else {}
        cutoff = params.get("cutoff")
        if isinstance(cutoff, int) and not 1 <= cutoff <= MAX_CUTOFF:  # trec_eval's cutoffs are C ints
            raise UserError(f"measure {name!r}: the cutoff must be between 1 and {MAX_CUTOFF:,}")
        huge = next((k for k, v in params.items() if isinstance(v, int) and abs(v) >= 2**31), None)
        if huge:  # a relevance level, too: C ints in trec_eval
            raise UserError(f"measure {name!r}: {huge} is out of range")
        measures.append(measure)
    return measures


def refuse_uncomputable(measures: list) -> None:
    """Compute each measure once, on one judged query, before any scoring: ir_measures parses names
    that no provider installed here computes (alpha_nDCG without pyndeval, RBP), which would
    otherwise fail at the first evaluation, after a dataset's reranking."""
    for measure in measures:
        problem = _computation_problem(str(measure))
        if problem:
            raise UserError(f"measure {str(measure)!r} cannot be computed here: {problem}"[:300])


@functools.cache
def _computation_problem(name: str) -> str | None:
    """Why ir_measures cannot compute the measure `name` here (None where it can), asked once per
    process: a plan is checked by the command and again by each model's run, and a provider may
    start a program to compute (gdeval's ERR runs perl)."""
    import ir_measures

    qrels, run = {"1": {"d1": 1, "d2": 0}}, {"1": {"d1": 2.0, "d2": 1.0}}
    try:
        list(ir_measures.iter_calc([ir_measures.parse_measure(name)], qrels, run))
    except Exception as exc:  # (a provider's own failure, whatever its kind)
        return describe(exc)
    return None


def _suggestion(name: str) -> str:
    """The measure one typo away (its name part compared with ir_measures' registry, the cutoff
    kept), else a reminder of the naming."""
    import ir_measures

    base = re.split(r"[@(]", name, maxsplit=1)[0]
    by_lower: dict[str, str] = {}
    for known in ir_measures.measures.registry:  # the first of aliases differing in case (nDCG, NDCG)
        by_lower.setdefault(known.lower(), known)
    close = closest(base.lower(), by_lower, cutoff=0.6)
    meant = by_lower[close] + name[len(base) :] if close else None
    if meant == name:  # the measure exists: its cutoff or parameters do not parse
        return f" (a known measure; check its cutoff or parameters, e.g. {base}@10)"
    if meant and not _parses(meant):  # the name is a typo, and so is what follows it
        known = by_lower[close]
        return f" (did you mean {known!r}? check its cutoff or parameters, e.g. {known}@10)"
    if meant:
        return f" (did you mean {meant!r}?)"
    return " (use ir_measures names such as nDCG@10, R@100)"


def _parses(name: str) -> bool:
    """Whether `name` is a measure ir_measures computes."""
    import ir_measures

    try:
        ir_measures.parse_measure(name).validate_params()
    except (ValueError, NameError, SyntaxError, TypeError, AssertionError):
        return False
    return True


def canonical_measures(names: Iterable[str]) -> list[str]:
    """ir_measures' own names, once each: `R(rel=1)@100` and `R@100` are one measure and one column."""
    canonical: list[str] = []
    for measure in parse_measures(names):
        if str(measure) not in canonical:
            canonical.append(str(measure))
    return canonical


def evaluate_per_query(qrels: dict[str, dict[str, int]], run: Run, measure_names: list[str]) -> PerQuery:
    import ir_measures

    measures = parse_measures(measure_names)
    values: PerQuery = {name: dict.fromkeys(qrels, 0.0) for name in measure_names}
    by_measure = {str(m): name for m, name in zip(measures, measure_names)}
    try:
        for metric in ir_measures.iter_calc(measures, qrels, _ranks_as_scores(run)):
            if metric.query_id in qrels:
                values[by_measure[str(metric.measure)]][metric.query_id] = float(metric.value)
    except Exception as exc:  # a provider that fails on these ids (gdeval's ERR on ids not numbers)
        raise UserError(
            f"ir_measures cannot compute {', '.join(measure_names)} here: {describe(exc)}; the scores "
            "are journaled, so a run with other measures costs no scoring"[:400]
        ) from None
    return values


def _ranks_as_scores(run: Run) -> dict[str, dict[str, float]]:
    """Each non-empty query's documents scored n, n - 1, ..., 1 in trec_eval's order: no ties left
    for a provider to break its own way."""
    return {
        query: {doc: float(len(docs) - rank) for rank, (doc, _) in enumerate(trec_order(docs))}
        for query, docs in run.items()
        if docs
    }
