"""The dense run in the cache: written with what it was searched over and its hash beside it,
reused only as written.

A cached run is used as it is (no search), so a run file changed since it was written (by hand, by
a copy cut short) would pass its changes into every later result; its hash in the record beside it
tells. The record also outlives the corpus embeddings, which may be deleted to free their space.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from rerank_eval.cache import remove_dead_temporaries
from rerank_eval.errors import UserError
from rerank_eval.first_stage.dense.corpus import write_file
from rerank_eval.runfiles import Run, format_run_lines, trec_order


def write_run(path: Path, run: Run, corpus: dict[str, Any]) -> None:
    """The run file and, beside it, what it was searched over (kept when the corpus embeddings
    are deleted to free their space); the run file is renamed into place last."""
    lines = [
        line for q, docs in run.items() for line in format_run_lines(q, trec_order(docs), "rerank-eval-dense")
    ]
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_dead_temporaries(path.parent)  # what runs killed while writing here left
        # an earlier run here goes first: killed before the run is in place, the new record's hash
        # beside the earlier run would refuse every later command
        path.unlink(missing_ok=True)
    except OSError as exc:
        raise UserError(f"cannot write the dense run {path}: {exc.strerror}") from None
    text = "".join(lines).encode("utf-8")
    _write_record(path, {**corpus, "run_sha256": hashlib.sha256(text).hexdigest()})
    write_file(path, lambda h: h.write(text))


def _write_record(run_path: Path, record: dict[str, Any]) -> None:
    write_file(run_path.with_suffix(".json"), lambda h: h.write(json.dumps(record, indent=1).encode()))


def kept_run(run_path: Path) -> bool:
    """Whether the cached run is there, as written (the hash its record holds); one changed since
    is refused, naming it. One written before runs were hashed is taken as it is, as it was then,
    and its hash recorded now: searching again would need the corpus embeddings, which may have
    been deleted since (the record beside the run is there so that they can be)."""
    if not run_path.is_file():
        return False
    record = run_corpus(run_path)
    try:
        with run_path.open("rb") as handle:
            now = hashlib.file_digest(handle, "sha256").hexdigest()
    except OSError as exc:
        raise UserError(f"cannot read the dense run {run_path}: {exc.strerror}") from None
    written = record.get("run_sha256")
    if written is None:
        try:
            _write_record(run_path, {**record, "run_sha256": now})
        except UserError:  # a cache shared read-only: the run is used as before, its hash unrecorded
            pass
        return True
    if now != written:
        raise UserError(
            f"the dense run {run_path} is not the run written there (its hash differs from its record's); "
            f"delete the run to search again"
        )
    return True


def run_corpus(run_path: Path) -> dict[str, Any]:
    """The corpus record written beside a cached run."""
    try:
        record = json.loads(run_path.with_suffix(".json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        record = None
    if not isinstance(record, dict):
        raise UserError(
            f"the dense run {run_path} has no readable record of its corpus beside it "
            f"({run_path.with_suffix('.json').name}); delete the run to search again"
        )
    return record
