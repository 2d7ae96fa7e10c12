"""A user's `--config` is merged over the packaged benchmarks file: it states only what it adds or
changes, its entries win whole, and a result records the merged entries and every file read."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from rerank_eval.cli import app
from rerank_eval.config.reader import load_config
from rerank_eval.config.schema import DEFAULT_CONFIG
from rerank_eval.errors import UserError

#: the README's user suite, five lines
FIVE_LINES = """\
suites:
  mine:
    defaults: {first_stage: bm25s}
    datasets:
      - {key: scifact, id: beir/scifact/test}
"""


def write(tmp_path: Path, text: str, name: str = "mine.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_five_lines_add_a_suite_and_keep_everything_packaged(tmp_path):
    assert len(FIVE_LINES.splitlines()) == 5
    packaged = load_config()
    config = load_config(write(tmp_path, FIVE_LINES))
    assert config.models == packaged.models and config.first_stages == packaged.first_stages
    assert (
        config.suites["beir"] == packaged.suites["beir"]
        and config.suites["miracl"] == packaged.suites["miracl"]
    )
    (spec,) = config.suite("mine").datasets
    assert (spec.key, spec.ir_datasets_id, spec.first_stage) == ("scifact", "beir/scifact/test", "bm25s")
    assert (spec.language, spec.drop_self_matches, spec.in_average) == (
        "en",
        False,
        True,
    )  # the built-in defaults
    assert (config.top_k, config.metrics, config.default_model) == (100, ("nDCG@10",), "jina-reranker-v3")
    assert config.path == tmp_path / "mine.yaml"
    assert [f.path for f in config.files] == [DEFAULT_CONFIG, tmp_path / "mine.yaml"]
    assert config.files[1].sha256 == hashlib.sha256(FIVE_LINES.encode()).hexdigest()


def test_the_users_entries_win_whole_and_defaults_merge_key_by_key(tmp_path):
    packaged = load_config()
    config = load_config(
        write(
            tmp_path,
            """\
defaults: {top_k: 20}
first_stages:
  bm25s: {kind: bm25s, k1: 1.2}
models:
  jina-reranker-v3: {family: listwise-last-token, model: my/fine-tune, settings: {block_size: 50}}
suites:
  beir:
    defaults: {first_stage: bm25s}
    datasets:
      - {key: nq, id: beir/nq, first_stage: bge-base-en-v1.5}
      - {key: my-data, id: beir/scifact/test, in_average: false}
""",
        )
    )
    assert (config.top_k, config.metrics) == (20, packaged.metrics)  # metrics still the packaged ones
    assert config.first_stages["bm25s"].settings["k1"] == 1.2
    assert (
        config.first_stages["bm25s"].settings["b"] == packaged.first_stages["bm25s"].settings["b"]
    )  # kind default
    assert config.first_stages["bm25s"].label == "bm25s"  # the user's entry replaced the packaged one whole
    preset = config.models["jina-reranker-v3"]
    assert (preset.model, preset.settings) == ("my/fine-tune", {"block_size": 50})
    assert config.models["bge-reranker-v2-m3"] == packaged.models["bge-reranker-v2-m3"]
    beir = config.suite("beir")
    old = {d.key: d for d in packaged.suite("beir").datasets}
    new = {d.key: d for d in beir.datasets}
    # nq replaced in its place (no reference figures any more), my-data appended at the end
    assert [d.key for d in beir.datasets] == [d.key for d in packaged.suite("beir").datasets] + ["my-data"]
    assert new["nq"].first_stage == "bge-base-en-v1.5" and new["nq"].reference == {}
    # the suite's merged defaults reach every entry that does not state the field
    assert new["my-data"].first_stage == "bm25s" and new["scifact"].first_stage == "bm25s"
    assert not new["my-data"].in_average
    assert new["arguana"].drop_self_matches and not new["scifact"].drop_self_matches
    assert new["scifact"].reference == old["scifact"].reference
    assert beir.average_label == "BEIR-13"


def test_a_dataset_added_to_a_packaged_suite_joins_its_average_only_under_a_label_of_its_own(tmp_path):
    """BEIR-13 stays the 13 datasets published figures average: an added in-average dataset is
    refused unless the adding file names the average anew."""
    added = "suites:\n  beir:\n{label}    datasets:\n      - {{key: mine, id: beir/scifact/test}}\n"
    refused = write(tmp_path, added.format(label=""))
    with pytest.raises(UserError) as error:
        load_config(refused)
    assert str(error.value) == (
        f"{refused}: suites.beir.datasets[0]: adds 'mine' to the headline average of suite 'beir' (BEIR-13, "
        f"defined in {DEFAULT_CONFIG}); set in_average: false, or give the suite an average_label of your own"
    )
    relabelled = load_config(
        write(tmp_path, added.format(label="    average_label: BEIR-13 + mine\n"), "b.yaml")
    )
    beir = relabelled.suite("beir")
    assert beir.average_label == "BEIR-13 + mine" and sum(d.in_average for d in beir.datasets) == 14


def test_suite_defaults_are_checked_where_they_are_set(tmp_path):
    user = write(tmp_path, "suites:\n  beir:\n    defaults: {in_average: 'no'}\n")
    with pytest.raises(UserError) as error:
        load_config(user)
    assert str(error.value) == f"{user}: suites.beir.defaults.in_average: expected true or false, got 'no'"
    explicit_null = write(
        tmp_path,
        "suites:\n  beir:\n    datasets:\n      - {key: nq, id: beir/nq, first_stage: null}\n",
        "n.yaml",
    )
    assert {d.key: d for d in load_config(explicit_null).suite("beir").datasets}[
        "nq"
    ].first_stage == "bm25-flat"


def test_an_unknown_key_a_users_file_adds_to_a_packaged_suite_names_the_users_file(tmp_path):
    """It named the packaged benchmarks.yaml, where the suite was first given."""
    user = write(tmp_path, "suites:\n  beir:\n    average_labl: X\n")
    with pytest.raises(UserError) as error:
        load_config(user)
    assert str(error.value) == (
        f"{user}: suites.beir: unknown key 'average_labl'; did you mean 'average_label'?"
    )


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("model", "names the model of a command without --model; give one"),
        ("top_k", "expected an integer, got None"),
        ("metrics", "expected a non-empty list of measure names, got None"),
    ],
)
def test_a_blanked_default_is_refused_not_replaced_by_another(tmp_path, key, expected):
    """A null model fell back to bm25 (no reranker) where the packaged default is jina-reranker-v3."""
    user = write(tmp_path, f"defaults: {{{key}: null}}\n")
    with pytest.raises(UserError) as error:
        load_config(user)
    assert str(error.value) == f"{user}: defaults.{key}: {expected}"


def test_a_refusal_names_the_file_the_entry_came_from(tmp_path):
    user = write(
        tmp_path, "suites:\n  beir:\n    datasets:\n      - {key: nq, id: beir/nq, first_stage: bm25-flt}\n"
    )
    with pytest.raises(UserError) as error:
        load_config(user)
    assert str(error.value) == (
        f"{user}: suites.beir.datasets[0]: unknown first_stage 'bm25-flt'; did you mean 'bm25-flat'?"
    )
    # a suite's default is checked as an entry's, with the same hint
    default = write(tmp_path, "suites:\n  mine:\n    defaults: {first_stage: bm25ss}\n    datasets:\n"
                    "      - {key: nq, id: beir/nq}\n", "default.yaml")  # fmt: skip
    with pytest.raises(UserError) as error:
        load_config(default)
    assert str(error.value) == (
        f"{default}: suites.mine.defaults.first_stage: unknown first_stage 'bm25ss'; did you mean 'bm25s'?"
    )
    bad_preset = write(tmp_path, "models:\n  m: {model: x}\n", "preset.yaml")
    with pytest.raises(UserError, match=f"^{bad_preset}: models.m: needs a family$"):
        load_config(bad_preset)


def test_a_dataset_without_a_first_stage_takes_the_command_lines(tmp_path, monkeypatch):
    """No first stage in the entry or the suite: the command must name one, and the result
    records the merged entries, the first stage used and both files with their hashes."""
    monkeypatch.setenv("RERANK_EVAL_CACHE", str(tmp_path / "cache"))
    user = write(tmp_path, "suites:\n  mine:\n    datasets:\n      - {key: scifact, id: beir/scifact/test}\n")
    base = ["run", "mine", "--config", str(user), "--model", "bm25", "--top-k", "3"]
    refused = CliRunner().invoke(app, [*base, "--out", str(tmp_path / "refused")])
    assert refused.exit_code == 2
    assert refused.output == (
        "error: dataset scifact names no first stage: give one with --first-stage NAME or a run file "
        "(--run scifact=PATH), or set first_stage in its entry or its suite's defaults\n"
    )
    assert not (tmp_path / "refused").exists()
    done = CliRunner().invoke(app, [*base, "--first-stage", "bm25s", "--out", str(tmp_path / "out")])
    assert done.exit_code == 0, done.output
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["format"] == 1  # no local dataset: older versions still read it
    suite = manifest["suite"]
    assert suite["entries"] == [
        {
            "key": "scifact", "ir_datasets_id": "beir/scifact/test", "language": "en", "first_stage": None,
            "drop_self_matches": False, "in_average": True, "group": None, "run_name": None,
            "run_file": None, "reference": {}, "reference_r100": {}, "group_reference": {},
            "instructions": {}, "local": None,
        }
    ]  # fmt: skip
    assert list(suite["first_stages"]) == ["bm25s"]
    assert suite["config_files"] == [
        {"path": str(DEFAULT_CONFIG), "sha256": hashlib.sha256(DEFAULT_CONFIG.read_bytes()).hexdigest()},
        {"path": str(user), "sha256": hashlib.sha256(user.read_bytes()).hexdigest()},
    ]
