"""The folder a benchmark run publishes its result in: `--out`, or a name of its own.

Without `--out` a run gets `results/<models>-<suite>-<time>`, and `-2`, `-3`, ... where an earlier
run holds that name (published, or being written): the user gave no name to choose. The name is
claimed when it is picked, by making the folder the run will write in (`NAME.incomplete/` for one
model, `NAME/` for several), which fails for all but one of jobs started at the same instant (an
array job), so each of them goes on to the next number. A run that ends without results gives
the claim back; a stop (Ctrl-C, SIGTERM) while the model loads or the data is read, before any
result is written, ends the run at once through the same path. (`results/` itself stays: an
array job may be making its folder in it at that moment.)
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

from rerank_eval.errors import UserError
from rerank_eval.results.folder import INCOMPLETE_SUFFIX

RESULTS = Path("results")


def default_out(models: list[str], suite: str, claim: bool = True) -> Path:
    """results/<models>-<suite>-<time>, claimed for this run (without `claim`, for the ranks of a
    torchrun job other than 0, which write nothing: the name alone)."""
    from rerank_eval.pipeline.execute import model_folder_name

    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    name = "+".join(model_folder_name(m) for m in models)
    base = RESULTS / f"{name}-{suite}-{stamp}"
    if not claim:
        return base
    chosen, number = base, 1
    while True:
        if not (chosen.exists() or chosen.is_symlink()):
            claimed = _claimed(chosen, models)
            try:
                claimed.mkdir(parents=True)
                return chosen
            except FileExistsError:
                if not (claimed.exists() or claimed.is_symlink()):  # results/ itself is in the way
                    raise _unusable(f"{RESULTS} is not a folder") from None
                # else taken an instant ago by a job started with this one
            except OSError as exc:
                raise _unusable(str(exc.strerror or exc)) from None
        number += 1
        chosen = base.with_name(f"{base.name}-{number}")


def _unusable(why: str) -> UserError:
    return UserError(f"cannot create a result folder in {RESULTS}/: {why}; choose one with --out")


def _claimed(chosen: Path, models: list[str]) -> Path:
    return chosen.with_name(chosen.name + INCOMPLETE_SUFFIX) if len(models) == 1 else chosen


def release_default_out(chosen: Path, models: list[str]) -> None:
    """Remove the folder `default_out` made where it is still empty (a run that ended before it
    wrote anything); a folder holding results, or published and gone, is left as it is."""
    with contextlib.suppress(OSError):
        _claimed(chosen, models).rmdir()


@contextlib.contextmanager
def result_folder(out: Path | None, models: list[str], suite: str) -> Iterator[Path]:
    """`out`, or a default name claimed for the run in the `with` block and given back where it
    ends without results."""
    if out is not None:
        yield out
        return
    from rerank_eval.pipeline.distributed import ranks
    from rerank_eval.pipeline.interrupt import STOPPED_AT_ONCE, Interrupted, StopRequest

    claim = ranks().is_main
    chosen = None
    with StopRequest() as stop, stop.preparing():  # (the run's own handlers take over while scoring)
        try:
            chosen = default_out(models, suite, claim)
            yield chosen
        except KeyboardInterrupt:
            raise Interrupted(
                f"{STOPPED_AT_ONCE}: run the same command again to resume",
                stop.signum,
            ) from None
        finally:
            if claim and chosen is not None:
                release_default_out(chosen, models)
