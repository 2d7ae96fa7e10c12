"""Small datasets in the real BEIR/MIRACL/Vaswani source layouts, for the real ir_datasets loader.

Files are written where ir_datasets caches its downloads under `IR_DATASETS_HOME`; a cached file
is used as is, so the loader, its doc store and its query filtering all run for real.
"""

from __future__ import annotations

import gzip
import json
import re
import zipfile
from pathlib import Path

# --- BEIR --------------------------------------------------------------------------------------

# scifact: titles and graded labels. Query 3 is judged but absent from the run (scores 0).
SCIFACT_DOCS = {
    "s1": ("Aspirin and heart attacks", "Daily low-dose aspirin lowers the risk of a first heart attack."),
    "s2": ("Coffee consumption", "Moderate coffee drinking shows no link to heart disease in cohorts."),
    "s3": ("Aspirin side effects", "Bleeding in the stomach is the main risk of aspirin therapy."),
    "s4": ("Vitamin D and bones", "Vitamin D supplements improve bone density in older adults."),
    "s5": ("Sleep and memory", "Deep sleep consolidates declarative memories."),
    "s6": ("Exercise", "Regular exercise lowers blood pressure."),
    "s7": ("Gut bacteria", "The gut microbiome shapes immune responses in infants."),
    "s8": ("Calcium intake", "Calcium without vitamin D does little for bone strength."),
    "s9": ("", "   "),  # an empty document
}
SCIFACT_QUERIES = {
    "1": "does aspirin prevent heart attacks",
    "2": "vitamin d bone density",
    "3": "microbiome and immunity",
    "9": "an unjudged query that only the train split would judge",
}
SCIFACT_QRELS = {"1": {"s1": 2, "s3": 1}, "2": {"s4": 1}, "3": {"s7": 2}}
SCIFACT_RUN = {
    "1": {"s2": 5.0, "s1": 4.0, "s3": 4.0, "s5": 3.0, "s6": 2.0},
    "2": {"s1": 2.0, "s4": 1.0, "s8": 0.5},
    "9": {"s5": 1.0},
}

# fiqa: no title attribute at all.
FIQA_DOCS = {
    "f1": "Index funds have low fees and track the market.",
    "f2": "A Roth IRA is funded with after-tax money.",
    "f3": "Dividends are paid from company profits.",
    "f4": "Bonds pay fixed interest until maturity.",
}
FIQA_QUERIES = {"10": "what is a roth ira", "11": "how do bonds pay"}
FIQA_QRELS = {"10": {"f2": 1}, "11": {"f4": 1}}
FIQA_RUN = {"10": {"f1": 3.0, "f2": 2.5, "f3": 1.0}, "11": {"f4": 9.0, "f3": 1.0}}

# arguana: every query is also a document with the same id, ranked first by the run.
ARGUANA_DOCS = {
    "a1": ("Ban smoking", "Smoking in public harms bystanders."),
    "a2": ("Allow smoking", "Adults may choose their own risks."),
    "a3": ("Tax cigarettes", "Taxes reduce smoking rates."),
    "a4": ("School uniforms", "Uniforms reduce bullying."),
    "a5": ("No uniforms", "Uniforms limit self-expression."),
}
ARGUANA_QUERIES = {"a1": "Smoking in public harms bystanders.", "a4": "Uniforms reduce bullying."}
ARGUANA_QRELS = {"a1": {"a2": 1}, "a4": {"a5": 1}}
ARGUANA_RUN = {
    "a1": {"a1": 10.0, "a3": 5.0, "a2": 4.0},
    "a4": {"a4": 10.0, "a5": 6.0, "a2": 1.0},
}

# cqadupstack: two of the twelve forums.
CQA = {
    "android": {
        "docs": {
            "c1": ("Battery drains fast", "My phone battery drains overnight."),
            "c2": ("Root a device", "How to root an android phone safely."),
            "c3": ("Wifi drops", "Wifi disconnects when the screen is off."),
        },
        "queries": {"q1": "battery drain overnight", "q2": "wifi keeps disconnecting"},
        "qrels": {"q1": {"c1": 1}, "q2": {"c3": 1}},
        "run": {"q1": {"c2": 2.0, "c1": 1.0}, "q2": {"c3": 3.0, "c1": 1.0}},
    },
    "english": {
        "docs": {
            "e1": ("Affect or effect", "Affect is usually a verb, effect a noun."),
            "e2": ("Oxford comma", "The serial comma precedes the last item."),
        },
        "queries": {"q7": "difference between affect and effect"},
        "qrels": {"q7": {"e1": 1}},
        "run": {"q7": {"e2": 2.0, "e1": 1.5}},
    },
}


def _zip_dataset(
    path: Path, prefix: str, docs: dict, queries: dict, qrels: dict, metadata=None, splits=("test",)
) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    metadata = metadata or {}
    with zipfile.ZipFile(path, "a" if path.exists() else "w") as archive:
        corpus_lines = []
        for doc_id, value in docs.items():
            title, text = value if isinstance(value, tuple) else ("", value)
            corpus_lines.append(
                json.dumps({"_id": doc_id, "title": title, "text": text, "metadata": metadata.get("doc", {})})
            )
        archive.writestr(f"{prefix}/corpus.jsonl", "\n".join(corpus_lines) + "\n")
        query_lines = [
            json.dumps({"_id": q, "text": t, "metadata": metadata.get("query", {})})
            for q, t in queries.items()
        ]
        archive.writestr(f"{prefix}/queries.jsonl", "\n".join(query_lines) + "\n")
        rows = ["query-id\tcorpus-id\tscore"] + [
            f"{q}\t{d}\t{rel}" for q, docs_ in qrels.items() for d, rel in docs_.items()
        ]
        for split in splits:
            archive.writestr(f"{prefix}/qrels/{split}.tsv", "\n".join(rows) + "\n")


def write_beir(home: Path) -> None:
    beir = home / "beir"
    # the train split repeats the test qrels: a dataset id that differs and nothing else
    _zip_dataset(
        beir / "scifact" / "source.zip", "scifact", SCIFACT_DOCS, SCIFACT_QUERIES, SCIFACT_QRELS,
        splits=("test", "train"),
    )  # fmt: skip
    _zip_dataset(beir / "fiqa" / "source.zip", "fiqa", FIQA_DOCS, FIQA_QUERIES, FIQA_QRELS)
    _zip_dataset(beir / "arguana" / "source.zip", "arguana", ARGUANA_DOCS, ARGUANA_QUERIES, ARGUANA_QRELS)
    for forum, data in CQA.items():
        _zip_dataset(
            beir / "cqadupstack" / "source.zip",
            f"cqadupstack/{forum}",
            data["docs"],
            data["queries"],
            data["qrels"],
            metadata={"doc": {"tags": ["x"]}, "query": {"tags": ["x"]}},
        )


# --- MIRACL --------------------------------------------------------------------------------------

# Real sentences written for these tests; in each language the first query's relevant passage is
# the obvious answer, and every query has exactly one relevant passage.
MIRACL = {
    "sw": {
        "docs": {
            "100#0": ("Nairobi", "Nairobi ni mji mkuu wa Kenya."),
            "100#1": ("Nairobi", "Mji huo una wakazi zaidi ya milioni nne."),
            "200#0": ("Mlima Kilimanjaro", "Kilimanjaro ni mlima mrefu zaidi barani Afrika."),
        },
        "queries": {"1": "Mji mkuu wa Kenya ni upi?", "2": "Mlima mrefu zaidi Afrika ni upi?"},
        "qrels": {"1": {"100#0": 1, "100#1": 0}, "2": {"200#0": 1}},
    },
    "yo": {
        "docs": {
            "300#0": ("Èkó", "Èkó jẹ́ ìlú tó tóbi jùlọ ní Nàìjíríà."),
            "300#1": ("Àbújá", "Àbújá ni olú ìlú Nàìjíríà."),
        },
        "queries": {"5": "Kí ni olú ìlú Nàìjíríà?"},
        "qrels": {"5": {"300#1": 1, "300#0": 0}},
    },
    "ar": {
        "docs": {
            "1#0": ("القاهرة", "القاهرة هي عاصمة جمهورية مصر العربية وأكبر مدنها."),
            "1#1": ("القاهرة", "يمر نهر النيل عبر مدينة القاهرة."),
            "2#0": ("الرياض", "الرياض هي عاصمة المملكة العربية السعودية."),
            "3#0": ("كرة القدم", "كرة القدم هي الرياضة الأكثر شعبية في العالم."),
        },
        "queries": {"1": "ما هي عاصمة مصر؟", "2": "ما هي عاصمة السعودية؟"},
        "qrels": {"1": {"1#0": 1, "1#1": 0}, "2": {"2#0": 1}},
    },
    "hi": {
        "docs": {
            "10#0": ("ताजमहल", "ताजमहल आगरा में स्थित एक सफेद संगमरमर का मकबरा है।"),
            "11#0": ("गंगा", "गंगा भारत की सबसे लंबी नदी है।"),
            "12#0": ("दिल्ली", "नई दिल्ली भारत की राजधानी है।"),
        },
        "queries": {"1": "ताजमहल कहाँ स्थित है?", "2": "भारत की राजधानी क्या है?"},
        "qrels": {"1": {"10#0": 1}, "2": {"12#0": 1, "11#0": 0}},
    },
    "th": {
        "docs": {
            "20#0": ("กรุงเทพมหานคร", "กรุงเทพมหานครเป็นเมืองหลวงของประเทศไทย"),
            "21#0": ("เชียงใหม่", "เชียงใหม่เป็นจังหวัดทางภาคเหนือของประเทศไทย"),
            "22#0": ("ช้าง", "ช้างเป็นสัตว์ประจำชาติของไทย"),
        },
        "queries": {"1": "เมืองหลวงของประเทศไทยคืออะไร", "2": "สัตว์ประจำชาติของไทย"},
        "qrels": {"1": {"20#0": 1}, "2": {"22#0": 1}},
    },
    "zh": {
        "docs": {
            "30#0": ("北京", "北京是中华人民共和国的首都。"),
            "31#0": ("长城", "长城是中国古代的军事防御工程。"),
            "32#0": ("熊猫", "大熊猫主要生活在四川的山区。"),
        },
        "queries": {"1": "中国的首都是哪里", "2": "大熊猫生活在哪里"},
        "qrels": {"1": {"30#0": 1}, "2": {"32#0": 1}},
    },
    "ja": {
        "docs": {
            "40#0": ("東京", "東京は日本の首都であり、最大の都市です。"),
            "41#0": ("富士山", "富士山は日本で最も高い山です。"),
            "42#0": ("寿司", "寿司は日本の伝統的な料理です。"),
        },
        "queries": {"1": "日本の首都はどこですか", "2": "日本で一番高い山"},
        "qrels": {"1": {"40#0": 1}, "2": {"41#0": 1}},
    },
}


def miracl_shards(lang: str) -> list[str]:
    """The corpus shard files ir_datasets expects for a language (from its downloads.json)."""
    import ir_datasets

    downloads = json.loads((Path(ir_datasets.__file__).parent / "etc" / "downloads.json").read_text())
    prefix = f"v1.0/{lang}/corpus/"
    return [v["cache_path"] for k, v in downloads["miracl"].items() if k.startswith(prefix)]


def write_miracl(home: Path) -> None:
    for lang, data in MIRACL.items():
        shards = miracl_shards(lang)
        for index, shard in enumerate(shards):
            path = home / "miracl" / shard
            path.parent.mkdir(parents=True, exist_ok=True)
            with gzip.open(path, "wt", encoding="utf-8") as handle:
                for doc_id, (title, text) in data["docs"].items() if index == 0 else ():
                    record = {"docid": doc_id, "title": title, "text": text}
                    handle.write(json.dumps(record, ensure_ascii=False) + "\n")
        base = home / "miracl" / "v1.0" / lang / "dev"
        base.mkdir(parents=True, exist_ok=True)
        (base / "topics.tsv").write_text(
            "".join(f"{q}\t{t}\n" for q, t in data["queries"].items()), encoding="utf-8"
        )
        (base / "qrels.tsv").write_text(
            "".join(f"{q} Q0 {d} {r}\n" for q, docs in data["qrels"].items() for d, r in docs.items()),
            encoding="utf-8",
        )


# --- Vaswani (the real collection in ../shared, converted to ir_datasets' cached layout) ----------


def write_vaswani(home: Path, shared: Path) -> None:
    """ir_datasets' `vaswani` reads docs/queries/qrels from its npl cache files; write them."""
    base = home / "vaswani"
    base.mkdir(parents=True, exist_ok=True)
    docs_text = (shared / "doc-text.trec").read_text(encoding="utf-8", errors="replace")
    with open(base / "docs.txt", "w", encoding="utf-8") as out:
        for doc_id, text in re.findall(r"<DOCNO>\s*(\S+)\s*</DOCNO>(.*?)</DOC>", docs_text, re.S):
            out.write(f"{doc_id}\n{text.strip()}\n   /\n")
    queries_text = (shared / "query-text.trec").read_text(encoding="utf-8", errors="replace")
    with open(base / "queries.txt", "w", encoding="utf-8") as out:
        for query_id, text in re.findall(
            r"<num>\s*(\S+)\s*</num>\s*<title>(.*?)</title>", queries_text, re.S
        ):
            out.write(f"{query_id}\n{' '.join(text.split())}\n/\n")
    judged: dict[str, list[str]] = {}
    for line in (shared / "qrels").read_text(encoding="utf-8").splitlines():
        fields = line.split()
        if len(fields) == 4 and int(fields[3]) > 0:
            judged.setdefault(fields[0], []).append(fields[2])
    with open(base / "qrels.txt", "w", encoding="utf-8") as out:
        for query_id, doc_ids in judged.items():
            out.write(f"{query_id}\n{' '.join(doc_ids)}\n   /\n")


# --- run files and hub caches -------------------------------------------------------------------


def reseal(folder: Path) -> None:
    """A result folder whose per_query.csv a test rewrote, its manifest's hash of that file made to
    match: a result that holds those values, not a hand-edited one (which is refused)."""
    import hashlib

    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["per_query_sha256"] = hashlib.sha256((folder / "per_query.csv").read_bytes()).hexdigest()
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")


def write_local_entry(
    folder: Path, corpus: str | bytes, queries: str | bytes, qrels: str | bytes,
    names: tuple[str, str, str] = ("c.jsonl", "q.jsonl", "r.txt"),
) -> Path:  # fmt: skip
    """A benchmarks file whose suite `bad` holds one local dataset `b` of these three files, all
    written into `folder`; its path."""
    for name, text in zip(names, (corpus, queries, qrels), strict=True):
        (folder / name).write_bytes(text.encode() if isinstance(text, str) else text)
    config = folder / "bad.yaml"
    config.write_text(
        "suites:\n  bad:\n    datasets:\n"
        f"      - {{key: b, corpus: {names[0]}, queries: {names[1]}, qrels: {names[2]}}}\n"
    )
    return config


def write_run(path: Path, run: dict[str, dict[str, float]], tag: str = "fixture") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = []
    for query_id, docs in run.items():
        ranked = sorted(docs.items(), key=lambda item: -item[1])
        lines += [f"{query_id} Q0 {d} {i} {s} {tag}" for i, (d, s) in enumerate(ranked, start=1)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def put_in_hub_cache(
    hub_cache: Path,
    repo_id: str,
    repo_type: str,
    filename: str,
    content: bytes,
    commit: str = "0123456789abcdef0123456789abcdef01234567",
) -> None:
    """Place a file as huggingface_hub's cache holds a downloaded one (snapshots + refs/main)."""
    repo_dir = hub_cache / f"{repo_type}s--{repo_id.replace('/', '--')}"
    target = repo_dir / "snapshots" / commit / filename
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(content)
    (repo_dir / "refs").mkdir(parents=True, exist_ok=True)
    (repo_dir / "refs" / "main").write_text(commit)


# --- a larger synthetic dataset (nq layout) for long-running tests ------------------------------


def synthetic_nq(queries: int = 48, docs_per_query: int = 20, seed: int = 0):
    """Docs, queries, qrels and a run with scores for a BEIR `nq`-shaped fixture."""
    import random

    rng = random.Random(seed)
    words = [
        w
        for text in (
            "the quick brown fox jumps over the lazy dog information retrieval "
            "ranks passages by relevance to a query aspirin lowers the risk of heart "
            "attacks vitamin d and calcium keep bones strong"
        ).split()
        for w in [text]
    ]
    docs, run, qrels, query_texts = {}, {}, {}, {}
    for q in range(queries):
        query_id = f"test{q}"
        query_texts[query_id] = " ".join(rng.choices(words, k=6))
        run[query_id] = {}
        for d in range(docs_per_query):
            doc_id = f"doc{q}_{d}"
            docs[doc_id] = (
                " ".join(rng.choices(words, k=3)),
                " ".join(rng.choices(words, k=rng.randint(10, 40))),
            )
            run[query_id][doc_id] = round(rng.uniform(1, 20), 3)
        qrels[query_id] = {f"doc{q}_{rng.randrange(docs_per_query)}": 1}
    return docs, query_texts, qrels, run


def write_synthetic_nq(home: Path) -> None:
    docs, queries, qrels, _ = synthetic_nq()
    _zip_dataset(home / "beir" / "nq" / "source.zip", "nq", docs, queries, qrels)
