"""Published figures beside runs (`compare --published`): a whole group's own figure, datasets no
packaged suite has, the caption's source, and the advice where candidates differ. Each test fails
on a mutant a mutation round found surviving."""

from __future__ import annotations

import json

from rerank_eval.config.reader import load_config
from rerank_eval.pipeline.execute import summarize
from rerank_eval.reporting.compare.comparison import Comparison
from rerank_eval.reporting.compare.table import caption
from rerank_eval.results.folder import ResultWriter, load_results
from tests.test_comparison import BEIR_IDS

FORUMS = [d.key for d in load_config().suite("beir").datasets if d.group == "cqadupstack"]
DENSE = {"kind": "dense", "label": "jina-embeddings-v3 (dense)", "name": "jina-embeddings-v3",
         "sha256": "d1", "settings": {"encoder": "x"}}  # fmt: skip


BM25 = {"kind": "hub", "label": "BM25", "sha256": "a", "settings": None}


def result(tmp_path, name, keys, ids=None, top_k=100, first_stage=None):
    """A published result folder of `keys`, two queries each, over `first_stage` (BM25's run)."""
    writer = ResultWriter(tmp_path / name)
    records = []
    for key in keys:
        for stage in ("first_stage", "reranked"):
            writer.add_values(key, stage, {"nDCG@10": {"q1": 0.5, "q2": 0.25}})
        records.append({"key": key, "row": "cqadupstack" if key.startswith("cqa") else key,
                        "ir_datasets_id": (ids or BEIR_IDS).get(key), "in_average": False,
                        "drop_self_matches": False, "first_stage": first_stage or BM25,
                        "coverage": {"judged_queries": 2, "queries_without_run": 0},
                        "timings": {"rerank_seconds": 1.0}})  # fmt: skip
    manifest = {"protocol": {"top_k": top_k, "metrics": ["nDCG@10"], "measures": ["nDCG@10"],
                             "candidate_order": "first-stage"},
                "suite": {"name": "beir", "average_label": "BEIR-13", "average_rows": []},
                "model": {"name": name}, "datasets": records}  # fmt: skip
    return writer.publish(manifest, summarize)


def figures(tmp_path, monkeypatch, name, **data):
    from rerank_eval.reporting.compare import published

    folder = tmp_path / "figures"
    folder.mkdir(exist_ok=True)
    monkeypatch.setattr(published, "PUBLISHED_DIR", folder)
    base = {"name": name, "source": "s", "first_stage": "f", "averages": {}}
    (folder / f"{name}.json").write_text(json.dumps({**base, **data}))


def test_a_whole_groups_published_figure_is_shown_beside_the_whole_group(tmp_path, monkeypatch):
    """Runs holding every packaged member of CQADupStack: the column's own group figure is shown
    (0.3), not the mean of its members' figures (0.5), and nothing calls it a mean."""
    rows = {"cqadupstack": 0.3, **{forum: 0.5 for forum in FORUMS}}
    figures(tmp_path, monkeypatch, "whole", rows={"nDCG@10": rows})
    made = result(tmp_path, "run", FORUMS)
    compared = Comparison(load_results([made]), published=["whole"])
    row = next(r for r in compared.rows if r.name == "cqadupstack")
    assert row.cells["whole (published)"].value == 0.3
    assert not any("is the mean of its figures" in note for note in compared.footnotes)


def test_a_dataset_no_packaged_suite_has_is_no_published_figures_data(tmp_path, monkeypatch):
    """A run over a dataset of one's own (local files) beside a published column: no traceback; its
    row shows no published figure and says why."""
    made = result(
        tmp_path, "mine", ["scifact", "my-data"], ids={"scifact": BEIR_IDS["scifact"], "my-data": None}
    )
    compared = Comparison(load_results([made]), published=["pyserini-bm25-flat"])
    cells = {row.name: row.cells["pyserini-bm25-flat (published)"].value for row in compared.rows}
    assert cells["my-data"] is None and cells["scifact"] == 0.6789
    assert (
        "my-data: the runs read it as local files, not the data published figures are of; none shown"
        in compared.footnotes
    )


def test_a_published_column_is_captioned_with_its_source(tmp_path, monkeypatch):
    figures(tmp_path, monkeypatch, "cited", source="Table 3 of the paper", first_stage="BM25 flat",
            notes="v2 reports 0.51.", rows={"nDCG@10": {"scifact": 0.7}})  # fmt: skip
    made = result(tmp_path, "run", ["scifact"])
    lines = caption(Comparison(load_results([made]), published=["cited"]))
    assert (
        "cited (published): Table 3 of the paper; first stage: BM25 flat; not tested. v2 reports 0.51."
        in lines
    )


def test_a_published_first_stage_no_packaged_entry_makes_is_said_so(tmp_path, monkeypatch):
    figures(tmp_path, monkeypatch, "other", first_stage_name="someones-retriever",
            rows={"nDCG@10": {"scifact": 0.7}})  # fmt: skip
    made = result(tmp_path, "run", ["scifact"])
    assert Comparison(load_results([made]), published=["other"]).warnings == [
        "other (published) reranked someones-retriever's candidates; the runs did not (no packaged "
        "first stage reproduces someones-retriever; configure one to compare the same candidates)"
    ]


def test_the_advice_to_rerun_names_the_packaged_first_stage_and_every_depth(tmp_path):
    made = result(tmp_path, "bm25", ["scifact"])
    assert Comparison(load_results([made]), published=["jina-reranker-v3"]).warnings == [
        "jina-reranker-v3 (published) reranked jina-embeddings-v3's candidates; the runs did not "
        "(rerun with --first-stage jina-embeddings-v3 to compare on the same candidates)"
    ]
    shallow = [result(tmp_path, f"top{k}", ["scifact"], top_k=k, first_stage=DENSE) for k in (20, 50)]
    assert Comparison(load_results(shallow), published=["jina-reranker-v3"], force=True).warnings[-1] == (
        "jina-reranker-v3 (published) reranked the top-100 of jina-embeddings-v3; the runs reranked its "
        "top-20, top-50 (rerun with --top-k 100 to compare on the same candidates)"
    )
