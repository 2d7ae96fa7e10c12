"""Put the Vaswani collection of the workspace (../shared/data/vaswani: TREC SGML documents and
topics, qrels) where ir_datasets' `vaswani` reads it, so that `rerank-eval run vaswani` runs without
internet: the files ir_datasets would otherwise extract from its download, under IR_DATASETS_HOME
(default ~/.ir_datasets). The tests build their fixture the same way.

    .venv/bin/python scripts/vaswani.py [FOLDER]
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rerank_eval.cache import ir_datasets_home
from tests.builders import write_vaswani

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    shared = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT.parent / "shared" / "data" / "vaswani"
    if not (shared / "doc-text.trec").is_file():
        sys.exit(f"error: no Vaswani collection at {shared} (doc-text.trec, query-text.trec, qrels)")
    home = ir_datasets_home()
    write_vaswani(home, shared)
    print(
        f"ir_datasets' vaswani written under {home / 'vaswani'}; "
        "now: rerank-eval run vaswani --model minilm-bi"
    )


if __name__ == "__main__":
    main()
