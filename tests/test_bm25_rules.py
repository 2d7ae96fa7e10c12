"""The built-in BM25's rules, each checked against something other than its own code: scores against
Lucene's BM25 formula worked by hand on a three-document corpus, analysis against PyStemmer and
bm25s' stopword lists, the index's cache key against every setting that changes it."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import pytest

from rerank_eval.config.reader import load_config
from rerank_eval.datasets import open_dataset
from rerank_eval.errors import UserError
from rerank_eval.first_stage.base import FirstStageRequest
from rerank_eval.first_stage.bm25_index import Bm25Index, Bm25Settings
from rerank_eval.first_stage.registry import kind
from rerank_eval.first_stage.text_analysis import Analyzer

# "the" is an English stopword and "cats" stems to "cat": analysed by hand, the documents hold
# d1 [cat, cat, dog], d2 [dog, fish], d3 [bird, cat, fish, fish] (lengths 3, 2, 4; mean 3).
DOCUMENTS = {"d1": "cat cat dog", "d2": "the dog fish", "d3": "bird cats fish fish"}
TERMS = {"d1": ["cat", "cat", "dog"], "d2": ["dog", "fish"], "d3": ["bird", "cat", "fish", "fish"]}
QUERIES = {"q1": "cats", "q2": "the fish and a dog"}
QUERY_TERMS = {"q1": ["cat"], "q2": ["fish", "dog"]}


def lucene_bm25(query: list[str], k1: float, b: float) -> dict[str, float]:
    """Lucene's BM25 (as Pyserini runs it): idf = ln(1 + (N - df + 0.5) / (df + 0.5)), each
    occurrence weighed tf / (tf + k1 (1 - b + b dl / avgdl)); documents without a query term left out."""
    count = len(TERMS)
    average = sum(len(terms) for terms in TERMS.values()) / count
    scores = {}
    for doc_id, terms in TERMS.items():
        score = 0.0
        for term in query:
            tf = terms.count(term)
            df = sum(term in others for others in TERMS.values())
            if tf:
                idf = math.log(1 + (count - df + 0.5) / (df + 0.5))
                score += idf * tf / (tf + k1 * (1 - b + b * len(terms) / average))
        if score > 0:
            scores[doc_id] = score
    return scores


def write_tiny(folder: Path, first_stage: str = "") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    lines = [json.dumps({"_id": doc_id, "text": text}) for doc_id, text in DOCUMENTS.items()]
    (folder / "c.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    lines = [json.dumps({"_id": query_id, "text": text}) for query_id, text in QUERIES.items()]
    (folder / "q.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (folder / "r.txt").write_text("q1 0 d1 1\nq2 0 d2 1\n", encoding="utf-8")
    config = folder / "tiny.yaml"
    config.write_text(
        f"{first_stage}suites:\n  tiny:\n    datasets:\n"
        "      - {key: tiny, corpus: c.jsonl, queries: q.jsonl, qrels: r.txt, language: en}\n",
        encoding="utf-8",
    )
    return config


@pytest.fixture
def tiny(tmp_path, monkeypatch):
    monkeypatch.setenv("RERANK_EVAL_CACHE", str(tmp_path / "cache"))
    spec = load_config(write_tiny(tmp_path / "tiny")).suite("tiny").datasets[0]
    return spec, open_dataset(spec)


def test_default_scores_are_lucene_bm25_with_pyserinis_k1_and_b(tiny):
    _, dataset = tiny
    run = Bm25Index.open(dataset, Bm25Settings(language="en")).search(QUERIES, 10)
    for query_id, terms in QUERY_TERMS.items():
        expected = lucene_bm25(terms, k1=0.9, b=0.4)
        assert run[query_id] == pytest.approx(expected, rel=1e-5)


def test_a_configured_k1_and_b_reach_the_scores(tmp_path, monkeypatch):
    monkeypatch.setenv("RERANK_EVAL_CACHE", str(tmp_path / "cache"))
    entry = "first_stages:\n  tuned: {kind: bm25s, k1: 1.7, b: 0.3}\n"
    config = load_config(write_tiny(tmp_path / "tiny", entry))
    spec = config.suite("tiny").datasets[0]
    request = FirstStageRequest(spec, config.first_stage("tuned"), open_dataset(spec), QUERIES, 10)
    run, record = kind("bm25s").obtain(request)
    # (bm25s' own defaults are k1 1.5, b 0.75: neither may stand in for the configured values)
    for query_id, terms in QUERY_TERMS.items():
        assert run[query_id] == pytest.approx(lucene_bm25(terms, k1=1.7, b=0.3), rel=1e-5)
    assert (record.settings["k1"], record.settings["b"], record.settings["method"]) == (1.7, 0.3, "lucene")


def test_depth_keeps_the_best_documents_only(tiny):
    _, dataset = tiny
    run = Bm25Index.open(dataset, Bm25Settings(language="en")).search(QUERIES, 1)
    for query_id, terms in QUERY_TERMS.items():
        expected = lucene_bm25(terms, k1=0.9, b=0.4)
        best = max(expected, key=expected.get)
        assert run[query_id] == pytest.approx({best: expected[best]}, rel=1e-5)


@pytest.mark.parametrize(
    "other",
    [
        Bm25Settings(language="en", k1=1.2),
        Bm25Settings(language="en", b=0.75),
        Bm25Settings(language="en", method="robertson"),
        Bm25Settings(language="fr"),
    ],
    ids=["k1", "b", "method", "language"],
)
def test_the_index_is_keyed_by_every_setting_that_changes_it(tiny, other):
    _, dataset = tiny
    settings = Bm25Settings(language="en")
    assert Bm25Index.cache_dir(dataset, settings) == Bm25Index.cache_dir(dataset, Bm25Settings(language="en"))
    assert Bm25Index.cache_dir(dataset, other) != Bm25Index.cache_dir(dataset, settings)


@pytest.mark.parametrize("library", ["PyStemmer", "regex", "unicode"])
def test_the_index_is_keyed_by_the_versions_its_terms_depend_on(tiny, monkeypatch, library):
    """A stemmer or Unicode tables of another release make other terms (PyStemmer 2.2 stems German
    otherwise than 3.1), so an index built under them is not the one to reuse."""
    from rerank_eval.first_stage import text_analysis

    _, dataset = tiny
    before = Bm25Index.cache_dir(dataset, Bm25Settings(language="en"))
    if library == "PyStemmer":
        monkeypatch.setattr(text_analysis.importlib.metadata, "version", lambda name: "2.2.0.3")
    elif library == "regex":
        monkeypatch.setattr(text_analysis.regex, "__version__", "2024.11.6")
    else:
        monkeypatch.setattr(text_analysis.unicodedata, "unidata_version", "1.1.0")
    assert Bm25Index.cache_dir(dataset, Bm25Settings(language="en")) != before


def test_the_record_names_the_versions_of_the_libraries_the_terms_depend_on():
    """Stemmed languages name PyStemmer's version; every word-segmented one regex's and the Unicode
    tables'; Swahili, cut at whitespace only, depends on neither."""
    import importlib.metadata
    import unicodedata

    import regex

    segmented = {"regex": regex.__version__, "unicode": unicodedata.unidata_version}
    stemmer = {"PyStemmer": importlib.metadata.version("PyStemmer")}
    assert Analyzer("en").describe()["libraries"] == segmented | stemmer
    assert Analyzer("fa").describe()["libraries"] == segmented | stemmer
    assert Analyzer("zh").describe()["libraries"] == segmented
    assert Analyzer("sw").describe()["libraries"] == {}


def test_an_entry_without_k1_or_b_takes_pyserinis_defaults():
    # the published BM25 runs (Pyserini/Anserini) use k1 0.9, b 0.4
    assert kind("bm25s").validate("first_stages.plain", {}) == {"k1": 0.9, "b": 0.4}


# Each language's Snowball stemmer (ISO 639-1 code -> Snowball's name for the algorithm), with a
# word it shortens.
SNOWBALL = [
    ("ar", "arabic", "الكتاب"),
    ("de", "german", "häuser"),
    ("en", "porter", "generalization"),  # the original Porter, as Lucene's: "gener" (Porter2 "general")
    ("es", "spanish", "corriendo"),
    ("fa", "persian", "کتابها"),
    ("fi", "finnish", "taloissa"),
    ("fr", "french", "maisons"),
    ("hi", "hindi", "लड़कियों"),
    ("id", "indonesian", "bukunya"),
    ("ru", "russian", "книгами"),
]


@pytest.mark.parametrize(("language", "algorithm", "word"), SNOWBALL, ids=[s[0] for s in SNOWBALL])
def test_words_are_stemmed_by_their_languages_snowball_stemmer(language, algorithm, word):
    import Stemmer

    stem = Stemmer.Stemmer(algorithm).stemWord(word)
    assert stem != word
    assert Analyzer(language)(word) == [stem]


# Each language's stopword list in bm25s
STOPWORD_LISTS = [
    ("en", "STOPWORDS_EN"),
    ("de", "STOPWORDS_GERMAN"),
    ("es", "STOPWORDS_SPANISH"),
    ("fr", "STOPWORDS_FRENCH"),
    ("ru", "STOPWORDS_RUSSIAN"),
]


@pytest.mark.parametrize(("language", "name"), STOPWORD_LISTS, ids=[s[0] for s in STOPWORD_LISTS])
def test_a_languages_stopwords_are_left_out(language, name):
    import bm25s.stopwords

    words = getattr(bm25s.stopwords, name)
    assert Analyzer(language)(" ".join(words)) == []
    others = {
        word for _, other in STOPWORD_LISTS if other != name for word in getattr(bm25s.stopwords, other)
    }
    kept = sorted(others - set(words) - set(bm25s.stopwords.STOPWORDS_EN_PLUS) - {"the"})[:20]
    assert len(Analyzer(language)(" ".join(kept))) == len(kept)  # another language's are words


def test_english_keeps_the_words_only_the_longer_list_drops():
    import bm25s.stopwords

    longer = set(bm25s.stopwords.STOPWORDS_EN_PLUS) - set(bm25s.stopwords.STOPWORDS_EN)
    extra = sorted(word for word in longer if word.isalpha())  # (letters only)
    assert extra
    assert len(Analyzer("en")(" ".join(extra))) == len(extra)


@pytest.mark.parametrize(
    ("text", "terms"), [("猫", ["猫"]), ("中国", ["中国"]), ("中国人", ["中国", "国人"])]
)
def test_a_run_without_spaces_is_its_bigrams_or_its_one_character(text, terms):
    # Lucene's CJK bigrams: every two neighbouring characters, and a lone character as itself
    assert Analyzer("zh")(text) == terms


@pytest.mark.parametrize(
    ("text", "terms"),
    [
        ("don't stop", ["don't", "stop"]),  # an apostrophe between letters joins them
        ("the U.S.A. and e.g.", ["the", "u.s.a", "and", "e.g"]),  # so does a period; one at the end does not
        ("pi is 3.14, not 1,000", ["pi", "is", "3.14", "not", "1,000"]),  # a comma between digits
        ("well-known", ["well", "known"]),  # a hyphen joins nothing
        ("__init__ and __", ["__init__", "and"]),  # underscores join; alone they are no word
        ("ｗｏｒｄ＇ｓ end", ["ｗｏｒｄ＇ｓ", "end"]),  # a fullwidth apostrophe joins too; no width folding
        ("x² ½ ① ™", ["x", "™"]),  # digits that are not decimal are no words; an emoji is one
    ],
)
def test_words_are_unicode_word_segments_with_a_letter_or_digit(text, terms):
    """UAX #29 as Lucene's StandardTokenizer has it (Italian: no stemmer, no stopwords here)."""
    assert Analyzer("it")(text) == terms


def test_english_drops_a_possessive_and_french_an_elided_article_before_their_stopwords():
    """Lucene's EnglishPossessiveFilter and ElisionFilter, by hand: the rule of the text's language
    only, before the stopword check ("it's" is "it", a stopword), at the first apostrophe only."""
    import Stemmer

    assert Analyzer("en")("John’s dogs' it's l'eau") == ["john", "dog", "l'eau"]
    french = Stemmer.Stemmer("french")
    # (Snowball's French stemmer drops l', qu' and a few more itself, but not jusqu', and its
    # stopword check would come too late: "qu'il" would be the term "il")
    assert Analyzer("fr")("l'eau jusqu'ici jusqu’aujourd'hui qu'il John's") == french.stemWords(
        ["eau", "ici", "aujourd'hui", "john's"]
    )
    assert Analyzer("it")("John's l'eau") == ["john's", "l'eau"]


def test_english_words_of_one_or_two_letters_are_not_stemmed():
    """Lucene's PorterStemmer leaves them; Snowball's Porter would make "us" "u" and "ps" "p"."""
    import Stemmer

    porter = Stemmer.Stemmer("porter")
    assert porter.stemWords(["us", "ps", "gas"]) == ["u", "p", "ga"]
    assert Analyzer("en")("us ps gas") == ["us", "ps", "ga"]


# -- a published run from the Hub ---------------------------------------------------------------

HUB_ENTRY = """first_stages:
  published: {kind: hub, label: published, repo: org/runs, file: "runs/{name}.trec", reference: my-ref}
"""
#: the entry without its reference, for a config whose datasets hold no figure under it
UNREFERENCED_HUB_ENTRY = HUB_ENTRY.replace(", reference: my-ref", "")


def test_a_hub_run_is_read_from_the_file_its_run_name_fills_in(tmp_path, monkeypatch, hub_cache):
    from tests import builders

    monkeypatch.setenv("RERANK_EVAL_CACHE", str(tmp_path / "cache"))
    config_path = write_tiny(tmp_path / "tiny", HUB_ENTRY)
    text = config_path.read_text(encoding="utf-8").replace(
        "language: en}", "language: en, run_name: alias, reference: {my-ref: 0.5}}"
    )
    config_path.write_text(text, encoding="utf-8")
    config = load_config(config_path)
    spec = config.suite("tiny").datasets[0]
    commit = "c" * 40
    wanted = b"q1 Q0 d1 1 2.0 x\nq1 Q0 d1 1 2.0 x\nq2 Q0 d2 1 3.0 x\n"  # one line given twice
    builders.put_in_hub_cache(hub_cache, "org/runs", "dataset", "runs/alias.trec", wanted, commit)
    builders.put_in_hub_cache(
        hub_cache, "org/runs", "dataset", "runs/tiny.trec", b"q1 Q0 d3 1 9.0 x\n", commit
    )
    request = FirstStageRequest(spec, config.first_stage("published"), open_dataset(spec), QUERIES, 10)
    run, record = kind("hub").obtain(request)
    assert run == {"q1": {"d1": 2.0}, "q2": {"d2": 3.0}}
    assert (record.path, record.repo, record.revision) == ("runs/alias.trec", "org/runs", commit)
    assert record.duplicate_lines == 1 and record.sha256 == hashlib.sha256(wanted).hexdigest()
    assert (record.reference_name, record.reference_ndcg10) == ("my-ref", 0.5)


@pytest.mark.parametrize("template", ["../{name}.trec", "/runs/{name}.trec"])
def test_a_hub_file_template_that_leads_out_of_the_repository_is_refused(template, tmp_path, monkeypatch):
    monkeypatch.setenv("RERANK_EVAL_CACHE", str(tmp_path / "cache"))
    entry = UNREFERENCED_HUB_ENTRY.replace('"runs/{name}.trec"', json.dumps(template))
    config = load_config(write_tiny(tmp_path / "tiny", entry))
    spec = config.suite("tiny").datasets[0]
    request = FirstStageRequest(spec, config.first_stage("published"), open_dataset(spec), QUERIES, 10)
    with pytest.raises(UserError, match=r"^first stage published: file .*tiny\.trec"):
        kind("hub").obtain(request)


def test_a_hub_run_missing_offline_is_named_a_run_file(tmp_path, monkeypatch):
    monkeypatch.setenv("RERANK_EVAL_CACHE", str(tmp_path / "cache"))
    entry = UNREFERENCED_HUB_ENTRY.replace("org/runs", "org/absent")
    config = load_config(write_tiny(tmp_path / "tiny", entry))
    spec = config.suite("tiny").datasets[0]
    request = FirstStageRequest(spec, config.first_stage("published"), open_dataset(spec), QUERIES, 10)
    with pytest.raises(UserError, match=r"run file org/absent/runs/tiny\.trec"):
        kind("hub").obtain(request)


def test_a_query_without_an_indexed_term_finds_nothing_and_the_next_queries_still_run(tiny):
    _, dataset = tiny
    queries = {"q0": "zebra", "q00": "the", **QUERIES}  # a word no document holds; a stopword only
    run = Bm25Index.open(dataset, Bm25Settings(language="en")).search(queries, 10)
    assert run["q0"] == {} and run["q00"] == {}
    for query_id, terms in QUERY_TERMS.items():
        assert run[query_id] == pytest.approx(lucene_bm25(terms, k1=0.9, b=0.4), rel=1e-5)


@pytest.mark.parametrize(
    ("text", "terms"),
    [("mwaka 2019", ["mwaka", "2019"]), ("東京 2020", ["東", "京", "2020"])],
    ids=["spaced", "mixed"],
)
def test_numbers_are_words(text, terms):
    # words are runs of letters and digits (Italian has neither stemmer nor stopwords here)
    assert Analyzer("it")(text) == terms


def test_a_bm25s_entry_records_its_published_figure(tmp_path, monkeypatch):
    monkeypatch.setenv("RERANK_EVAL_CACHE", str(tmp_path / "cache"))
    config_path = write_tiny(tmp_path / "tiny", "first_stages:\n  mine: {kind: bm25s, reference: my-ref}\n")
    text = config_path.read_text(encoding="utf-8").replace(
        "language: en}", "language: en, reference: {my-ref: 0.5}}"
    )
    config_path.write_text(text, encoding="utf-8")
    config = load_config(config_path)
    spec = config.suite("tiny").datasets[0]
    request = FirstStageRequest(spec, config.first_stage("mine"), open_dataset(spec), QUERIES, 10)
    _, record = kind("bm25s").obtain(request)
    assert (record.reference_name, record.reference_ndcg10) == ("my-ref", 0.5)


def test_stopwords_are_left_out_of_text_that_mixes_in_an_unspaced_script():
    """English text with Han in it: Han one character each (StandardTokenizer's way); Chinese:
    bigrams, and CJKAnalyzer's stopwords still apply to the Latin words."""
    assert Analyzer("en")("the cats of 東京") == ["cat", "東", "京"]
    assert Analyzer("zh")("the cats of 東京") == ["cats", "東京"]


def test_the_record_names_the_implementation_and_the_analyzer(tiny, tmp_path):
    import bm25s

    spec, dataset = tiny
    config = load_config(tmp_path / "tiny" / "tiny.yaml")  # the packaged bm25s entry, on the tiny corpus
    request = FirstStageRequest(spec, config.first_stage("bm25s"), dataset, QUERIES, 10)
    _, record = kind("bm25s").obtain(request)
    assert record.settings["implementation"] == f"bm25s {bm25s.__version__}"
    assert record.settings["method"] == "lucene"
    assert record.settings["analyzer"]["stemmer"] == "porter"
    assert record.settings["analyzer"]["shortest_stemmed"] == 3
    assert record.settings["analyzer"]["apostrophes"].startswith("a final 's dropped")


def test_a_built_index_is_opened_without_the_memory_check_of_a_build(tiny, monkeypatch):
    from rerank_eval.first_stage import bm25_index

    _, dataset = tiny
    settings = Bm25Settings(language="en")
    Bm25Index.open(dataset, settings)
    monkeypatch.setattr(bm25_index, "available_memory", lambda: 0)  # no build could fit now
    run = Bm25Index.open(dataset, settings).search(QUERIES, 10)
    assert run["q1"] == pytest.approx(lucene_bm25(["cat"], k1=0.9, b=0.4), rel=1e-5)


@pytest.mark.parametrize(("available", "refused"), [(14_000, True), (16_000, False)])
def test_a_build_is_refused_when_it_would_need_over_80_percent_of_the_memory(
    tiny, monkeypatch, available, refused
):
    # docs/protocol.md: the need is passages x 4 KB (about 12 KB for three), refused above 80% of
    # what is available (11,200 bytes of 14,000; 12,800 of 16,000)
    from rerank_eval.first_stage import bm25_index

    _, dataset = tiny
    monkeypatch.setattr(bm25_index, "available_memory", lambda: available)
    if refused:
        with pytest.raises(
            UserError, match="has 3 documents; building the built-in BM25 index needs about"
        ) as error:
            Bm25Index.open(dataset, Bm25Settings(language="en"))
        assert "Pyserini commands for MIRACL en" in str(error.value)  # the language's own commands
    else:
        assert Bm25Index.open(dataset, Bm25Settings(language="en")).doc_ids == list(DOCUMENTS)


def test_the_build_says_so_on_standard_error_only(tiny, capsys):
    _, dataset = tiny
    Bm25Index.open(dataset, Bm25Settings(language="en"))
    said = capsys.readouterr()
    assert "building the BM25 index of" in said.err and said.out == ""
