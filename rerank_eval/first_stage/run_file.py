"""A user's own run file (`--run KEY=PATH`, `--runs-dir`): it replaces the configured first stage."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from rerank_eval.errors import UserError
from rerank_eval.first_stage.base import FirstStageRecord, RunLocation
from rerank_eval.runfiles import Run, read_run

if TYPE_CHECKING:
    from rerank_eval.config.schema import DatasetSpec


def read_user_run(path: Path, location: RunLocation, spec: DatasetSpec) -> tuple[Run, FirstStageRecord]:
    if not path.exists():
        raise UserError(f"run file for {spec.key} not found: {path}")
    parsed = read_run(path)
    record = FirstStageRecord(
        kind="run-file",
        label=f"run file {path.name}",
        path=str(path),
        sha256=parsed.sha256,
        **location.reference_fields(spec),
        duplicate_lines=parsed.duplicate_lines,
    )
    return parsed.run, record
