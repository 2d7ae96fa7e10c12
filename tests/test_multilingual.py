"""MIRACL: the language-aware analyzer, the built-in BM25 on real sentences, the memory guard."""

from __future__ import annotations

import json
import unicodedata

import pandas as pd
import pytest
from typer.testing import CliRunner

from rerank_eval.cli import app
from rerank_eval.first_stage import bm25_index as bm25
from rerank_eval.first_stage.text_analysis import Analyzer
from tests import builders
from tests.expected import mean, ndcg

LANGUAGES = ["ar", "hi", "th", "zh", "ja", "sw"]


# -- the analyzer ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("language", "text", "words"),
    [
        ("bn", "বাংলাদেশের রাজধানী ঢাকা", ["বাংলাদেশের", "রাজধানী", "ঢাকা"]),
        ("te", "హైదరాబాద్ తెలంగాణ రాజధాని", ["హైదరాబాద్", "తెలంగాణ", "రాజధాని"]),
        # Yoruba is cut at whitespace only (as the reference BM25 cuts it): marks, case, "." kept
        ("yo", "Èkó jẹ́ ìlú tó tóbi jùlọ.", ["Èkó", "jẹ́", "ìlú", "tó", "tóbi", "jùlọ."]),
    ],
)
def test_words_keep_their_combining_marks(language, text, words):
    assert Analyzer(language)(text) == words


def test_katakana_prolonged_sound_mark_stays_inside_the_word():
    # half-width ｰ becomes ー under NFKC; both belong to the loanword, not to a term of their own
    coffee = ["コー", "ーヒ", "ヒー", "ーを", "を飲", "飲み", "みま", "ます"]
    assert Analyzer("ja")("コーヒーを飲みます") == coffee
    assert Analyzer("ja")("ｽｰﾊﾟｰ") == ["スー", "ーパ", "パー"]


def test_hindi_words_are_not_cut_inside():
    terms = Analyzer("hi")("हिन्दी भारत की राजभाषा है")
    assert len(terms) == 5  # one term per word, whatever the stemmer removes at the end
    assert terms[0].startswith("हिन्द") and terms[3].startswith("राजभाष")


def test_thai_bigrams_keep_marks_with_their_consonant():
    terms = Analyzer("th")("กรุงเทพมหานครเป็นเมืองหลวงของประเทศไทย")
    assert len(terms) > 1
    assert not any(unicodedata.category(term[0]).startswith("M") for term in terms)
    assert "เป็" in terms  # เ + ป with its tone mark and vowel sign, one cluster each


@pytest.mark.parametrize(
    ("language", "document", "query"),
    [
        ("zh", "北京是中华人民共和国的首都。", "人民共和国"),
        ("ja", "東京は日本の首都であり、最大の都市です。", "日本の首都"),
        ("th", "กรุงเทพมหานครเป็นเมืองหลวงของประเทศไทย", "เมืองหลวง"),
        ("ko", "서울은 대한민국의 수도이다", "대한민국"),
    ],
)
def test_unspaced_scripts_split_and_match_sub_phrases(language, document, query):
    analyzer = Analyzer(language)
    document_terms, query_terms = analyzer(document), analyzer(query)
    assert len(document_terms) > 1
    assert query in document or language == "ko"  # a sub-phrase of the document
    assert len(query_terms) > 1 and set(query_terms) <= set(document_terms)


@pytest.mark.parametrize(
    ("language", "word", "stem"),
    [
        ("en", "jumping", "jump"),
        ("de", "häuser", "haus"),
        ("ru", "книгами", "книг"),
        ("fi", "taloissa", "talo"),
    ],
)
def test_snowball_stemming_where_available(language, word, stem):
    assert Analyzer(language)(word) == [stem]
    assert Analyzer(language).describe()["stemmer"]


def test_no_stemmer_or_stopwords_where_none_exist():
    analyzer = Analyzer("it")  # Italian: neither here
    assert analyzer.describe()["stemmer"] is None and analyzer.describe()["stopwords"] is None
    assert analyzer("vitabu vyangu") == ["vitabu", "vyangu"]
    assert Analyzer("en")("the cat and a dog") == ["cat", "dog"]  # English stopwords


def test_persian_reads_a_zero_width_non_joiner_as_a_space():
    """Lucene's PersianAnalyzer (its PersianCharFilter) cuts words at a ZWNJ, common in Persian
    ("می‌خواهم", "کتاب‌ها"); Arabic's keeps it inside the word."""
    joined, spaced = "می\u200cخواهم کتاب\u200cها", "می خواهم کتاب ها"
    assert Analyzer("fa")(joined) == Analyzer("fa")(spaced) and len(Analyzer("fa")(joined)) == 4
    assert len(Analyzer("ar")(joined)) == 2


def test_full_width_text_is_folded_where_lucene_folds_it():
    """Lucene's CJKWidthFilter is in its Chinese, Japanese and Korean analyzers only; elsewhere a
    fullwidth word stays fullwidth (lower-cased). Arabic, Bengali, Persian, Hindi, Telugu and Thai
    fold decimal digits (DecimalDigitFilter); Telugu keeps case (no LowerCaseFilter)."""
    assert Analyzer("zh")("ＢＥＲＬＩＮ ３") == ["berlin", "3"]
    assert Analyzer("en")("ＢＥＲＬＩＮ ３") == ["ｂｅｒｌｉｎ", "３"]
    assert Analyzer("hi")("२०२४ ٣") == ["2024", "3"] and Analyzer("en")("٣") == ["٣"]
    assert Analyzer("te")("NASA İ") == ["NASA", "İ"] and Analyzer("de")("NASA İ") == ["nasa", "i"]


# -- retrieval and the MIRACL command ------------------------------------------------------------------


@pytest.fixture(scope="module")
def miracl_result(tmp_path_factory):
    out = tmp_path_factory.mktemp("miracl") / "out"
    result = CliRunner().invoke(
        app,
        [
            "miracl",
            "--languages",
            ",".join(LANGUAGES),
            "--model",
            "bm25",
            "--first-stage",
            "bm25s",
            "--out",
            str(out),
            "--fresh",
        ],
    )
    assert result.exit_code == 0, result.output
    return out, result.output


def written_runs(folder, language):
    run: dict[str, dict[str, float]] = {}
    for line in (folder / "runs" / f"{language}.trec").read_text().splitlines():
        query_id, _, doc_id, _, score, _ = line.split()
        run.setdefault(query_id, {})[doc_id] = float(score)
    return run


@pytest.mark.parametrize("language", LANGUAGES)
def test_builtin_bm25_finds_the_obvious_passage(miracl_result, language):
    folder, _ = miracl_result
    run = written_runs(folder, language)
    data = builders.MIRACL[language]
    for query_id, judged in data["qrels"].items():
        relevant = next(d for d, r in judged.items() if r > 0)
        ranking = sorted(run[query_id], key=lambda d: -run[query_id][d])
        assert ranking[0] == relevant, (language, query_id, ranking)
    expected = mean(
        ndcg(sorted(run.get(q, {}), key=lambda d: -run[q][d]), j) for q, j in data["qrels"].items()
    )
    summary = pd.read_csv(folder / "summary.csv")
    row = summary[(summary.dataset == language) & (summary.measure == "nDCG@10")].iloc[0]
    assert row.first_stage == pytest.approx(expected, abs=1e-9)


def test_miracl_table_lists_languages_and_their_average(miracl_result):
    folder, output = miracl_result
    assert "MIRACL-18 subset (6 of 18)" in output
    assert "R@100" in output
    manifest = json.loads((folder / "manifest.json").read_text())
    assert [d["language"] for d in manifest["datasets"]] == sorted(LANGUAGES)  # suite order
    stage = manifest["datasets"][0]["first_stage"]
    assert stage["label"].startswith("built-in BM25 (approximation")
    assert stage["settings"]["analyzer"]["language"] == "ar"
    assert stage["settings"]["analyzer"]["stemmer"] == "arabic"


def test_too_large_a_corpus_is_refused_before_any_work(monkeypatch, tmp_path):
    """MIRACL de (15.9M passages, never downloaded here) on a machine with 1 GiB available."""
    from rerank_eval.config.reader import load_config
    from rerank_eval.datasets.ir_dataset import IrDataset
    from rerank_eval.errors import UserError

    monkeypatch.setenv("RERANK_EVAL_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(bm25, "available_memory", lambda: 2**30)
    spec = next(d for d in load_config().suite("miracl").datasets if d.key == "de")
    with pytest.raises(UserError) as error:
        bm25.Bm25Index.open(IrDataset(spec), bm25.Bm25Settings(language="de"))
    message = str(error.value)
    assert "miracl/de/dev has 15,866,222 documents" in message and "1 GiB are available" in message
    assert "supply a first-stage run file instead (runs.overrides de=PATH" in message
    assert "(--run de=PATH" in error.value.render({"runs.overrides": "--run"})  # as the CLI says it
    assert not (tmp_path / "cache").exists()


def test_a_later_language_too_large_is_refused_before_the_first_is_indexed(monkeypatch, tmp_path):
    """sw fits in 1 GiB, de does not: the run stops before sw's index is built, not after."""
    monkeypatch.setenv("RERANK_EVAL_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(bm25, "available_memory", lambda: 2**30)
    result = CliRunner().invoke(
        app,
        [
            "miracl",
            "--languages",
            "sw,de",
            "--model",
            "bm25",
            "--first-stage",
            "bm25s",
            "--out",
            str(tmp_path / "o"),
        ],
    )
    assert result.exit_code == 2
    assert "miracl/de/dev has 15,866,222 documents" in result.output
    assert "building the BM25 index" not in result.output
    assert not (tmp_path / "cache" / "bm25s").exists() and not (tmp_path / "o").exists()


def test_the_real_corpus_size_is_used_once_known(miracl_result, monkeypatch):
    """After the doc store is built, ir_datasets counts the documents really there (3 for sw here)."""
    from rerank_eval.config.reader import load_config
    from rerank_eval.datasets.ir_dataset import IrDataset

    spec = next(d for d in load_config().suite("miracl").datasets if d.key == "sw")
    assert IrDataset(spec).documents_count() == len(builders.MIRACL["sw"]["docs"])
