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
# Under pytest-xdist (`make test` runs one worker per core), each worker and the processes its
# tests start share the cores instead of each spinning a thread per core. Set before torch is
# imported, so a test's own process and the commands it starts use the same count (float32 sums,
# and so scores, follow it).
if os.environ.get("PYTEST_XDIST_WORKER_COUNT"):
    _threads = max(1, (os.cpu_count() or 1) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"]))
    os.environ.setdefault("OMP_NUM_THREADS", str(_threads))

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
    from rerank_eval.first_stage import bm25_index as bm25

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(bm25, "available_memory", lambda: 2**50)
        yield


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny models gain nothing from threads, and on a busy 2-core machine torch's threads contend
    (a hundredfold slower); one thread for a module, the previous count restored after it."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture
def offline(monkeypatch):
    """Every ir_datasets download fails as it does without a network: the name does not resolve."""
    import contextlib

    import requests
    from ir_datasets.util.download import RequestsDownload

    @contextlib.contextmanager
    def unreachable(self):
        raise requests.exceptions.ConnectionError(f"Failed to resolve host of {self.url}")
        yield  # pragma: no cover

    monkeypatch.setattr(RequestsDownload, "stream", unreachable)
