"""The default result folder (no `--out`): which name a run claims, and what it leaves alone.

The array-job and killed-run cases are in test_hostile_input.py; these are the rules each of them
relies on, one at a time."""

from __future__ import annotations

import concurrent.futures
import json
import shutil
from datetime import datetime
from pathlib import Path

import pytest

from rerank_eval.cli import result_folder
from rerank_eval.errors import UserError
from rerank_eval.results import staging

BASE = "results/bm25-mine-20261201-191130"


@pytest.fixture
def frozen_in_results(tmp_path, monkeypatch) -> Path:
    """Runs started at one instant, in tmp_path (where results/ goes)."""

    class Frozen(datetime):
        @classmethod
        def now(cls, tz=None):
            return datetime(2026, 12, 1, 19, 11, 30)

    monkeypatch.setattr(result_folder, "datetime", Frozen)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_runs_started_in_one_second_without_out_get_folders_of_their_own(frozen_in_results):
    first = result_folder.default_out(["bm25"], "mine")
    assert first == Path(BASE) and Path(BASE + ".incomplete").is_dir()  # claimed: the run writes there
    assert result_folder.default_out(["bm25"], "mine") == Path(BASE + "-2")
    Path(BASE + "-3").mkdir()  # a published result
    assert result_folder.default_out(["bm25"], "mine") == Path(BASE + "-4")
    # several models write into the folder itself
    several = Path("results/bm25+minilm-bi-mine-20261201-191130")
    assert result_folder.default_out(["bm25", "minilm-bi"], "mine") == several and several.is_dir()
    # jobs started at the same instant (an array job) each get a folder of their own
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        names = list(pool.map(lambda _: result_folder.default_out(["x"], "mine"), range(16)))
    assert len(set(names)) == 16
    assert not Path("results/x-mine-20261201-191130").exists()  # nothing published, only claimed
    result_folder.release_default_out(first, ["bm25"])  # a run that ended before it wrote anything
    assert not Path(BASE + ".incomplete").exists() and Path("results").is_dir()  # others' claims stay
    # without claiming (the ranks of a torchrun job other than 0) the name alone
    assert result_folder.default_out(["bm25"], "mine", claim=False) == Path(BASE)
    # results/ that cannot hold folders (a link to an unmounted disk) is one line, not a search
    shutil.rmtree("results")
    Path("results").symlink_to(frozen_in_results / "unmounted" / "results")
    with pytest.raises(
        UserError, match=r"^cannot create a result folder in results/: results is not a folder"
    ):
        result_folder.default_out(["bm25"], "mine")


def test_the_other_ranks_of_a_torchrun_job_name_the_folder_and_make_nothing(frozen_in_results):
    assert result_folder.default_out(["bm25"], "mine", claim=False) == Path(BASE)
    assert not Path("results").exists()  # rank 0 claims it; the others write nothing


def test_a_link_where_the_name_would_be_is_passed_over(frozen_in_results):
    """A dangling link at the name does not exist for Path.exists(), yet publishing would rename
    the result onto it."""
    Path("results").mkdir()
    Path(BASE).symlink_to(frozen_in_results / "elsewhere")
    assert result_folder.default_out(["bm25"], "mine") == Path(BASE + "-2")
    assert not Path(BASE + ".incomplete").exists() and Path(BASE).is_symlink()


def test_a_claim_swept_before_it_was_locked_moves_on_to_the_next_name(frozen_in_results, monkeypatch):
    """Between making its claim and locking it, another run's sweep may remove it (unlocked, it
    reads as a killed run's): the name is then that run's to take, and this one takes the next."""
    tried: list[Path] = []
    lock = staging.hold_ahead

    def swept_first(folder: Path) -> bool:
        if not tried:
            tried.append(folder)
            shutil.rmtree(folder)  # as the sweeping run does
            return False
        return lock(folder)

    monkeypatch.setattr(staging, "hold_ahead", swept_first)
    assert result_folder.default_out(["bm25"], "mine") == Path(BASE + "-2")
    assert tried == [Path(BASE + ".incomplete")] and Path(BASE + "-2.incomplete").is_dir()


def test_a_claim_made_and_swept_before_this_run_looked_moves_on(frozen_in_results, monkeypatch):
    """Array jobs: one job makes a name's claim, a second fails to make it, and a third sweeps it
    (not yet locked) before the second looks. The second goes on to the next number; the claim it
    no longer finds does not mean that results/ is in the way (CI once failed that way)."""
    Path("results").mkdir()
    make = Path.mkdir
    raced: list[str] = []

    def made_and_swept(self, *args, **kwargs):
        if self.name.endswith(".incomplete") and not raced:
            raced.append(self.name)
            raise FileExistsError(self)  # made by another job, gone again by now
        return make(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", made_and_swept)
    assert result_folder.default_out(["bm25"], "mine") == Path(BASE + "-2")
    assert raced == [Path(BASE).name + ".incomplete"] and Path(BASE + "-2.incomplete").is_dir()


def test_a_sweep_takes_numbered_leftovers_and_no_folder_named_otherwise(frozen_in_results):
    """What killed runs left is found under every name `default_out` gives (`-N` too), and only
    under those: a copy the user named `...-backup` is theirs."""
    results = Path("results")
    numbered = results / "bm25-mine-20261130-235959-3.incomplete"  # a killed run's, numbered
    numbered.mkdir(parents=True)
    backup = results / "bm25+ce-mine-20261130-235959-backup"  # holding what a killed run leaves
    (backup / "ce.incomplete" / "runs").mkdir(parents=True)
    for models in (["bm25"], ["bm25", "ce"]):
        result_folder.release_default_out(result_folder.default_out(models, "mine"), models)
    assert list(results.iterdir()) == [backup]


def test_only_a_folder_this_command_left_part_done_is_finished_there(frozen_in_results):
    """The same several-model command after a kill finishes its folder; a folder whose models are
    all published, or holding something no run writes, is left, and the run takes a new one."""
    command, models = ["rerank-eval", "beir", "-m", "bm25", "-m", "ce"], ["bm25", "ce"]
    folder = Path("results/bm25+ce-mine-20261130-235959")
    new = Path("results/bm25+ce-mine-20261201-191130")

    def published(model: str) -> None:
        (folder / model).mkdir(parents=True)
        (folder / model / "manifest.json").write_text(json.dumps({"command": command}))

    def chosen() -> Path:
        name = result_folder.default_out(models, "mine", command=command)
        result_folder.release_default_out(name, models)
        return name

    published("bm25")
    (folder / "ce.incomplete" / "runs").mkdir(parents=True)  # killed while ce scored
    assert chosen() == folder
    (folder / "plots").mkdir()  # the user's
    assert chosen() == new and (folder / "plots").is_dir()
    (folder / "plots").rmdir()
    shutil.rmtree(folder / "ce.incomplete")
    published("ce")  # finished
    assert chosen() == new and sorted(p.name for p in folder.iterdir()) == models


def test_a_torchrun_rank_other_than_0_neither_claims_nor_gives_back(frozen_in_results, monkeypatch):
    """Rank 0 claims the folder; the others take its name (the same second's) and leave the claim
    alone, however they end."""
    from types import SimpleNamespace

    from rerank_eval.runtime import distributed

    monkeypatch.setattr(distributed, "ranks", lambda: SimpleNamespace(is_main=False))
    Path(BASE + ".incomplete").mkdir(parents=True)  # rank 0's claim, nothing written in it yet
    with result_folder.result_folder(None, ["bm25"], "mine") as out:
        assert out == Path(BASE)
    assert list(Path("results").iterdir()) == [Path(BASE + ".incomplete")]
