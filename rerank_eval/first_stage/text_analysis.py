"""Language-aware text analysis for the built-in BM25 (an approximation of Lucene's analyzers).

- Words are maximal runs of letters and digits together with their combining marks, so Hindi,
  Bengali and Telugu words (vowel signs, viramas) are never cut inside (`\\w` would cut them).
- Scripts written without spaces (Han, Hiragana, Katakana, Thai, Lao, Khmer, Myanmar, and Hangul
  as Lucene's CJKAnalyzer does) become overlapping bigrams of grapheme clusters: the approach of
  Lucene's CJKAnalyzer, needing no dictionary, so a query for any sub-phrase of two or more
  characters matches. Thai combining vowels and tone marks stay with their base consonant.
- Text is NFKC-normalised and lower-cased; Snowball stemming (PyStemmer) and stopword lists (bm25s)
  are applied where they exist for the language.
"""

from __future__ import annotations

import itertools
import unicodedata
from functools import cached_property

import regex

ANALYZER_VERSION = 2  # 2: the katakana prolonged sound mark stays inside its word
# U+30FC (ー) is of the Common script but belongs to Kana words (コーヒー), as UAX #29 has it.
_UNSPACED = r"\p{Han}\p{Hiragana}\p{Katakana}\u30fc\p{Thai}\p{Lao}\p{Khmer}\p{Myanmar}\p{Hangul}"
_RUNS = regex.compile(
    rf"(?V1)(?P<unspaced>(?:[{_UNSPACED}]\p{{M}}*)+)|(?P<word>(?:[[\p{{L}}\p{{N}}]--[{_UNSPACED}]]\p{{M}}*)+)"
)
_WORDS = regex.compile(r"(?:[\p{L}\p{N}]\p{M}*)+")
_HAS_UNSPACED = regex.compile(rf"[{_UNSPACED}]")
_GRAPHEME = regex.compile(r"\X")

# ISO 639-1 code -> Snowball algorithm in PyStemmer
STEMMERS = {
    "ar": "arabic", "de": "german", "en": "english", "es": "spanish", "fa": "persian", "fi": "finnish",
    "fr": "french", "hi": "hindi", "id": "indonesian", "ru": "russian",
}  # fmt: skip
# ISO 639-1 code -> stopword list in bm25s.stopwords
STOPWORDS = {
    "en": "STOPWORDS_EN", "de": "STOPWORDS_GERMAN", "es": "STOPWORDS_SPANISH", "fr": "STOPWORDS_FRENCH",
    "ru": "STOPWORDS_RUSSIAN",
}  # fmt: skip


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
        return {
            "analyzer_version": ANALYZER_VERSION,
            "language": self.language,
            "words": "letters and digits with their combining marks (Unicode)",
            "unspaced_scripts": "grapheme-cluster bigrams (Han, Kana, Thai, Lao, Khmer, Myanmar, Hangul)",
            "normalization": "NFKC, lower case",
            "stemmer": STEMMERS.get(self.language),
            "stopwords": f"bm25s {STOPWORDS[self.language]} ({len(self.stopwords)})"
            if self.stopwords
            else None,
        }

    def _terms(self, text: str) -> list[str]:
        text = unicodedata.normalize("NFKC", text).lower()
        stopwords = self.stopwords
        if not _HAS_UNSPACED.search(text):  # the common case, one regex pass
            return [word for word in _WORDS.findall(text) if word not in stopwords]
        terms: list[str] = []
        for unspaced, word in _RUNS.findall(text):
            if unspaced:
                terms.extend(grapheme_bigrams(unspaced))
            elif word not in stopwords:
                terms.append(word)
        return terms

    def __call__(self, text: str) -> list[str]:
        terms = self._terms(text)
        return self._stemmer.stemWords(terms) if self._stemmer else terms
