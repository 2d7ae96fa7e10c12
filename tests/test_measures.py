"""Per-query measures through ir_measures, in trec_eval's order whatever the provider."""

from __future__ import annotations

import pytest

from rerank_eval.errors import UserError
from rerank_eval.evaluation.measures import evaluate_per_query, parse_measures


def _trec_eval_order(docs: dict[str, float]) -> list[str]:
    """trec_eval sorts by score descending, then by doc id descending (written out here)."""
    return sorted(docs, key=lambda doc: (docs[doc], doc), reverse=True)


def test_tied_scores_are_judged_in_the_order_their_ndcg_is_computed_in():
    """ir_measures' own Judged provider breaks ties by doc id ascending; pytrec_eval (nDCG, R) by
    doc id descending. A first-stage run with ties must be judged in the latter order too."""
    qrels = {"q1": {"a": 1, "c": 0}, "q2": {"d3": 2, "d1": 0}, "q3": {"x": 1}}
    run = {
        "q1": {"a": 1.0, "b": 1.0, "c": 0.5},  # tie at rank 1: b (unjudged) first
        "q2": {"d1": 3.0, "d2": 3.0, "d3": 3.0, "d4": 1.0},  # d3, d2, d1, d4
        "q3": {},
    }
    values = evaluate_per_query(qrels, run, ["Judged@1", "Judged@2", "nDCG@1", "P@1", "RR"])
    judged = {q: set(docs) for q, docs in qrels.items()}
    for query, docs in run.items():
        order = _trec_eval_order(docs)
        for k in (1, 2):
            expected = sum(doc in judged[query] for doc in order[:k]) / k if order else 0.0
            assert values[f"Judged@{k}"][query] == expected, (query, k)
        first_relevant = next((i for i, doc in enumerate(order) if qrels[query].get(doc, 0) > 0), None)
        assert values["RR"][query] == (0.0 if first_relevant is None else 1 / (first_relevant + 1))
    assert values["Judged@1"] == {"q1": 0.0, "q2": 1.0, "q3": 0.0}
    assert values["nDCG@1"] == {"q1": 0.0, "q2": 1.0, "q3": 0.0}
    assert values["P@1"] == {"q1": 0.0, "q2": 1.0, "q3": 0.0}


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("nDCG@10.5", "measure 'nDCG@10.5': invalid param cutoff=10.5"),
        ("nDCG@1e3", "measure 'nDCG@1e3': invalid param cutoff=1000.0"),
        ("nDCG(foo=1)@10", "measure 'nDCG(foo=1)@10': unsupported params found: ['foo']"),
        (
            "ndcg@10.5",
            "unknown measure 'ndcg@10.5' (did you mean 'nDCG'? check its cutoff or parameters, e.g. nDCG@10)",
        ),
    ],
)
def test_a_measure_ir_measures_would_not_compute_is_refused_when_named(name, message):
    """ir_measures parses these but refuses to compute them (an AssertionError, once a traceback
    after every query was scored); its own check runs when the measure is named, and a typo is not
    offered such a name as its correction."""
    with pytest.raises(UserError) as error:
        parse_measures([name])
    assert str(error.value) == message
