"""Language-aware text analysis for the built-in BM25 (an approximation of Lucene's analyzers).

- Words are Unicode's word segments (UAX #29, as Lucene's StandardTokenizer cuts them) that hold
  a letter or a digit: combining marks stay with their letter, so Hindi, Bengali and Telugu words
  (vowel signs, viramas) are never cut inside (`\\w` would cut them), and an apostrophe, a period
  or an underscore between letters or digits stays inside the word (don't, O'Neil, U.S.A, 3.14).
- As Lucene's analyzers do for their language: English drops a possessive 's, French an elided
  article (l', d', qu', ...), and English is stemmed by the original Porter algorithm with its
  words of one or two letters left alone (Lucene's PorterStemmer; Snowball's "porter" stems them).
- Scripts written without spaces (Han, Hiragana, Katakana, Thai, Lao, Khmer, Myanmar, and Hangul
  as Lucene's CJKAnalyzer does) become overlapping bigrams of grapheme clusters: the approach of
  Lucene's CJKAnalyzer, needing no dictionary, so a query for any sub-phrase of two or more
  characters matches. Thai combining vowels and tone marks stay with their base consonant.
- Text is NFKC-normalised and lower-cased; Snowball stemming (PyStemmer) and stopword lists (bm25s)
  are applied where they exist for the language.
- Where the reference BM25 (Pyserini's MIRACL runs) cuts text at whitespace only, so does this
  analyzer, as Lucene's WhitespaceAnalyzer: Yoruba (searched pretokenized) and Swahili (Anserini's
  rule for `-language sw`) keep case and punctuation ("Kenya." is not "kenya").
"""

from __future__ import annotations

import itertools
import unicodedata
from functools import cached_property

import regex

from rerank_eval.first_stage.lucene_runtime import PRETOKENIZED_LANGUAGES, WHITESPACE_LANGUAGES

# 2: the katakana prolonged sound mark stays inside its word
# 3: UAX #29 words, English possessives and French elisions dropped, English by Lucene's Porter
# 4: Swahili and Yoruba cut at whitespace only, as the reference BM25 cuts them
ANALYZER_VERSION = 4
# U+30FC (ー) is of the Common script but belongs to Kana words (コーヒー), as UAX #29 has it.
_UNSPACED = r"\p{Han}\p{Hiragana}\p{Katakana}\u30fc\p{Thai}\p{Lao}\p{Khmer}\p{Myanmar}\p{Hangul}"
_RUNS = regex.compile(rf"(?P<unspaced>(?:[{_UNSPACED}]\p{{M}}*)+)|(?P<spaced>[^{_UNSPACED}]+)")
# A word segment (the `w` flag: boundaries by UAX #29) begins with a letter, digit or connector
# such as "_"; connectors alone ("__") are no word.
_SEGMENTS = regex.compile(r"(?wV1)\b[\p{L}\p{N}\p{Pc}].*?\b")
_LETTER_OR_DIGIT = regex.compile(r"[\p{L}\p{N}]")
_HAS_UNSPACED = regex.compile(rf"[{_UNSPACED}]")
_GRAPHEME = regex.compile(r"\X")
_APOSTROPHES = ("'", "\u2019")  # (NFKC has made a fullwidth one an ASCII one)
_POSSESSIVE_ENDINGS = tuple(f"{mark}s" for mark in _APOSTROPHES)

# ISO 639-1 code -> Snowball algorithm in PyStemmer
STEMMERS = {
    "ar": "arabic", "de": "german", "en": "porter", "es": "spanish", "fa": "persian", "fi": "finnish",
    "fr": "french", "hi": "hindi", "id": "indonesian", "ru": "russian",
}  # fmt: skip
# ISO 639-1 code -> stopword list in bm25s.stopwords
STOPWORDS = {
    "en": "STOPWORDS_EN", "de": "STOPWORDS_GERMAN", "es": "STOPWORDS_SPANISH", "fr": "STOPWORDS_FRENCH",
    "ru": "STOPWORDS_RUSSIAN",
}  # fmt: skip
#: Lucene's PorterStemmer leaves words of one or two letters as they are ("us", "as"); Snowball's
#: Porter does not ("us" -> "u")
SHORTEST_STEMMED = {"porter": 3}
#: languages cut at whitespace only, as Lucene's WhitespaceAnalyzer: what Pyserini's MIRACL runs do
WHITESPACE_ONLY = frozenset(PRETOKENIZED_LANGUAGES + WHITESPACE_LANGUAGES)
#: Java's `Character.isWhitespace`, where Lucene's WhitespaceTokenizer cuts: the Unicode space,
#: line and paragraph separators but the no-break ones (U+00A0, U+2007, U+202F), and the ASCII
#: controls \t \n \v \f \r and U+001C..U+001F (not U+0085, which Python's `str.split` cuts at)
_JAVA_WHITESPACE = regex.compile(
    "[\t\n\x0b\x0c\r\x1c-\x1f \u1680\u2000-\u2006\u2008-\u200a\u2028\u2029\u205f\u3000]+"
)
#: Lucene's tokenizers end a token once it holds 255 UTF-16 code units and go on with a new one
LONGEST_TOKEN = 255
#: the articles Lucene's French analyzer drops before an apostrophe (its ElisionFilter)
FRENCH_ELIDED = frozenset(
    {"l", "m", "t", "qu", "n", "s", "j", "d", "c", "jusqu", "quoiqu", "lorsqu", "puisqu"}
)


def without_possessive(word: str) -> str:
    """English, as Lucene's EnglishPossessiveFilter: a final 's goes (John's -> john)."""
    return word[:-2] if word.endswith(_POSSESSIVE_ENDINGS) else word


def without_elision(word: str) -> str:
    """French, as Lucene's ElisionFilter: an article before the first apostrophe goes (l'eau -> eau)."""
    cut = min(index for index in map(word.find, _APOSTROPHES) if index >= 0)
    return word[cut + 1 :] if word[:cut] in FRENCH_ELIDED else word


#: what a word with an apostrophe loses, by language: the rule as the manifest says it, and the rule
APOSTROPHE_RULES = {
    "en": ("a final 's dropped (Lucene's EnglishPossessiveFilter)", without_possessive),
    "fr": ("an elided article dropped (Lucene's ElisionFilter)", without_elision),
}


def whitespace_tokens(text: str) -> list[str]:
    """Lucene's WhitespaceTokenizer: runs between Java's whitespace, as they are, each cut into
    tokens of 255 UTF-16 code units (a character outside the BMP counts two)."""
    tokens: list[str] = []
    for run in _JAVA_WHITESPACE.split(text):
        if len(run) * 2 < LONGEST_TOKEN:  # (the common case: too short to reach the limit)
            if run:
                tokens.append(run)
            continue
        start, units = 0, 0
        for index, character in enumerate(run):
            units += 2 if ord(character) > 0xFFFF else 1
            if units >= LONGEST_TOKEN:
                tokens.append(run[start : index + 1])
                start, units = index + 1, 0
        if start < len(run):
            tokens.append(run[start:])
    return tokens


def grapheme_bigrams(run: str) -> list[str]:
    clusters = _GRAPHEME.findall(run)
    if len(clusters) == 1:
        return clusters
    return [a + b for a, b in itertools.pairwise(clusters)]


class Analyzer:
    """Turns text into index terms for one language."""

    def __init__(self, language: str) -> None:
        self.language = language

    @cached_property
    def _stemmer(self):
        if self.language not in STEMMERS:
            return None
        import Stemmer

        return Stemmer.Stemmer(STEMMERS[self.language])

    @cached_property
    def stopwords(self) -> frozenset[str]:
        if self.language not in STOPWORDS:
            return frozenset()
        import bm25s.stopwords

        return frozenset(getattr(bm25s.stopwords, STOPWORDS[self.language]))

    def describe(self) -> dict[str, object]:
        whitespace = self.language in WHITESPACE_ONLY
        return {
            "analyzer_version": ANALYZER_VERSION,
            "language": self.language,
            "words": "cut at whitespace only, case and punctuation kept (Lucene's WhitespaceAnalyzer)"
            if whitespace
            else "UAX #29 word segments with a letter or digit, their combining marks kept",
            "apostrophes": APOSTROPHE_RULES[self.language][0] if self.language in APOSTROPHE_RULES else None,
            "unspaced_scripts": None
            if whitespace
            else "grapheme-cluster bigrams (Han, Kana, Thai, Lao, Khmer, Myanmar, Hangul)",
            "normalization": None if whitespace else "NFKC, lower case",
            "stemmer": STEMMERS.get(self.language),
            "shortest_stemmed": SHORTEST_STEMMED.get(STEMMERS.get(self.language, "")),
            "stopwords": f"bm25s {STOPWORDS[self.language]} ({len(self.stopwords)})"
            if self.stopwords
            else None,
        }

    def _terms(self, text: str) -> list[str]:
        if self.language in WHITESPACE_ONLY:
            return whitespace_tokens(text)
        text = unicodedata.normalize("NFKC", text).lower()
        if not _HAS_UNSPACED.search(text):  # the common case, one regex pass
            return self._words(_SEGMENTS.findall(text))
        terms: list[str] = []
        for unspaced, spaced in _RUNS.findall(text):
            if unspaced:
                terms.extend(grapheme_bigrams(unspaced))
            elif _LETTER_OR_DIGIT.search(spaced):  # (most are punctuation: "，")
                terms.extend(self._words(_SEGMENTS.findall(spaced)))
        return terms

    def _words(self, segments: list[str]) -> list[str]:
        """The segments that are words, each with its language's apostrophe rule applied, less the
        stopwords (after the rule: "it's" is "it", a stopword)."""
        words = [segment for segment in segments if segment[0].isalnum() or _LETTER_OR_DIGIT.search(segment)]
        if self.language in APOSTROPHE_RULES:
            rule = APOSTROPHE_RULES[self.language][1]
            # (the two apostrophes of _APOSTROPHES written out: this runs for every word of a corpus)
            words = [rule(word) if "'" in word or "\u2019" in word else word for word in words]
        stopwords = self.stopwords
        return [word for word in words if word not in stopwords]

    def __call__(self, text: str) -> list[str]:
        terms = self._terms(text)
        if self._stemmer is None:
            return terms
        stems = self._stemmer.stemWords(terms)
        shortest = SHORTEST_STEMMED.get(STEMMERS[self.language], 0)
        return [term if len(term) < shortest else stem for term, stem in zip(terms, stems)]
