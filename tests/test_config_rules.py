"""Rules of the config modules a mutation round found untested: a suite's groups and selection, the
first stage a dataset uses, how a user's file merges over the packaged one and which file a refusal
names."""

from __future__ import annotations

from pathlib import Path

import pytest

from rerank_eval.config.reader import load_config
from rerank_eval.config.schema import DEFAULT_CONFIG
from rerank_eval.errors import UserError

FORUMS = (
    "android english gaming gis mathematica physics programmers stats tex unix webmasters wordpress".split()
)


def write(tmp_path: Path, text: str, name: str = "mine.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def refusal(path: Path) -> str:
    with pytest.raises(UserError) as error:
        load_config(path)
    return str(error.value)


# -- a suite: its groups and what a selection takes -----------------------------------------------


def test_a_suites_groups_are_its_members_keys_in_suite_order():
    beir = load_config().suite("beir")
    assert beir.groups() == {"cqadupstack": [f"cqadupstack-{forum}" for forum in FORUMS]}
    assert load_config().suite("miracl").groups() == {}


def test_a_groups_published_figure_goes_with_the_whole_group_only():
    """Some of a group's members are not the group: their run is not checked against its figure."""
    beir = load_config().suite("beir")
    whole = beir.select(["cqadupstack"])
    assert len(whole) == 12 and all(d.group_reference for d in whole)
    assert all(d.group_reference for d in beir.select(["cqadupstack", "scifact"]) if d.group)
    (android,) = beir.select(["cqadupstack-android"])
    assert android.group_reference == {}
    assert android.reference == {d.key: d for d in beir.datasets}["cqadupstack-android"].reference


def test_an_unknown_dataset_is_refused_with_the_whole_list_and_a_close_hint_only(tmp_path):
    path = write(
        tmp_path,
        "suites:\n  s:\n    average_label: S\n    defaults: {first_stage: bm25s}\n    datasets:\n"
        "      - {key: alpha, id: x}\n      - {key: beta, id: y}\n",
    )
    suite = load_config(path).suite("s")
    with pytest.raises(UserError) as error:
        suite.select(["alpa"])
    assert str(error.value) == (
        "unknown dataset 'alpa' in suite 's' (did you mean 'alpha'?); "
        "known: alpha, beta, or S for those in its average"
    )
    # 'alphxyz' is 0.67 like 'alpha' (difflib's ratio): a hint needs 0.75
    with pytest.raises(UserError) as error:
        suite.select(["alphxyz"])
    assert str(error.value) == (
        "unknown dataset 'alphxyz' in suite 's'; known: alpha, beta, or S for those in its average"
    )


# -- the first stage a dataset uses ---------------------------------------------------------------


def test_a_dataset_without_a_first_stage_is_refused_in_the_librarys_words(tmp_path):
    path = write(tmp_path, "suites:\n  s:\n    datasets:\n      - {key: a, id: x}\n")
    config = load_config(path)
    (spec,) = config.suite("s").datasets
    with pytest.raises(UserError) as error:
        config.first_stage_for(spec, None)
    assert str(error.value) == (
        "dataset a names no first stage: give one with first_stage= NAME or a run file "
        "(runs.overrides a=PATH), or set first_stage in its entry or its suite's defaults"
    )


def test_an_unknown_first_stage_gets_a_hint_only_when_one_is_close(tmp_path):
    # 'xbm2' is 0.67 like 'bm25s': a hint needs 0.75
    path = write(tmp_path, "suites:\n  s:\n    datasets:\n      - {key: a, id: x, first_stage: xbm2}\n")
    assert refusal(path) == f"{path}: suites.s.datasets[0]: unknown first_stage 'xbm2'"


def test_an_unknown_suite_names_every_file_read_a_close_suite_and_the_known_ones(tmp_path):
    user = write(tmp_path, "suites:\n  mine:\n    datasets:\n      - {key: a, id: x}\n")
    config = load_config(user)
    known = "beir, mine, miracl, vaswani"
    with pytest.raises(UserError) as error:
        config.suite("bier")
    assert str(error.value) == (
        f"unknown suite 'bier' in {DEFAULT_CONFIG} + {user} (did you mean 'beir'?); known: {known}"
    )
    # 'beirxyz' is 0.73 like 'beir' (difflib's ratio): a hint needs 0.75
    with pytest.raises(UserError) as error:
        config.suite("beirxyz")
    assert str(error.value) == f"unknown suite 'beirxyz' in {DEFAULT_CONFIG} + {user}; known: {known}"


def test_an_unknown_suite_of_a_configuration_built_without_its_files_names_its_path():
    from rerank_eval.config.schema import BenchmarkConfig

    config = BenchmarkConfig(
        path=Path("/x/bench.yaml"), top_k=10, metrics=("nDCG@10",), default_model="m",
        first_stages={}, suites={}, models={},
    )  # fmt: skip
    with pytest.raises(UserError) as error:
        config.suite("s")
    assert str(error.value) == "unknown suite 's' in /x/bench.yaml; known: "


# -- numbers that decide a run --------------------------------------------------------------------


@pytest.mark.parametrize(("top_k", "accepted"), [(1, True), (10_000, True), (10_001, False), (0, False)])
def test_top_k_is_read_from_1_to_10000_inclusive(tmp_path, top_k, accepted):
    path = write(tmp_path, f"defaults: {{top_k: {top_k}}}\n")
    if accepted:
        assert load_config(path).top_k == top_k
    else:
        assert refusal(path) == f"{path}: defaults.top_k: must be between 1 and 10,000, got {top_k}"


# -- a dataset entry's derived fields (properties: mutmut leaves them alone) ----------------------


def test_a_datasets_row_origin_and_published_sources(tmp_path):
    corpus = tmp_path / "data" / "corpus.jsonl"
    path = write(
        tmp_path,
        "suites:\n  s:\n    defaults: {first_stage: bm25s}\n    datasets:\n"
        "      - {key: a, id: beir/x, group: g, reference: {p: 0.5}, reference_r100: {q: 0.9}}\n"
        "      - {key: b, corpus: data/corpus.jsonl, queries: data/q.tsv, qrels: data/qrels.txt}\n"
        "    groups: {g: {reference: {r: 0.4}}}\n",
    )
    a, b = load_config(path).suite("s").datasets
    assert (a.row, b.row) == ("g", "b")
    assert (a.origin, b.origin) == ("beir/x", f"local files in {corpus.parent}")
    assert (a.published_sources, b.published_sources) == ({"p", "q", "r"}, set())


# -- how a user's file merges over the packaged one -----------------------------------------------


def test_a_suites_defaults_merge_key_by_key_and_a_dataset_added_outside_the_average_is_taken(tmp_path):
    """beir's packaged defaults (first_stage bm25-flat, ...) stay where the user's file sets only
    in_average; its added dataset is then outside the average and needs no label of its own."""
    user = write(
        tmp_path,
        "suites:\n  beir:\n    defaults: {in_average: false}\n"
        "    datasets:\n      - {key: mine, id: beir/x}\n",
    )
    beir = load_config(user).suite("beir")
    mine = beir.datasets[-1]
    assert (mine.key, mine.first_stage, mine.language, mine.in_average) == ("mine", "bm25-flat", "en", False)
    assert beir.average_label == "BEIR-13"


def test_a_replaced_dataset_is_refused_naming_the_replacing_file_and_its_place_there(tmp_path):
    user = write(
        tmp_path,
        "suites:\n  beir:\n    datasets:\n      - {key: mine, id: beir/x, in_average: false}\n"
        "      - {key: scifact, id: beir/scifact/test, language: english}\n",
    )
    assert refusal(user) == (
        f"{user}: suites.beir.datasets[1].language: expected a two-letter ISO 639-1 code such as en or sw, "
        "got 'english'"
    )


def test_entries_without_a_key_are_refused_as_missing_a_key_not_as_repeated(tmp_path):
    user = write(tmp_path, "suites:\n  s:\n    datasets:\n      - {id: x}\n      - {id: y}\n")
    assert refusal(user) == f"{user}: suites.s.datasets[0]: missing key"


def test_a_repeated_number_key_is_refused_as_a_number(tmp_path):
    user = write(tmp_path, "suites:\n  s:\n    datasets:\n      - {key: 5, id: x}\n      - {key: 5, id: y}\n")
    assert (
        refusal(user)
        == f"{user}: suites.s.datasets[0].key: 5 is a number in YAML, not a name: quote it ('5')"
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("suites:\n  s: {datasets: 5}\n", "suites.s: datasets: expected a list, got 5"),
        ("suites:\n  s: 5\n", "suites.s: expected a mapping, got 5"),
        ("suites:\n  s:\n    datasets: [5]\n", "suites.s.datasets[0]: expected a mapping"),
        ("suites: [s]\n", "suites: expected a mapping, got ['s']"),
        (
            "suites:\n  s:\n    defaults: 5\n    datasets: [{key: a, id: x}]\n",
            "suites.s.defaults: expected a mapping, got 5",
        ),
    ],
)
def test_a_suite_of_the_wrong_shape_is_refused_naming_the_file_and_the_suite(tmp_path, text, message):
    user = write(tmp_path, text)
    assert refusal(user) == f"{user}: {message}"


# -- reading a file -------------------------------------------------------------------------------


def test_a_file_that_cannot_be_read_is_refused_in_one_line(tmp_path):
    missing = tmp_path / "missing.yaml"
    assert refusal(missing) == f"cannot read config {missing}: No such file or directory"
    latin = tmp_path / "latin.yaml"
    latin.write_bytes(b"# caf\xe9\n")
    assert refusal(latin) == f"{latin}: not valid UTF-8"
    listed = write(tmp_path, "- a\n", "list.yaml")
    assert refusal(listed) == f"{listed}: expected a mapping at the top level"


def test_an_empty_file_adds_nothing_and_a_relative_path_is_made_absolute(tmp_path, monkeypatch):
    import hashlib

    monkeypatch.chdir(tmp_path)
    write(tmp_path, "", "empty.yaml")
    config = load_config(Path("empty.yaml"))
    packaged = load_config()
    assert config.suites == packaged.suites and config.first_stages == packaged.first_stages
    assert config.path == tmp_path / "empty.yaml" and config.path.is_absolute()
    assert config.sha256 == hashlib.sha256(b"").hexdigest()


def test_the_packaged_file_given_as_the_users_is_read_once():
    import hashlib

    config = load_config(DEFAULT_CONFIG)
    assert [f.path for f in config.files] == [DEFAULT_CONFIG]
    assert config.sha256 == hashlib.sha256(DEFAULT_CONFIG.read_bytes()).hexdigest()
    assert config.path == DEFAULT_CONFIG


@pytest.mark.parametrize(
    ("entry", "says"),
    [
        ("first_stages:\n  bm25s: {kind: bm25s, k_1: 1.2}\n", "first_stages.bm25s: unknown setting 'k_1'"),
        ("models:\n  bm25: {family: passthrough, colour: red}\n", "models.bm25: unknown key 'colour'"),
    ],
)
def test_a_packaged_entry_the_users_file_replaces_is_refused_naming_the_users_file(tmp_path, entry, says):
    """The entry that is wrong is the user's: naming the packaged benchmarks.yaml, which they
    never edited, would send them to the wrong file."""
    user = write(tmp_path, entry)
    assert refusal(user).startswith(f"{user}: {says}")


def test_an_unknown_top_level_key_with_nothing_close_lists_the_keys_taken(tmp_path):
    user = write(tmp_path, "zzz: 1\n")
    assert refusal(user) == (
        f"{user}: top level: unknown key 'zzz' (accepted: defaults, first_stages, suites, models)"
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [  # read on, the first would end in a KeyError; the others would be taken as no value
        ("first_stages:\n  f: {kind: bm25s, fallback: nope}\n",
         "first_stages.f.fallback: unknown first stage 'nope'"),
        ("first_stages:\n  f: {kind: bm25s, reference: 0}\n",
         "first_stages.f.reference: expected a name or a list of names, got 0"),
        ("defaults: {model: ''}\n", "defaults.model: names the model of a command without --model; give one"),
        ("first_stages:\n  f: {kind: bm25s, label: yes}\n",  # (else the label "True")
         "first_stages.f.label: expected a string, got True"),
    ],
)  # fmt: skip
def test_an_entry_naming_nothing_is_refused_where_it_is_read(tmp_path, text, message):
    user = write(tmp_path, text)
    assert refusal(user) == f"{user}: {message}"


def test_a_local_datasets_home_folder_is_the_users(tmp_path, monkeypatch):
    """`~` is the home folder, as in a shell, not a folder named `~` beside the config file."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    user = write(tmp_path, "suites:\n  s:\n    datasets:\n      - {key: a, path: ~/beir/a}\n")
    (spec,) = load_config(user).suite("s").datasets
    assert spec.local.folder == str(tmp_path / "home" / "beir" / "a")


def test_a_key_twice_in_one_file_is_refused_naming_the_suite(tmp_path):
    user = write(tmp_path, "suites:\n  s:\n    datasets:\n      - {key: a, id: x}\n      - {key: a, id: y}\n")
    assert refusal(user) == f"{user}: suites.s: dataset key 'a' appears twice"


# -- a dataset entry's fields, read and named where they are --------------------------------------


def test_a_datasets_run_name_and_run_file_are_read(tmp_path):
    path = write(
        tmp_path,
        "suites:\n  s:\n    datasets:\n      - {key: a, id: x, run_name: other, run_file: runs/a.trec}\n",
    )
    (spec,) = load_config(path).suite("s").datasets
    assert (spec.run_name, spec.run_file) == ("other", "runs/a.trec")


@pytest.mark.parametrize(
    ("extra", "place"),
    [
        ("group: [g]", "suites.s.datasets[0].group: expected a string, got ['g']"),
        ("run_name: [r]", "suites.s.datasets[0].run_name: "),
        ("run_file: [r]", "suites.s.datasets[0].run_file: "),
        ("frist_stage: f", "suites.s.datasets[0]: unknown key 'frist_stage'; did you mean 'first_stage'?"),
    ],
)
def test_a_bad_dataset_field_is_refused_naming_its_place(tmp_path, extra, place):
    path = write(tmp_path, f"suites:\n  s:\n    datasets:\n      - {{key: a, id: x, {extra}}}\n")
    assert refusal(path).startswith(f"{path}: {place}")


@pytest.mark.parametrize(("extra", "named"), [("split: dev", "split"), ("path: data, split: dev", "path")])
def test_an_ir_datasets_entry_with_local_fields_is_refused_not_read_with_them_ignored(tmp_path, extra, named):
    """A split next to an id would otherwise be dropped without a word: the run would use the id's
    own split."""
    path = write(tmp_path, f"suites:\n  s:\n    datasets:\n      - {{key: a, id: x, {extra}}}\n")
    assert refusal(path) == (
        f"{path}: suites.s.datasets[0]: gives both id (ir_datasets) and {named} (local files); use one"
    )


def test_a_first_stage_reference_no_dataset_has_figures_under_is_refused(tmp_path):
    """A mistyped `reference` (here `jina-embedings-v3`) checked no first-stage figure, silently;
    the names the config's datasets do have figures under are listed."""
    path = write(
        tmp_path,
        "first_stages:\n  mine:\n    kind: bm25s\n    reference: [pyserini-bm25-flat, jina-embedings-v3]\n",
    )
    message = refusal(path)
    assert message.startswith(
        f"{path}: first_stages.mine.reference: no dataset of the config has published figures under "
        f"'jina-embedings-v3' (names with figures: "
    )
    assert "jina-embeddings-v3" in message.split("names with figures: ")[1]
    path.write_text("first_stages:\n  mine:\n    kind: bm25s\n    reference: jina-embeddings-v3\n")
    assert load_config(path).first_stages["mine"].reference == ("jina-embeddings-v3",)
