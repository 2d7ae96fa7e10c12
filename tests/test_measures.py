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


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("nDCG@0", "measure 'nDCG@0': the cutoff must be between 1 and 1,000,000"),
        ("nDCG@1000001", "measure 'nDCG@1000001': the cutoff must be between 1 and 1,000,000"),
        ("P(rel=2147483648)@10", "measure 'P(rel=2147483648)@10': rel is out of range"),  # C int max + 1
        ("SDCG@10", "measure 'SDCG@10': invalid param max_rel=unset"),  # (was an object's address)
        ("p(rel=2)@10", "unknown measure 'p(rel=2)@10' (did you mean 'P(rel=2)@10'?)"),
        (
            "pree@10",
            "unknown measure 'pree@10' (did you mean 'Rprec'? check its cutoff or parameters, e.g. Rprec@10)",
        ),
        ("ndxy@10", "unknown measure 'ndxy@10' (use ir_measures names such as nDCG@10, R@100)"),
    ],
)
def test_measures_are_refused_at_the_edges_of_what_trec_eval_reads(name, message):
    """trec_eval's cutoffs and relevance levels are C ints; a typo keeps its parameters in the
    correction; a name no closer than 0.6 to any measure's gets the naming reminder."""
    with pytest.raises(UserError) as error:
        parse_measures([name])
    assert str(error.value) == message


def test_measures_at_the_edges_are_read():
    assert [str(m) for m in parse_measures(["nDCG@1000000", "P(rel=2147483647)@10", "nDCG@1"])] == [
        "nDCG@1000000",
        "P(rel=2147483647)@10",
        "nDCG@1",
    ]


def test_a_measure_named_twice_or_by_an_alias_is_one_column():
    from rerank_eval.evaluation.measures import canonical_measures

    assert canonical_measures(["R(rel=1)@100", "R@100", "nDCG@10", "nDCG@10"]) == ["R@100", "nDCG@10"]


@pytest.mark.parametrize("name", ["alpha_nDCG@10", "RBP"])
def test_a_measure_no_installed_provider_computes_is_refused_before_any_scoring(name, tmp_path):
    """ir_measures parses these, but computes them only with a provider not installed (pyndeval),
    or none: found at the first evaluation, after a dataset's reranking, as a traceback."""
    from tests import builders
    from tests.test_hostile_input import bm25_on_scifact, one_line_error, run

    run_file = builders.write_run(tmp_path / "scifact.trec", builders.SCIFACT_RUN)
    args = bm25_on_scifact("--run", f"scifact={run_file}", "--metric", name, "--out", tmp_path / "o")
    message = one_line_error(run(*args))
    assert message.startswith(
        f"error: measure '{name}' cannot be computed here: ValueError: Unsupported measures"
    )
    assert not (tmp_path / "o").exists() and "scifact: evaluation" not in run(*args).output


def test_a_measure_that_fails_on_the_datasets_ids_is_one_line():
    """gdeval (ERR) reads only numeric query ids: on others it fails as it computes."""
    with pytest.raises(UserError) as error:
        evaluate_per_query({"q": {"d": 1}}, {"q": {"d": 1.0}}, ["ERR@10"])
    assert str(error.value).startswith("ir_measures cannot compute ERR@10 here: ")
    assert str(error.value).endswith(
        "the scores are journaled, so a run with other measures costs no scoring"
    )
    # on numeric ids it computes: gdeval's ERR of one grade-1 document at rank 1, grades up to 4
    assert evaluate_per_query({"1": {"d": 1}}, {"1": {"d": 1.0}}, ["ERR@10"]) == {
        "ERR@10": {"1": (2**1 - 1) / 2**4}
    }
