"""The packaged benchmarks.yaml and config validation."""

from __future__ import annotations

import re

import pytest

from rerank_eval.config.reader import load_config
from rerank_eval.errors import UserError

BEIR_13 = {
    "trec-covid",
    "nfcorpus",
    "nq",
    "hotpotqa",
    "fiqa",
    "arguana",
    "webis-touche2020",
    "dbpedia-entity",
    "scidocs",
    "fever",
    "climate-fever",
    "scifact",
    "quora",
}
FORUMS = (
    "android english gaming gis mathematica physics programmers stats tex unix webmasters wordpress".split()
)
MIRACL = "ar bn de en es fa fi fr hi id ja ko ru sw te th yo zh".split()


def test_beir_suite_rows_and_average():
    beir = load_config().suite("beir")
    assert {d.key for d in beir.datasets if d.in_average} == BEIR_13
    assert beir.average_label == "BEIR-13"
    forums = [d for d in beir.datasets if d.group == "cqadupstack"]
    assert [d.ir_datasets_id for d in forums] == [f"beir/cqadupstack/{f}" for f in FORUMS]
    assert not any(d.in_average for d in forums)
    by_key = {d.key: d for d in beir.datasets}
    assert by_key["webis-touche2020"].ir_datasets_id == "beir/webis-touche2020/v2"
    assert by_key["msmarco"].ir_datasets_id == "beir/msmarco/dev" and not by_key["msmarco"].in_average
    assert by_key["msmarco"].run_file == "bm25/run.beir-v1.0.0-msmarco-flat-trec"
    assert {k for k, d in by_key.items() if d.drop_self_matches} == {"arguana", "quora"}
    assert by_key["scifact"].reference["pyserini-bm25-flat"] == 0.6789
    refs = [d.reference["pyserini-bm25-flat"] for d in forums]
    assert sum(refs) / 12 == pytest.approx(0.3021, abs=1e-4)


def test_miracl_suite_and_defaults():
    config = load_config()
    miracl = config.suite("miracl")
    assert [d.key for d in miracl.datasets] == MIRACL
    assert all(d.ir_datasets_id == f"miracl/{d.key}/dev" and d.language == d.key for d in miracl.datasets)
    assert config.top_k == 100 and config.metrics == ("nDCG@10",)
    assert config.default_model == "jina-reranker-v3"
    preset = config.models["jina-reranker-v3"]
    assert preset.family == "listwise-last-token" and preset.model == "jinaai/jina-reranker-v3"
    assert preset.settings == {"max_query_length": 512, "max_doc_length": 2048, "block_size": 125}


def test_selection_by_key_and_group():
    beir = load_config().suite("beir")
    assert [d.key for d in beir.select(["scifact", "cqadupstack"])][:2] == [
        "cqadupstack-android",
        "cqadupstack-english",
    ]
    assert len(beir.select(["cqadupstack"])) == 12
    with pytest.raises(UserError, match="unknown dataset 'nosuch' in suite 'beir'"):
        beir.select(["nosuch"])


def test_a_groups_published_figure_reaches_each_member_and_names_real_groups(tmp_path):
    beir = load_config().suite("beir")
    forums = [d for d in beir.datasets if d.group == "cqadupstack"]
    # the group's own figures from the specs: Pyserini 2CR flat and multifield, MTEB's v3
    expected = {
        "pyserini-bm25-flat": 0.3021,
        "pyserini-bm25-multifield": 0.2987,
        "jina-embeddings-v3": 0.4259,
    }
    assert all(d.group_reference == expected for d in forums)
    assert all(not d.group_reference for d in beir.datasets if d.group is None)
    for groups, message in (
        ("{nogroup: {reference: {x: 0.5}}}",
         "suites.s.groups.nogroup: no dataset of the suite is in group 'nogroup'"),
        ("{g: {references: {x: 0.5}}}",
         "suites.s.groups.g: unknown key 'references'; did you mean 'reference'?"),
        ("{g: {reference: {x: high}}}", "suites.s.groups.g.reference.x: expected a number, got 'high'"),
        ("{null: {reference: {x: 0.5}}}", "suites.s.groups.None: no dataset of the suite is in group None"),
    ):  # fmt: skip
        config = tmp_path / "groups.yaml"
        config.write_text(
            "suites:\n  s:\n    datasets:\n      - {key: a, id: x, first_stage: bm25s, group: g}\n"
            f"    groups: {groups}\n"
        )
        with pytest.raises(UserError) as refused:
            load_config(config)
        assert str(refused.value) == f"{config}: {message}"


def test_the_average_label_selects_the_datasets_in_the_average(tmp_path):
    """`--datasets BEIR-13` runs exactly the published average's datasets (the spec's thirteen), not
    the suite's msmarco and forums; with another key it adds that one, in suite order."""
    beir = load_config().suite("beir")
    thirteen = ["trec-covid", "nfcorpus", "nq", "hotpotqa", "fiqa", "arguana", "webis-touche2020",
                "dbpedia-entity", "scidocs", "quora", "fever", "climate-fever", "scifact"]  # fmt: skip
    assert sorted(d.key for d in beir.select(["BEIR-13"])) == sorted(thirteen)
    assert [d.key for d in beir.select(["beir-13"])] == [d.key for d in beir.select(["BEIR-13"])]
    assert [d.key for d in beir.select(["msmarco", "BEIR-13"])][-1] == "msmarco"
    assert len(beir.select(["BEIR-13", "cqadupstack"])) == 25
    assert len(load_config().suite("miracl").select(["MIRACL-18"])) == 18
    with pytest.raises(UserError, match=r"known: .*, or BEIR-13 for those in its average"):
        beir.select(["BEIR-14"])
    config = tmp_path / "none.yaml"
    config.write_text("suites:\n  s:\n    average_label: S\n    datasets:\n"
                      "      - {key: a, id: x, first_stage: bm25s, in_average: false}\n")  # fmt: skip
    with pytest.raises(UserError, match=r"^suite 's' has no dataset in its average \(S\)$"):
        load_config(config).suite("s").select(["S"])


SUITE = (
    "first_stages:\n  f: {{kind: bm25s}}\nsuites:\n  s:\n    datasets:\n"
    "      - {{key: a, id: x, first_stage: f, {extra}}}\n"
)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("defaults: {}\nsuites: [\n  {a: b\n", "line 4: not valid YAML"),
        ("defaults: {top_k: abc}\n", "defaults.top_k: expected an integer, got 'abc'"),
        ("defaults: {top_k: 1.5}\n", "defaults.top_k: expected an integer, got 1.5"),
        ("defaults: 5\n", "defaults: expected a mapping, got 5"),
        ("defaults: {metrics: {a: 1}}\n", "defaults.metrics: expected a non-empty list of measure names"),
        (
            "first_stages:\n  f: {kind: bm25s, b: 1.5}\n",
            "first_stages.f.b: must be between 0.0 and 1.0, got 1.5",
        ),
        (
            "first_stages:\n  f: {kind: bm25s, k1: .nan}\n",
            "first_stages.f.k1: must be a finite number, got nan",
        ),
        (
            SUITE.format(extra="in_average: true").replace("first_stage: f", "first_stage: [f]"),
            "datasets[0].first_stage: expected a string, got ['f']",
        ),
        (
            SUITE.format(extra="in_average: true").replace("id: x", "id: "),
            "datasets[0].id: expected a non-empty string",
        ),
        (
            SUITE.replace("key: a", "key: a.first-stage").format(extra="in_average: true"),
            "it ends in .first-stage",
        ),
        (SUITE.format(extra="reference: {~: 0.5}"), "datasets[0].reference: expected a non-empty string"),
        (
            SUITE.format(extra="reference_r100: {mteb: 98.3}"),
            "datasets[0].reference_r100.mteb: expected a fraction between 0 and 1, got 98.3",
        ),
        (
            SUITE.format(extra="reference: {p: -0.1}"),
            "datasets[0].reference.p: expected a fraction between 0 and 1",
        ),
        (
            SUITE.format(extra="reference: {p: 1.5}"),
            "datasets[0].reference.p: expected a fraction between 0 and 1",
        ),
        (
            SUITE.format(extra="instructions: {'': x}"),
            "suites.s.datasets[0].instructions: expected a non-empty string",
        ),
        (
            SUITE.format(extra="instructions: {m: [1]}"),
            "suites.s.datasets[0].instructions.m: expected a string",
        ),
        ("defaults:\n  ? !!set {a}\n  : 1\n", "line 2: a key must be a plain value"),
        ("defaults: {metrics: []}\n", "defaults.metrics: expected a non-empty list of measure names"),
        ("defaults: {metrics: [nDCG@ten]}\n", "defaults.metrics: unknown measure 'nDCG@ten'"),
        (
            "defaults: {metrics: ['P(rel=99999999999999999999)@10']}\n",
            "defaults.metrics: measure 'P(rel=99999999999999999999)@10': rel is out of range",
        ),
        ("defaults: {top_k: 0}\n", "defaults.top_k: must be between 1 and 10,000, got 0"),
        ("defaults: {top_k: 9223372036854775808}\n", "defaults.top_k: must be between 1 and 10,000"),
        ("defaults: {topk: 10}\n", "defaults: unknown key 'topk'; did you mean 'top_k'?"),
        ("default: {top_k: 10}\n", "top level: unknown key 'default'; did you mean 'defaults'?"),
        ("suites:\n  s: {datasets: []}\n", "suites.s: needs a non-empty list under datasets"),
        (SUITE.format(extra="frist_stage: f"), "unknown key 'frist_stage'; did you mean 'first_stage'?"),
        (SUITE.format(extra="drop_self_match: true"), "did you mean 'drop_self_matches'?"),
        (
            SUITE.format(extra="drop_self_matches: 'no'"),
            "drop_self_matches: expected true or false, got 'no'",
        ),
        (SUITE.format(extra="in_average: 'false'"), "in_average: expected true or false, got 'false'"),
        # "english" would give a BM25 without stemmer or stopwords, without a word
        (
            SUITE.format(extra="language: english"),
            "language: expected a two-letter ISO 639-1 code such as en or sw, got 'english'",
        ),
        (SUITE.format(extra="language: ../x"), "language: expected a two-letter ISO 639-1 code"),
        (  # a suite's default is named where it is set, not on the entries that take it
            SUITE.replace("    datasets:", "    defaults: {{language: eng}}\n    datasets:").format(
                extra="in_average: true"
            ),
            "suites.s.defaults.language: expected a two-letter ISO 639-1 code such as en or sw, got 'eng'",
        ),
        (
            SUITE.format(extra="id: [x]").replace("id: x, ", ""),
            "datasets[0].id: expected a string, got ['x']",
        ),
        (
            SUITE.replace("key: a", "key: ../../escaped").format(extra="in_average: true"),
            "'../../escaped' cannot be used as a name",
        ),
        (
            SUITE.replace("key: a", "key: /tmp/abs").format(extra="in_average: true"),
            "'/tmp/abs' cannot be used as a name",
        ),
        (
            SUITE.replace("  s:", "  ../s:").format(extra="in_average: true"),
            "suites: '../s' cannot be used as a name",
        ),
        ("models:\n  ..: {family: yes-no}\n", "models: '..' cannot be used as a name"),
        (
            "models:\n  m: {family: yes-no, trust_remote_code: 1}\n",
            "trust_remote_code: expected true or false",
        ),
        ("models:\n  m: {family: yes-no, famly: x}\n", "models.m: unknown key 'famly'"),
        (
            "defaults: {top_k: 5}\ndefaults: {top_k: 9}\n",
            "line 2: key 'defaults' appears twice in one mapping",
        ),
        (
            "defaults: &d {top_k: 5}\nmodels: {m: {family: yes-no, settings: *d}}\n",
            "line 2: aliases (*d) are not accepted",
        ),
        ("first_stages:\n  f: {kind: bm25s, k1: high}\n", "first_stages.f.k1: expected a number, got 'high'"),
        # YAML gives booleans as Python ints (pinned as typed.is_kind took over the check)
        ("first_stages:\n  f: {kind: bm25s, k1: true}\n", "first_stages.f.k1: expected a number, got True"),
        (
            "first_stages:\n  f: {kind: bm25s}\nsuites:\n  s:\n    datasets:\n"
            "      - {key: a, id: x, first_stage: f, reference: {p: n/a}}\n",
            "suites.s.datasets[0].reference.p: expected a number, got 'n/a'",
        ),
        (
            "first_stages:\n  f: {kind: bm25s}\nsuites:\n  s:\n    datasets:\n"
            "      - {key: a, id: x, first_stage: f, instructions: [x]}\n",
            "suites.s.datasets[0].instructions: expected a mapping, got ['x']",
        ),
        ("models:\n  m: {family: yes-no, settings: [1]}\n", "models.m.settings: expected a mapping, got [1]"),
        (
            "suites:\n  s:\n    datasets:\n      - {key: a}\n",
            "suites.s.datasets[0]: missing id",
        ),
        ("first_stages:\n  f: {kind: ftp}\n", "first_stages.f: needs kind: one of bm25s, dense, hub"),
        (
            "first_stages:\n  f: {kind: bm25s}\nsuites:\n  s:\n    datasets:\n"
            "      - {key: a, id: x, first_stage: g}\n",
            "unknown first_stage 'g'",
        ),
        (
            "first_stages:\n  f: {kind: bm25s}\nsuites:\n  s:\n    datasets:\n"
            "      - {key: a, id: x, first_stage: f}\n      - {key: a, id: y, first_stage: f}\n",
            "dataset key 'a' appears twice",
        ),
    ],
)
def test_malformed_config_names_file_and_entry(tmp_path, text, message):
    """Each bad entry is refused with the file, the entry and what is wrong; none is ignored."""
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(UserError, match=re.escape(message)) as error:
        load_config(path)
    assert str(path) in str(error.value)


def test_published_figures_up_to_1_and_empty_instructions_are_read(tmp_path):
    path = tmp_path / "edges.yaml"
    path.write_text(
        SUITE.format(extra="reference: {p: 1.0}, reference_r100: {p: 0}, instructions: {m: null}")
    )
    (dataset,) = load_config(path).suite("s").datasets
    assert (dataset.reference, dataset.reference_r100, dataset.instructions) == (
        {"p": 1.0},
        {"p": 0.0},
        {"m": ""},
    )
    assert type(dataset.reference_r100["p"]) is float  # written 0: a figure, not an int, in the manifest


def test_a_group_that_is_not_a_mapping_is_refused_where_it_is(tmp_path):
    path = tmp_path / "groups.yaml"
    path.write_text(
        SUITE.format(extra="group: g").replace("    datasets:", "    groups: {g: 5}\n    datasets:")
    )
    with pytest.raises(UserError, match=re.escape("suites.s.groups.g: expected a mapping, got 5")):
        load_config(path)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        # nine anchors of nine aliases: 9^9 strings once expanded; refused at the first alias
        (
            "a: &a [x, x, x, x, x, x, x, x, x]\n"
            + "".join(
                f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 9)}]\n" for i in range(8)
            )
            + "models: {m: {family: yes-no, description: *i}}\n",
            "line 2: aliases (*a) are not accepted",
        ),
        ("defaults: {metrics: " + "[" * 20_000 + "]" * 20_000 + "}\n", "nested more than 32 levels deep"),
        ("#" + "x" * (512 * 1024) + "\n", "a benchmarks file is at most 524,288"),
        # Python's int() of more than 4,300 digits raises ValueError; hex has no such limit, but the
        # message that echoes the value would
        ("defaults: {top_k: " + "1" * 5000 + "}\n", "line 1: a number of 5,000 characters (at most 64"),
        ("defaults: {top_k: 0x" + "f" * 5000 + "}\n", "line 1: a number of 5,002 characters (at most 64"),
        # YAML 1.1's base-60: PyYAML converts it in quadratic time (this one took 3 s)
        (
            "defaults: {top_k: 1:" + "00:" * 150_000 + "0}\n",
            "line 1: '1:00:00:00:00:00:00:00:00:00:00:00:00:00' is a base-60",
        ),
    ],
    ids=["alias-bomb", "deep-nesting", "huge", "long-integer", "long-hex", "base-60"],
)
def test_hostile_yaml_is_refused_fast_in_little_memory(tmp_path, text, message):
    import resource
    import time

    path = tmp_path / "hostile.yaml"
    path.write_text(text)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.monotonic()
    with pytest.raises(UserError, match=re.escape(message)) as error:
        load_config(path)
    assert str(path) in str(error.value) and len(str(error.value).splitlines()) == 1
    assert time.monotonic() - start < 5
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 200_000  # KiB: under 200 MB


def test_a_config_file_of_gigabytes_is_refused_before_it_is_read(tmp_path):
    """It was read whole (2 GB resident, or a MemoryError traceback under a limit), then refused."""
    import os
    import resource

    path = tmp_path / "huge.yaml"
    with open(path, "wb") as handle:
        os.truncate(handle.fileno(), 2**30)  # (sparse: nothing is written)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(UserError) as error:
        load_config(path)
    assert str(error.value) == (
        f"{path}, line 1: the file is 1,073,741,824 bytes; a benchmarks file is at most 524,288"
    )
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 200_000  # KiB: under 200 MB


def test_miracl_names_lucene_and_falls_back_to_the_approximation_without_the_extra(monkeypatch):
    """The packaged MIRACL suite names Lucene; where it cannot run, its fallback is used (the
    manifest then records bm25s), and a first stage named on the command line is never replaced."""
    from rerank_eval.first_stage import lucene_runtime

    config = load_config()
    spec = config.suite("miracl").select(["sw"])[0]
    monkeypatch.setattr(lucene_runtime, "available", lambda: True)
    assert config.first_stage_for(spec, None).kind == "lucene"
    monkeypatch.setattr(lucene_runtime, "available", lambda: False)
    assert config.first_stage_for(spec, None).name == "bm25s"
    assert config.first_stage_for(spec, "lucene").kind == "lucene"


def test_fallbacks_are_followed_until_one_can_run_and_a_loop_is_refused_at_read(tmp_path, monkeypatch):
    """A chain (lucene-a -> lucene-b -> bm25s) ends at the first entry that can run; a fallback that
    comes back to an entry it passed is refused when the file is read, naming the loop."""
    from rerank_eval.first_stage import lucene_runtime

    path = tmp_path / "chain.yaml"
    path.write_text(
        "first_stages:\n"
        "  lucene-a: {kind: lucene, fallback: lucene-b}\n"
        "  lucene-b: {kind: lucene, k1: 1.2, fallback: bm25s}\n"
        "suites:\n  mine:\n    defaults: {first_stage: lucene-a}\n"
        "    datasets:\n      - {key: scifact, id: beir/scifact/test}\n"
    )
    config = load_config(path)
    spec = config.suite("mine").select(["scifact"])[0]
    monkeypatch.setattr(lucene_runtime, "available", lambda: False)
    assert config.first_stage_for(spec, None).name == "bm25s"
    monkeypatch.setattr(lucene_runtime, "available", lambda: True)
    assert config.first_stage_for(spec, None).name == "lucene-a"
    for body, loop in [
        ("  lucene-a: {kind: lucene, fallback: lucene-a}\n", "lucene-a -> lucene-a"),
        (
            "  lucene-a: {kind: lucene, fallback: lucene-b}\n"
            "  lucene-b: {kind: lucene, fallback: lucene-a}\n",
            "lucene-a -> lucene-b -> lucene-a",
        ),
        (  # an entry leading into a loop is not the loop: the message names where it turns round
            "  lucene-x: {kind: lucene, fallback: lucene-a}\n  lucene-a: {kind: lucene, fallback: lucene-b}\n"
            "  lucene-b: {kind: lucene, fallback: lucene-a}\n",
            "lucene-a -> lucene-b -> lucene-a",
        ),
    ]:
        path.write_text("first_stages:\n" + body)
        message = f"{path}: first_stages.lucene-a.fallback: the fallbacks go round in a loop ({loop})"
        with pytest.raises(UserError, match=re.escape(message) + "$"):
            load_config(path)


def test_a_base_60_number_is_refused_and_quoted_text_is_read(tmp_path):
    path = tmp_path / "times.yaml"
    path.write_text("models:\n  m: {family: yes-no, description: 10:30}\n")
    with pytest.raises(
        UserError, match=re.escape("line 2: '10:30' is a base-60 number (YAML 1.1); quote it")
    ):
        load_config(path)
    path.write_text("models:\n  m: {family: yes-no, description: '10:30'}\n")
    assert load_config(path).models["m"].description == "10:30"


def test_numbers_of_up_to_64_characters_are_read(tmp_path):
    path = tmp_path / "long.yaml"
    path.write_text("defaults: {top_k: 1" + "_" * 61 + "00}\n")  # 64 characters (YAML 1.1 drops the _)
    assert load_config(path).top_k == 100
    path.write_text("defaults: {top_k: 1" + "_" * 62 + "00}\n")
    with pytest.raises(UserError, match=re.escape("a number of 65 characters (at most 64 are accepted)")):
        load_config(path)


def test_a_number_read_as_text_is_taken_as_written(tmp_path):
    """YAML turns `0x1F` into 31, `2.50` into 2.5 and `010` into 8; where a value is text (a
    split's file name, a label, a path), the text written is what is used: the split `0x1F` reads
    qrels/0x1F.tsv, never qrels/31.tsv."""
    path = tmp_path / "written.yaml"
    path.write_text(
        "models:\n  m: {family: yes-no, description: 2.50}\n"
        "suites:\n  s:\n    average_label: 010\n    datasets:\n"
        "      - {key: a, path: 1e3, split: 0x1F}\n"
    )
    config = load_config(path)
    assert config.models["m"].description == "2.50"
    suite = config.suite("s")
    assert suite.average_label == "010"
    (dataset,) = suite.datasets
    assert dataset.local.qrels == str(tmp_path / "1e3" / "qrels" / "0x1F.tsv")
    path.write_text("defaults: {top_k: 0x64}\n")  # (where a number is asked for, its value)
    assert load_config(path).top_k == 100


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ("suites:\n  s:\n    datasets:\n      - {key: 1.10, id: beir/nq}\n",
         "suites.s.datasets[0].key: 1.10 is a number in YAML, not a name: quote it ('1.10')"),
        ("models:\n  2019: {family: yes-no}\n",
         "models: 2019 is a number in YAML, not a name: quote it ('2019')"),
        ("suites:\n  yes: {datasets: []}\n",
         "suites: yes, no, on, off, true and false are booleans in YAML, not names: quote it"),
    ],
)  # fmt: skip
def test_a_name_yaml_reads_as_a_number_or_boolean_is_said_to_be_one(tmp_path, entry, message):
    path = tmp_path / "names.yaml"
    path.write_text(entry)
    with pytest.raises(UserError) as refused:
        load_config(path)
    assert str(refused.value) == f"{path}: {message}"
