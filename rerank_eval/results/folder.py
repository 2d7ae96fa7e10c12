"""Result folders: written atomically, read back without recomputing anything.

A result folder holds `manifest.json` (everything needed to reproduce the run and to refuse unfair
comparisons), `per_query.csv` (every metric value of every judged query, first stage and
reranked), `summary.csv` (derived from per_query.csv by the report), `runs/<dataset>.trec` (the
reranked run) and `runs/<dataset>.first-stage.trec` (the candidates with their first-stage scores),
and for a listwise model `per_query_blocks.csv` (how each query's candidates were split into blocks).
It is assembled in `<name>.incomplete/` beside its final place and renamed when complete, so a
folder under its final name is always complete.
"""

from __future__ import annotations

import csv
import errno
import hashlib
import io
import json
import os
import shutil
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from rerank_eval.cache import cache_held_by, cache_holding, disk_error
from rerank_eval.errors import UserError, describe, term, warn
from rerank_eval.paths import data_file_problem, inside, special_file_kind
from rerank_eval.results import staging
from rerank_eval.results.checks import consistency_problem, per_query_problem
from rerank_eval.results.manifest import Manifest, lasting_record, read_manifest
from rerank_eval.textlines import NOT_IN_A_NEW_NAME

PER_QUERY_COLUMNS = ["dataset", "stage", "measure", "query_id", "value"]
BLOCK_COLUMNS = ["dataset", "query_id", "blocks", "block_sizes"]
INCOMPLETE_SUFFIX = ".incomplete"
#: the most a result's files may hold when read back (a real manifest is tens of KB; per_query.csv
#: about 60 bytes a value: 4M values); a folder may have been tampered with
MANIFEST_LIMIT = 64 * 2**20
PER_QUERY_LIMIT = 256 * 2**20
#: per-query values of all the results one command reads (parsed, they take about 3 times as much)
PER_QUERY_LIMIT_IN_ALL = 1024 * 2**20


def write_atomic(path: Path, text: str) -> None:
    """Write a whole file or nothing: a crash or a full disk never leaves half of one."""
    temporary = path.with_name(path.name + ".tmp")
    with open(temporary, "w", encoding="utf-8", newline="") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    temporary.replace(path)


def check_destination(final: Path, keep_identical: bool = False, holds: str = "") -> bool:
    """Refuse a result folder a run cannot publish as (called again before a model loads, which may
    be a download); whether one already there may be kept (`keep_identical`, and complete).
    `holds`: what a result folder there holds, said in its refusal."""
    if NOT_IN_A_NEW_NAME.search(str(final)):  # a newline in a name breaks every listing
        raise UserError(
            f"result folder {str(final)!r} holds a control character; choose another {term('out')}",
            {"out": "folder"},
        )
    if final.name.endswith(INCOMPLETE_SUFFIX):  # (every reader would take it for one)
        raise UserError(
            f"result folder {final}: a name ending in {INCOMPLETE_SUFFIX} is an unfinished run's; choose "
            f"another {term('out')}",
            {"out": "folder"},
        )
    try:
        existing = keep_identical and (final / "manifest.json").is_file()
        taken = final.exists() or final.is_symlink()  # a broken link too
        cache, inner = cache_holding(final), cache_held_by(final)
    except OSError as exc:  # a name too long, a symlink loop
        raise UserError(
            f"cannot use {final} as a result folder ({exc.strerror or exc}); choose another {term('out')}",
            {"out": "folder"},
        ) from None
    if cache is not None:  # its files could be taken for, or replace, cache entries
        raise UserError(
            f"result folder {final} lies inside the cache {cache}; choose another {term('out')}",
            {"out": "folder"},
        )
    if inner is not None:  # found only at the end, when publishing: a whole run's work lost
        raise UserError(
            f"the cache {inner} lies inside the result folder {final}; choose another {term('out')}",
            {"out": "folder"},
        )
    if taken and not existing:
        kinds = ("result folder", "a symbolic link named", "a file named")
        what = kinds[1] if final.is_symlink() else kinds[0] if final.is_dir() else kinds[2]
        held = f" and holds {holds}" if holds and what == kinds[0] else ""
        raise UserError(
            f"{what} {final} exists already{held}; choose another {term('out')}", {"out": "folder"}
        )
    return existing


class ResultWriter:
    """Assembles a result folder under a temporary name and publishes it whole."""

    def __init__(self, final: Path, keep_identical: bool = False) -> None:
        """`keep_identical`: an existing complete folder is acceptable if this run reproduces it
        exactly (a resumed several-model run redoing, from its journal, a model it had finished)."""
        self.final = Path(final)
        self.existing = check_destination(self.final, keep_identical)
        self.kept_existing = False
        self.staging = self.final.with_name(self.final.name + INCOMPLETE_SUFFIX)
        try:
            self._held = staging.claim(self.staging, self.final)
        except OSError as exc:
            problem = exc.strerror or exc
            if exc.errno == errno.ENOTDIR:  # (the staging folder's name is not the user's to know)
                file = next((p for p in self.final.parents if p.exists() and not p.is_dir()), None)
                problem = f"{file} is not a folder" if file is not None else problem
            raise UserError(f"cannot create the result folder {self.final}: {problem}") from None
        self.per_query_rows: list[tuple[str, str, str, str, float]] = []
        self.run_sha256: dict[str, str] = {}
        self.block_rows: list[tuple[str, str, int, str]] = []

    def add_run(self, dataset: str, lines: list[str]) -> None:
        text = "".join(lines)
        self._write(self.staging / "runs" / f"{dataset}.trec", text)
        self.run_sha256[f"runs/{dataset}.trec"] = hashlib.sha256(text.encode("utf-8")).hexdigest()

    def _write(self, path: Path, text: str) -> None:
        inside(self.staging, path)
        try:
            write_atomic(path, text)
        except OSError as exc:
            raise disk_error(exc, path, "nothing was published; scored queries stay journaled") from None

    def add_values(self, dataset: str, stage: str, values: dict[str, dict[str, float]]) -> None:
        for measure, per_query in values.items():
            for query_id, value in per_query.items():
                self.per_query_rows.append((dataset, stage, measure, query_id, value))

    def add_blocks(self, dataset: str, sizes: dict[str, list[int]]) -> None:
        """Each query's block sizes, in presentation order (space-separated in the file)."""
        for query_id, blocks in sizes.items():
            self.block_rows.append((dataset, query_id, len(blocks), " ".join(map(str, blocks))))

    def publish(
        self, manifest: dict[str, Any], summarize: Callable[[dict[str, Any], pd.DataFrame], str]
    ) -> Path:
        """Write per-query values, the summary `summarize` derives from them and the manifest (with
        each run file's hash), then move the folder into place."""
        frame = pd.DataFrame(self.per_query_rows, columns=PER_QUERY_COLUMNS)
        per_query = frame.to_csv(index=False)
        manifest = {
            **manifest,
            "run_sha256": dict(sorted(self.run_sha256.items())),
            # what every table is derived from, so that an edited copy is not read as this result
            "per_query_sha256": hashlib.sha256(per_query.encode("utf-8")).hexdigest(),
        }
        self._write(self.staging / "per_query.csv", per_query)
        if self.block_rows:
            blocks = pd.DataFrame(self.block_rows, columns=BLOCK_COLUMNS)
            self._write(self.staging / "per_query_blocks.csv", blocks.to_csv(index=False))
        self._write(self.staging / "summary.csv", summarize(manifest, frame))
        if self.existing:
            return self._keep_if_identical(manifest)
        self._write(self.staging / "manifest.json", json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        try:
            if self.final.exists() or self.final.is_symlink():  # (rename would replace an empty folder)
                raise FileExistsError(errno.EEXIST, "something was put there during the run")
            self.staging.rename(self.final)
        except OSError as exc:
            self.abort()
            raise UserError(
                f"cannot publish the result as {self.final}: {exc.strerror or exc}; choose another "
                f"{term('out')} (the scores stay journaled, so rerunning costs no scoring)",
                {"out": "folder"},
            ) from None
        staging.release(self._held)
        self._held = None
        return self.final

    def _keep_if_identical(self, manifest: dict[str, Any]) -> Path:
        """Keep the existing folder when its runs, per-query values and summary equal this run's,
        and its manifest records the same run but for what a resumed run records otherwise (a
        changed config, checkpoint or code that left the scores as they were is another run)."""

        def files(folder: Path) -> list[Path]:
            paths = [p.relative_to(folder) for p in folder.rglob("*") if p.is_file()]
            return sorted(p for p in paths if p.name != "manifest.json")

        mine, theirs = files(self.staging), files(self.final)
        identical = mine == theirs and all(
            (self.staging / name).read_bytes() == (self.final / name).read_bytes() for name in mine
        )
        try:
            existing = json.loads((self.final / "manifest.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            existing = None
        identical = identical and lasting_record(existing) == lasting_record(json.loads(json.dumps(manifest)))
        self.abort()
        if not identical:
            raise HoldsOtherResults(
                f"result folder {self.final} exists already and holds other results; choose another "
                f"{term('out')} (the scores stay journaled, so rerunning with another {term('out')} costs "
                "no scoring)",
                {"out": "folder"},
            )
        self.kept_existing = True
        return self.final

    def abort(self) -> None:
        shutil.rmtree(self.staging, ignore_errors=True)
        if self.staging.exists():  # (not silently: it would read as a run that was killed)
            warn(f"could not remove {self.staging}, which holds this run's unfinished result; remove it")
        staging.release(self._held)
        self._held = None


class HoldsOtherResults(UserError):
    """A result folder already there holds other results than this run's (never replaced)."""


@dataclass
class SavedResult:
    folder: Path
    manifest: Manifest
    per_query: pd.DataFrame


def load_result(folder: Path) -> SavedResult:
    """A complete result folder; incomplete or foreign folders are refused with a reason."""
    folder = Path(folder)
    manifest_path = folder / "manifest.json"
    if not folder.exists():
        kind = special_file_kind(folder)  # (a symlink loop "exists" no more than a missing folder)
        raise UserError(f"{folder} is {kind}" if kind else f"{folder} does not exist")
    if folder.name.endswith(INCOMPLETE_SUFFIX):
        raise UserError(f"{folder} is an incomplete result (the run did not finish)")
    if not manifest_path.exists():
        raise UserError(f"{folder} is not a rerank-eval result folder (no manifest.json)")
    for path, limit in ((manifest_path, MANIFEST_LIMIT), (folder / "per_query.csv", PER_QUERY_LIMIT)):
        problem = data_file_problem(path, limit)
        if problem:
            raise UserError(f"cannot read result {folder}: {path.name} {problem}")
    # the manifest first: a folder that is no result is told before its table is parsed
    typed = read_manifest(_manifest_json(manifest_path), str(manifest_path))
    per_query, per_query_bytes = _per_query_table(folder / "per_query.csv")
    problem = per_query_problem(per_query)
    if problem:
        raise UserError(f"{folder / 'per_query.csv'} is damaged: {problem}")
    problem = consistency_problem(typed, per_query)
    if problem:
        raise UserError(f"result {folder} is damaged: {problem}")
    recorded = typed.raw.get("per_query_sha256")
    if recorded is not None and recorded != hashlib.sha256(per_query_bytes).hexdigest():
        raise UserError(
            f"{folder / 'per_query.csv'} is not the file the run wrote (its SHA-256 is not manifest.json's "
            "per_query_sha256): the folder was edited or damaged"
        )
    return SavedResult(folder, typed, per_query)


def _per_query_table(path: Path) -> tuple[pd.DataFrame, bytes]:
    """per_query.csv as a table, and its bytes (hashed against the manifest's record): ids and
    names as text (never numbers, never NaN), a row longer than the header refused, not cut."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", pd.errors.ParserWarning)
            raw = path.read_bytes()
            table = pd.read_csv(
                io.BytesIO(raw),
                dtype={"dataset": str, "stage": str, "measure": str, "query_id": str},
                keep_default_na=False,
                quoting=csv.QUOTE_MINIMAL,
                index_col=False,  # never an index guessed from a row with one field too many
            )
    except (pd.errors.ParserError, pd.errors.EmptyDataError, pd.errors.ParserWarning) as exc:
        raise UserError(f"{path} is damaged: {describe(exc)}") from None
    except UnicodeDecodeError:
        raise UserError(f"{path} is damaged: not UTF-8 text") from None
    except MemoryError:  # (raised below, once the error and what this frame read are let go of)
        table = raw = None
    except (OSError, ValueError, RecursionError) as exc:
        raise UserError(f"cannot read {path}: {describe(exc)}") from None
    if table is None or raw is None:
        raise UserError(f"{path} does not fit in memory")
    return table, raw


def _manifest_json(path: Path) -> Any:
    """manifest.json's value, read strictly: a key given twice in any of its objects (which value
    was meant?) is refused, not settled silently by the last."""
    try:
        return json.loads(path.read_text(encoding="utf-8"), object_pairs_hook=_keys_once)
    except json.JSONDecodeError as exc:
        raise UserError(f"{path} is damaged: not JSON ({exc.msg}, line {exc.lineno})") from None
    except _KeyTwice as twice:
        raise UserError(f"{path} is damaged: an object names {str(twice)[:80]!r} twice") from None
    except UnicodeDecodeError:
        raise UserError(f"{path} is damaged: not UTF-8 text") from None
    except (OSError, ValueError, RecursionError) as exc:
        raise UserError(f"cannot read {path}: {describe(exc)}") from None


class _KeyTwice(Exception):
    """A JSON object naming one of its keys twice (the key is the message)."""


def _keys_once(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    value: dict[str, Any] = {}
    for key, item in pairs:
        if key in value:
            raise _KeyTwice(key)
        value[key] = item
    return value


def load_results(folders: list[Path]) -> list[SavedResult]:
    """Result folders, a folder holding several models' result folders expanded (`_in_run_order`).
    What they hold in all is bounded as each one is (a folder from elsewhere may hold thousands)."""
    given = [_result_folders(Path(folder)) for folder in folders]
    expanded = [folder for group in given for folder in group]
    sizes = [_size(folder / "per_query.csv") for folder in expanded]
    if sum(sizes) > PER_QUERY_LIMIT_IN_ALL:
        raise UserError(
            f"the {len(expanded):,} results given hold {sum(sizes):,} bytes of per-query values in all, "
            f"more than {PER_QUERY_LIMIT_IN_ALL:,}; give fewer at a time"
        )
    return [result for group in given for result in _in_run_order([load_result(f) for f in group])]


def _in_run_order(results: list[SavedResult]) -> list[SavedResult]:
    """A several-model run's results in the order of its --model options, where each records a
    place of its own; else (a folder put together by hand, or written before places were
    recorded) as they are, in name order."""
    positions = [result.manifest.model.position for result in results]
    if None in positions or len(set(positions)) != len(positions):
        return results
    return [result for _, result in sorted(zip(positions, results), key=lambda pair: pair[0])]


def _size(path: Path) -> int:
    """A file's size, 0 where it cannot be told (load_result then says why it cannot be read)."""
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _result_folders(folder: Path) -> list[Path]:
    """The result folder given, or the result folders inside a folder of several models' ones."""
    children = (
        sorted(p for p in folder.iterdir() if (p / "manifest.json").exists()) if folder.is_dir() else []
    )
    # an unfinished child may already hold its manifest (killed between writing and publishing)
    children = [p for p in children if not p.name.endswith(INCOMPLETE_SUFFIX)]
    unfinished = sorted(p.name for p in folder.glob(f"*{INCOMPLETE_SUFFIX}") if p.is_dir())
    holds_models = not (folder / "manifest.json").exists()  # else a result folder itself
    if holds_models and not children and unfinished:
        raise UserError(
            f"{folder} holds only incomplete results ({', '.join(unfinished)}: their runs did not "
            "finish); run the same command again to finish them"
        )
    if holds_models and children:
        if unfinished:  # e.g. a process killed outright; not a result, and not in the way either
            warn(
                f"{folder} holds an incomplete result ({', '.join(unfinished)}: its run did "
                f"not finish), left out; run the same command again to finish it, or remove it"
            )
        return children
    return [folder]
