"""The folder a benchmark run publishes its result in: `--out`, or a name of its own.

Without `--out` a run gets `results/<models>-<suite>-<time>`, and `-2`, `-3`, ... where an earlier
run holds that name (published, or being written): the user gave no name to choose. The name is
claimed when it is picked, by making the folder the run will write in (`NAME.incomplete/` for one
model, `NAME/` for several), which fails for all but one of jobs started at the same instant (an
array job), so each of them goes on to the next number. A run that ends without results gives
the claim back; a stop (Ctrl-C, SIGTERM) while the model loads or the data is read, before any
result is written, ends the run at once through the same path. (`results/` itself stays: an
array job may be making its folder in it at that moment.)

A run killed outright (`kill -9`, a lost node) cannot give its claim back. So the claimed folder
is locked from the moment it is made (the result writer takes the lock over), and a run picking
a name for the same models and suite first removes the folders of that name that no live run
holds and that hold nothing but what a run writes before it publishes: the same command run
again leaves its result, not the killed run's leftovers beside it. (Its scores come back from the
score journal.) A several-model folder a killed run of the same command left with some of its
models published is taken over and finished instead (a new folder beside it would leave the old
one reading as a finished result of fewer models); another command's is kept as it is.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import sys
from collections.abc import Iterator, Sequence
from datetime import datetime
from pathlib import Path

from rerank_eval.errors import UserError
from rerank_eval.results import staging
from rerank_eval.results.folder import INCOMPLETE_SUFFIX

RESULTS = Path("results")


def default_out(models: list[str], suite: str, claim: bool = True, command: Sequence[str] = ()) -> Path:
    """results/<models>-<suite>-<time>, claimed for this run (without `claim`, for the ranks of a
    torchrun job other than 0, which write nothing: the name alone); for several models, the
    folder a killed run of this same `command` left unfinished, where there is one."""
    from rerank_eval.pipeline.execute import model_folder_name

    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    name = "+".join(model_folder_name(m) for m in models)
    base = RESULTS / f"{name}-{suite}-{stamp}"
    if not claim:
        return base
    _remove_left_by_killed_runs(f"{name}-{suite}", several=len(models) > 1)
    if len(models) > 1 and command:
        unfinished = _unfinished_by_this_command(f"{name}-{suite}", models, command)
        if unfinished is not None:
            return unfinished
    chosen, number = base, 1
    while True:
        if not (chosen.exists() or chosen.is_symlink()):
            claimed = _claimed(chosen, models)
            try:
                claimed.mkdir(parents=True)
                # held only once locked: a run sweeping leftovers may remove it before that (its
                # name then goes to another run, and this one goes on to the next); where nothing
                # can be locked it is held unlocked, and no folder is ever swept
                if staging.hold_ahead(claimed):
                    return chosen
            except FileExistsError:
                # taken an instant ago by a job started with this one (and maybe swept by a third
                # before this one looked: only results/ itself says whether it is in the way)
                if not RESULTS.is_dir():
                    raise _unusable(f"{RESULTS} is not a folder") from None
            except OSError as exc:
                raise _unusable(str(exc.strerror or exc)) from None
        number += 1
        chosen = base.with_name(f"{base.name}-{number}")


def _remove_left_by_killed_runs(prefix: str, several: bool) -> None:
    """Remove `results/<prefix>-<time>` folders (`.incomplete` ones for one model) that killed runs
    left: unlocked, and holding only staging folders as a run leaves them."""
    try:
        entries = _default_folders(prefix, "" if several else INCOMPLETE_SUFFIX)
    except OSError:  # (no results/ yet; one that cannot be read is said when the name is claimed)
        return
    for entry in entries:
        if entry.is_symlink() or not entry.is_dir():
            continue
        held = [staging.try_lock(entry)]
        try:
            stagings = list(entry.iterdir()) if several else [entry]
            # a several-model folder a live run named with --out is not locked itself: its models'
            # staging folders are, so each is locked too (and held while the folder goes)
            held += [staging.try_lock(folder) for folder in stagings if folder != entry]
            if (
                None not in held
                and staging.same_folder(held[0], entry)
                and all(map(_left_before_publishing, stagings))
            ):
                shutil.rmtree(entry, ignore_errors=True)
        except OSError:
            pass  # (not ours to fix: left as it is)
        finally:
            for descriptor in held:
                staging.release(descriptor)


def _unfinished_by_this_command(prefix: str, models: list[str], command: Sequence[str]) -> Path | None:
    """The newest `results/<prefix>-<time>` folder, held for this run, where a killed run of this
    very command left it with some of its models published and not all. Run again, the command
    finishes it there (the published models are checked, not redone) instead of leaving beside a
    new folder one that reads as a finished result of fewer models. Only the newest: once a later
    run of the command has a folder of its own, an older one stays as it is. Never where nothing
    can be locked (a live run's folder could not be told from a killed one's)."""
    from rerank_eval.pipeline.execute import model_folder_name, written_by_command

    try:
        newest = max(_default_folders(prefix), default=None)
        if newest is None or newest.is_symlink() or not newest.is_dir():
            return None
        children = list(newest.iterdir())
        finished = [c for c in children if not c.name.endswith(INCOMPLETE_SUFFIX)]
        published = {c.name for c in finished if (c / "manifest.json").is_file()}
        stagings = [c for c in children if c.name not in published]
        left = all(map(_left_before_publishing, stagings))
    except OSError:
        return None
    wanted = {model_folder_name(model) for model in models}
    if not published or not published < wanted or not left:
        return None
    if not all(written_by_command(newest / name, command) for name in published):
        return None
    if not _lockable_and_free(newest, stagings) or not staging.hold_ahead(newest):
        return None
    print(f"finishing {newest}, which a stopped run of this command left unfinished", file=sys.stderr)
    return newest


def _default_folders(prefix: str, suffix: str = "") -> list[Path]:
    """The entries of results/ named as `default_out` names a run's folder: `<prefix>-<time>`, then
    `-N` where that was taken, then `suffix`."""
    pattern = re.compile(rf"{re.escape(prefix)}-\d{{8}}-\d{{6}}(-\d+)?{re.escape(suffix)}")
    return [entry for entry in RESULTS.iterdir() if pattern.fullmatch(entry.name)]


def _lockable_and_free(folder: Path, stagings: list[Path]) -> bool:
    """Whether `folder` and its staging folders can be locked and no live run holds any of them."""
    held = [staging.try_lock(path) for path in (folder, *stagings)]
    try:
        return None not in held
    finally:
        for descriptor in held:
            staging.release(descriptor)


def _left_before_publishing(folder: Path) -> bool:
    return (
        folder.name.endswith(INCOMPLETE_SUFFIX)
        and folder.is_dir()
        and not folder.is_symlink()
        and staging.left_by_a_run(folder)
    )


def _unusable(why: str) -> UserError:
    return UserError(f"cannot create a result folder in {RESULTS}/: {why}; choose one with --out")


def _claimed(chosen: Path, models: list[str]) -> Path:
    return chosen.with_name(chosen.name + INCOMPLETE_SUFFIX) if len(models) == 1 else chosen


def release_default_out(chosen: Path, models: list[str]) -> None:
    """Give up the claim `default_out` made: its lock, and the folder where it is still empty (a
    run that ended before it wrote anything); a folder holding results, or published and gone, is
    left as it is."""
    claimed = _claimed(chosen, models)
    staging.let_go(claimed)
    with contextlib.suppress(OSError):
        claimed.rmdir()


@contextlib.contextmanager
def result_folder(
    out: Path | None, models: list[str], suite: str, command: Sequence[str] = ()
) -> Iterator[Path]:
    """`out`, or a default name claimed for the run in the `with` block and given back where it
    ends without results (`command`: the run's command line, which finishes a folder a killed run
    of it left unfinished)."""
    if out is not None:
        yield out
        return
    from rerank_eval.pipeline.interrupt import STOPPED_AT_ONCE, Interrupted, StopRequest
    from rerank_eval.runtime.distributed import ranks

    claim = ranks().is_main
    chosen = None
    with StopRequest() as stop, stop.preparing():  # (the run's own handlers take over while scoring)
        try:
            chosen = default_out(models, suite, claim, command)
            yield chosen
        except KeyboardInterrupt:
            raise Interrupted(
                f"{STOPPED_AT_ONCE}: run the same command again to resume",
                stop.signum,
            ) from None
        finally:
            if claim and chosen is not None:
                release_default_out(chosen, models)
