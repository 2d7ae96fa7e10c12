"""Language-aware text analysis for the built-in BM25 (an approximation of Lucene's analyzers).

- Words are Unicode's word segments (UAX #29, as Lucene's StandardTokenizer cuts them) that hold
  a letter, a number or an emoji by UAX #29's word-break classes, as its tokens do ("x²" is "x",
  "½" nothing, "😀" and "Ⓐ" words): combining marks stay with their letter, so Hindi, Bengali and
  Telugu words (vowel signs, viramas) are never cut inside (`\\w` would cut them), and an
  apostrophe, a period or an underscore between letters or digits stays inside the word (don't,
  O'Neil, U.S.A, 3.14). A word reaching 255 UTF-16 code units is cut there, as Lucene cuts it.
- As Lucene's analyzers do for their language: English drops a possessive 's, French an elided
  article (l', d', qu', ...), and English is stemmed by the original Porter algorithm with its
  words of one or two letters left alone (Lucene's PorterStemmer; Snowball's "porter" stems them).
- In Chinese, Japanese, Korean and Thai, scripts written without spaces (Han, Hiragana, Katakana,
  Thai, Lao, Khmer, Myanmar, and Hangul as Lucene's CJKAnalyzer does) become overlapping bigrams
  of grapheme clusters: the approach of Lucene's CJKAnalyzer, needing no dictionary, so a query
  for any sub-phrase of two or more characters matches. Thai combining vowels and tone marks stay
  with their base consonant. Hangul, which UAX #29 joins to Latin letters and digits, is
  bigrammed where a word is Hangul only: "2019년" and "NASA는" stay one word, as in CJKAnalyzer.
  In every other language they are cut as Lucene's StandardTokenizer cuts them: Han and Hiragana
  one character each, Katakana and Hangul words whole, Southeast Asian scripts in runs.
- Persian reads a zero-width non-joiner as a space (Lucene's PersianCharFilter). Text is
  lower-cased as Java lower-cases a character (İ is i, a final Σ is σ), but for Telugu,
  which Lucene's analyzer leaves as it is; no Unicode normalisation, as Lucene's analyzers have
  none, but their foldings: Chinese, Japanese and Korean fold fullwidth ASCII and halfwidth
  katakana (CJKWidthFilter), Arabic, Bengali, Persian, Hindi, Telugu and Thai fold every decimal
  digit to 0-9 (DecimalDigitFilter). Snowball stemming (PyStemmer) and stopword lists (bm25s; for
  Chinese and Korean the English ones less "an", with "s", "t" and "www", as Lucene's
  CJKAnalyzer's) are applied where they exist for the language.
- Where the reference BM25 (Pyserini's MIRACL runs) cuts text at whitespace only, so does this
  analyzer, as Lucene's WhitespaceAnalyzer: Yoruba (searched pretokenized) and Swahili (Anserini's
  rule for `-language sw`) keep case and punctuation ("Kenya." is not "kenya").
"""

from __future__ import annotations

import importlib.metadata
import itertools
import unicodedata
from functools import cached_property

import regex

from rerank_eval.first_stage.lucene_runtime import PRETOKENIZED_LANGUAGES, WHITESPACE_LANGUAGES

# 2: the katakana prolonged sound mark stays inside its word
# 3: UAX #29 words, English possessives and French elisions dropped, English by Lucene's Porter
# 4: Swahili and Yoruba cut at whitespace only, as the reference BM25 cuts them; Lucene's
#    lower-casing, width and digit foldings in place of NFKC; numbers of decimal digits only;
#    emoji are words; Chinese and Korean drop CJKAnalyzer's English stopwords; Hangul joined to
#    Latin letters or digits is one word; outside zh, ja, ko and th, unspaced scripts as
#    StandardTokenizer cuts them; words by UAX #29's classes, cut at 255 UTF-16 units; Persian's
#    ZWNJ a space
ANALYZER_VERSION = 4
# The scripts made bigrams of, by language: Han and Kana in Chinese, Japanese and Korean (as
# CJKAnalyzer), and Southeast Asian scripts too in Thai (its analyzer's dictionary approximated).
# U+30FC (ー) is of the Common script but belongs to Kana words (コーヒー), as UAX #29 has it.
# Hangul is not among them: UAX #29 has it as letters, which words of Hangul only are bigrams of.
_CJK_SCRIPTS = r"\p{Han}\p{Hiragana}\p{Katakana}\u30fc"
BIGRAMMED_SCRIPTS = {
    "ja": _CJK_SCRIPTS, "ko": _CJK_SCRIPTS, "zh": _CJK_SCRIPTS,
    "th": _CJK_SCRIPTS + r"\p{Thai}\p{Lao}\p{Khmer}\p{Myanmar}",
}  # fmt: skip
#: per bigrammed language: its runs of those scripts or of the rest, and whether a text has any
_BIGRAM_PATTERNS = {
    language: (
        regex.compile(rf"(?P<unspaced>(?:[{scripts}]\p{{M}}*)+)|(?P<spaced>[^{scripts}]+)"),
        regex.compile(rf"[{scripts}]"),
    )
    for language, scripts in BIGRAMMED_SCRIPTS.items()
}
_EMOJI = r"\p{Extended_Pictographic}\p{Regional_Indicator}"
#: StandardTokenizer's Southeast Asian runs (Thai, Lao, Khmer, Myanmar: no word breaks of their own)
_SOUTHEAST_ASIAN = r"\p{Line_Break=Complex_Context}"
# What Lucene's StandardTokenizer makes a token of, by UAX #29's word-break classes rather than
# general categories: letters (circled ones too: Ⓐ), numbers (decimal digits and their
# separators: ٫), Katakana, Han, Hiragana, Southeast Asian letters and emoji; not "²", "½", "①",
# nor a letter of no such class (〆).
_TOKEN_CHARACTERS = (
    rf"\p{{WB=ALetter}}\p{{WB=Hebrew_Letter}}\p{{WB=Numeric}}\p{{WB=Katakana}}\p{{Han}}\p{{Hiragana}}"
    rf"{_SOUTHEAST_ASIAN}{_EMOJI}"
)
# A word segment (the `w` flag: boundaries by UAX #29) begins with a token character or a
# connector ("_", U+202F), and is a word if it holds a token character: connectors alone ("__")
# are none.
_SEGMENTS = regex.compile(rf"(?wV1)\b[{_TOKEN_CHARACTERS}\p{{WB=ExtendNumLet}}].*?\b")
_WORD_CHARACTER = regex.compile(rf"[{_TOKEN_CHARACTERS}]")
_SOUTHEAST_ASIAN_RUNS = regex.compile(rf"(?P<run>{_SOUTHEAST_ASIAN}+)|(?P<other>[^{_SOUTHEAST_ASIAN}]+)")
_HAS_SOUTHEAST_ASIAN = regex.compile(_SOUTHEAST_ASIAN)
_HAS_HANGUL = regex.compile(r"\p{Hangul}")
_HANGUL_ONLY = regex.compile(r"[\p{Hangul}\p{M}]+")
_GRAPHEME = regex.compile(r"\X")
# ASCII, the right single quotation mark and the fullwidth one: EnglishPossessiveFilter's three;
# ElisionFilter takes the first two
_APOSTROPHES = ("'", "\u2019", "\uff07")
_POSSESSIVE_ENDINGS = tuple(f"{mark}s" for mark in _APOSTROPHES)
_ELISION_APOSTROPHES = _APOSTROPHES[:2]
_WIDTH_VARIANTS = regex.compile(r"[\uff01-\uff5e\uff65-\uff9f]+")
_OTHER_DECIMAL_DIGITS = regex.compile(r"(?V1)[\p{Nd}--[0-9]]")

# ISO 639-1 code -> Snowball algorithm in PyStemmer
STEMMERS = {
    "ar": "arabic", "de": "german", "en": "porter", "es": "spanish", "fa": "persian", "fi": "finnish",
    "fr": "french", "hi": "hindi", "id": "indonesian", "ru": "russian",
}  # fmt: skip
# ISO 639-1 code -> stopword list in bm25s.stopwords
STOPWORDS = {
    "en": "STOPWORDS_EN", "de": "STOPWORDS_GERMAN", "es": "STOPWORDS_SPANISH", "fr": "STOPWORDS_FRENCH",
    "ru": "STOPWORDS_RUSSIAN", "ko": "STOPWORDS_EN", "zh": "STOPWORDS_EN",
}  # fmt: skip
#: the languages Anserini analyzes with Lucene's CJKAnalyzer, and how its stopwords differ from
#: the English ones: "an" is none, these are
CJK_ANALYZER_LANGUAGES = frozenset({"ko", "zh"})
CJK_STOPWORDS = frozenset({"s", "t", "www"})
#: Lucene's analyzers with a CJKWidthFilter (fullwidth ASCII to ASCII, halfwidth katakana to katakana)
WIDTH_FOLDED = frozenset({"ja", "ko", "zh"})
#: Lucene's analyzers with a DecimalDigitFilter (every decimal digit to 0-9)
DIGITS_FOLDED = frozenset({"ar", "bn", "fa", "hi", "te", "th"})
#: Lucene's analyzers without a LowerCaseFilter
CASE_KEPT = frozenset({"te"})
#: Lucene's analyzers that read a zero-width non-joiner as a space (PersianCharFilter): "می‌خواهم"
#: is two words
ZWNJ_AS_SPACE = frozenset({"fa"})
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
    found = [index for index in map(word.find, _ELISION_APOSTROPHES) if index >= 0]
    if not found:  # (a fullwidth apostrophe only)
        return word
    cut = min(found)
    return word[cut + 1 :] if word[:cut] in FRENCH_ELIDED else word


def java_lower_case(text: str) -> str:
    """Lower case as Java's `Character.toLowerCase`, character by character (Lucene's
    LowerCaseFilter): Python's `lower` makes İ "i̇" (two characters) and a final Σ "ς"."""
    return text.replace("\u0130", "i").replace("\u03a3", "\u03c3").lower()


def folded_width(text: str) -> str:
    """Lucene's CJKWidthFilter: fullwidth ASCII to ASCII, halfwidth katakana to katakana (a
    halfwidth voiced mark joined to its kana), through NFKC of those characters only."""
    return _WIDTH_VARIANTS.sub(lambda run: unicodedata.normalize("NFKC", run.group()), text)


def folded_digits(text: str) -> str:
    """Lucene's DecimalDigitFilter: every decimal digit as its ASCII digit (٣ -> 3)."""
    return _OTHER_DECIMAL_DIGITS.sub(lambda digit: str(unicodedata.digit(digit.group())), text)


#: what a word with an apostrophe loses, by language: the rule as the manifest says it, and the rule
APOSTROPHE_RULES = {
    "en": ("a final 's dropped (Lucene's EnglishPossessiveFilter)", without_possessive),
    "fr": ("an elided article dropped (Lucene's ElisionFilter)", without_elision),
}


def whitespace_tokens(text: str) -> list[str]:
    """Lucene's WhitespaceTokenizer: runs between Java's whitespace, as they are, each cut into
    tokens of 255 UTF-16 code units."""
    return [token for run in _JAVA_WHITESPACE.split(text) if run for token in in_token_lengths(run)]


def in_token_lengths(run: str) -> list[str]:
    """A run every character of which belongs to its token, cut as Lucene's tokenizers cut one
    that reaches 255 UTF-16 code units (a character outside the BMP counts two): a token ends
    there and the next begins."""
    if len(run) * 2 < LONGEST_TOKEN:  # (the common case: too short to reach the limit)
        return [run]
    tokens: list[str] = []
    start, units = 0, 0
    for index, character in enumerate(run):
        units += 2 if ord(character) > 0xFFFF else 1
        if units >= LONGEST_TOKEN:
            tokens.append(run[start : index + 1])
            start, units = index + 1, 0
    if start < len(run):
        tokens.append(run[start:])
    return tokens


def _within_token_length(text: str) -> str:
    """The longest start of `text` within LONGEST_TOKEN UTF-16 code units."""
    units = 0
    for index, character in enumerate(text):
        units += 2 if ord(character) > 0xFFFF else 1
        if units > LONGEST_TOKEN:
            return text[:index]
    return text


def cut_to_token_length(word: str) -> list[str]:
    """A word as Lucene's StandardTokenizer emits it: one longer than 255 UTF-16 code units is
    cut into the longest word within the first 255, then the rest read the same way ("ab." x 90:
    a word of 254 characters, the period after it dropped, then "ab.ab.ab.ab.ab")."""
    pieces: list[str] = []
    while len(word) * 2 >= LONGEST_TOKEN:  # (shorter: within the limit whatever its characters)
        window = _within_token_length(word)
        if len(window) == len(word):
            break
        head = _SEGMENTS.match(window)
        pieces.append(head.group() if head else window)
        rest = word[len(pieces[-1]) :]  # (read anew: the cut is no word boundary in `word`)
        following = _SEGMENTS.search(rest)
        if following is None:
            return pieces
        word = rest[following.start() :]
    pieces.append(word)
    return pieces


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

        listed = frozenset(getattr(bm25s.stopwords, STOPWORDS[self.language]))
        return listed - {"an"} | CJK_STOPWORDS if self.language in CJK_ANALYZER_LANGUAGES else listed

    def describe(self) -> dict[str, object]:
        whitespace = self.language in WHITESPACE_ONLY
        return {
            "analyzer_version": ANALYZER_VERSION,
            "language": self.language,
            "words": "cut at whitespace only, case and punctuation kept (Lucene's WhitespaceAnalyzer)"
            if whitespace
            else "UAX #29 word segments with a letter, decimal digit or emoji, their combining marks kept",
            "apostrophes": APOSTROPHE_RULES[self.language][0] if self.language in APOSTROPHE_RULES else None,
            "unspaced_scripts": None if whitespace else self._unspaced(),
            "normalization": None if whitespace else self._normalization(),
            "stemmer": STEMMERS.get(self.language),
            "shortest_stemmed": SHORTEST_STEMMED.get(STEMMERS.get(self.language, "")),
            "stopwords": self._stopwords_named(),
            "libraries": self._libraries(whitespace),
        }

    def _libraries(self, whitespace: bool) -> dict[str, str]:
        """The versions the terms depend on, so an index built under others is not reused. Snowball's
        stemmers change between PyStemmer releases: of Vaswani's 12,226 words, 3.0's Finnish stems 6
        otherwise than 3.1's, 2.2's German 236, and Persian arrives in 3.1. Word classes and case
        mappings follow the Unicode tables of regex and of Python."""
        versions = {} if whitespace else {"regex": regex.__version__, "unicode": unicodedata.unidata_version}
        if self.language in STEMMERS:  # (the stemmer itself is not loaded to say so)
            versions["PyStemmer"] = importlib.metadata.version("PyStemmer")
        return versions

    def _stopwords_named(self) -> str | None:
        if not self.stopwords:
            return None
        cjk = " as CJKAnalyzer's: less an, with s, t, www" if self.language in CJK_ANALYZER_LANGUAGES else ""
        return f"bm25s {STOPWORDS[self.language]}{cjk} ({len(self.stopwords)})"

    def _unspaced(self) -> str:
        if self.language == "th":
            return "grapheme-cluster bigrams (Han, Kana, Thai, Lao, Khmer, Myanmar)"
        if self.language in BIGRAMMED_SCRIPTS:
            return "grapheme-cluster bigrams (Han, Kana, words of Hangul only); Southeast Asian runs"
        return (
            "as StandardTokenizer: Han and Hiragana by character, Katakana and Hangul words, "
            "Southeast Asian runs"
        )

    def _normalization(self) -> str:
        steps = ["zero-width non-joiner as a space"] if self.language in ZWNJ_AS_SPACE else []
        steps.append("case kept" if self.language in CASE_KEPT else "lower case (Java's)")
        if self.language in WIDTH_FOLDED:
            steps.append("CJK width folded")
        if self.language in DIGITS_FOLDED:
            steps.append("decimal digits folded to 0-9")
        return ", ".join(steps)

    def _normalized(self, text: str) -> str:
        """Lucene's order: a ZWNJ read as a space, width folded, lower-cased, digits folded."""
        if self.language in ZWNJ_AS_SPACE:
            text = text.replace("\u200c", " ")
        if self.language in WIDTH_FOLDED:
            text = folded_width(text)
        if self.language not in CASE_KEPT:
            text = java_lower_case(text)
        if self.language in DIGITS_FOLDED:
            text = folded_digits(text)
        return text

    def _terms(self, text: str) -> list[str]:
        if self.language in WHITESPACE_ONLY:
            return whitespace_tokens(text)
        text = self._normalized(text)
        if self.language not in BIGRAMMED_SCRIPTS:
            return self._standard_terms(text, hangul=False)
        hangul = _HAS_HANGUL.search(text) is not None
        runs, has_bigrammed = _BIGRAM_PATTERNS[self.language]
        if not has_bigrammed.search(text):
            return self._standard_terms(text, hangul)
        terms: list[str] = []
        for unspaced, spaced in runs.findall(text):
            if unspaced:
                terms.extend(grapheme_bigrams(unspaced))
            elif _WORD_CHARACTER.search(spaced):  # (most are punctuation: "，")
                terms.extend(self._standard_terms(spaced, hangul))
        return terms

    def _standard_terms(self, text: str, hangul: bool) -> list[str]:
        """StandardTokenizer's way with scripts written without spaces: UAX #29 (Han and Hiragana
        one character each, Katakana and Hangul words whole), Southeast Asian runs whole;
        `hangul`: whether words of Hangul only become bigrams (CJKAnalyzer)."""
        if not _HAS_SOUTHEAST_ASIAN.search(text):  # the common case, one regex pass
            return self._words(_SEGMENTS.findall(text), hangul)
        terms: list[str] = []
        for run, other in _SOUTHEAST_ASIAN_RUNS.findall(text):
            if run:
                terms.extend(in_token_lengths(run))
            elif _WORD_CHARACTER.search(other):
                terms.extend(self._words(_SEGMENTS.findall(other), hangul))
        return terms

    def _words(self, segments: list[str], hangul: bool) -> list[str]:
        """The segments that are words, each with its language's apostrophe rule applied, less the
        stopwords (after the rule: "it's" is "it", a stopword); `hangul`: whether words of Hangul
        only become bigrams (CJKAnalyzer), where the text holds any."""
        # (an ASCII letter first: a word for sure, without a regex search)
        words = [
            segment
            for segment in segments
            if (segment[0].isascii() and segment[0].isalpha()) or _WORD_CHARACTER.search(segment)
        ]
        if max(map(len, words), default=0) * 2 >= LONGEST_TOKEN:  # (rare: no Python loop otherwise)
            words = [piece for word in words for piece in cut_to_token_length(word)]
        if self.language in APOSTROPHE_RULES:
            rule = APOSTROPHE_RULES[self.language][1]
            # (the apostrophes of _APOSTROPHES written out: this runs for every word of a corpus)
            words = [
                rule(word) if "'" in word or "\u2019" in word or "\uff07" in word else word for word in words
            ]
        stopwords = self.stopwords
        words = [word for word in words if word not in stopwords]
        if not hangul:
            return words
        return [term for word in words for term in self._hangul_bigrams(word)]

    @staticmethod
    def _hangul_bigrams(word: str) -> list[str]:
        """A word of Hangul only as the bigrams of its syllables (CJKBigramFilter takes tokens of
        Hangul only); a word joining Hangul to other letters or digits as it is."""
        return grapheme_bigrams(word) if _HANGUL_ONLY.fullmatch(word) else [word]

    def __call__(self, text: str) -> list[str]:
        terms = self._terms(text)
        if self._stemmer is None:
            return terms
        stems = self._stemmer.stemWords(terms)
        shortest = SHORTEST_STEMMED.get(STEMMERS[self.language], 0)
        return [term if len(term) < shortest else stem for term, stem in zip(terms, stems)]
