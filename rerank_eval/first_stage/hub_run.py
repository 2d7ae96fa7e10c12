"""`kind: hub`: a published run file from a Hugging Face Hub repository (e.g. Pyserini's BEIR runs)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from huggingface_hub.errors import HFValidationError
from huggingface_hub.utils import validate_repo_id

from rerank_eval.errors import UserError
from rerank_eval.first_stage.base import FirstStageKind, FirstStageRecord, FirstStageRequest, Setting
from rerank_eval.first_stage.registry import register
from rerank_eval.hub import hub_file
from rerank_eval.paths import fills_only, repository_path_problem
from rerank_eval.runfiles import Run, read_run


def snapshot_commit(path: Path) -> str | None:
    """The commit of a file in huggingface_hub's cache (…/snapshots/<commit>/<filename>)."""
    parts = path.parts
    return parts[parts.index("snapshots") + 1] if "snapshots" in parts else None


class HubRun(FirstStageKind):
    name = "hub"
    settings: ClassVar[dict[str, Setting]] = {
        "repo": Setting(str, required=True),
        "repo_type": Setting(str, "dataset", choices=("dataset", "model")),
        "file": Setting(str, required=True),  # a template: {name} is the dataset's run_name or key
    }

    def validate(self, where: str, settings: dict[str, Any]) -> dict[str, Any]:
        """As every kind's, and a config may come from someone else: `file` fills {name} and
        nothing else (no other field, no attribute of it), `repo` is a Hub repository id."""
        checked = super().validate(where, settings)
        if not fills_only(checked["file"], ("name",)):
            raise UserError(f"{where}.file: {checked['file']!r} may hold {{name}} only")
        try:
            validate_repo_id(checked["repo"])
        except HFValidationError:
            raise UserError(f"{where}.repo: {checked['repo']!r} is not a Hub repository id") from None
        return checked

    @staticmethod
    def _filename(request: FirstStageRequest) -> str:
        """The run file's path in the repository: the dataset's `run_file` (checked as the config is
        read), or the first stage's `file` template with {name} filled in, which must stay a plain
        path inside the repository (a dataset's run_name fills it)."""
        spec, source = request.spec, request.source
        if spec.run_file:
            return spec.run_file
        path = source.settings["file"].format(name=spec.run_name or spec.key)
        problem = repository_path_problem(path)
        if problem:
            raise UserError(f"first stage {source.name}: file {problem}")
        return path

    def _download(self, request: FirstStageRequest) -> Path:
        settings = request.source.settings
        return hub_file(settings["repo"], self._filename(request), settings["repo_type"], kind="run file")

    def fetch(self, request: FirstStageRequest, build: bool = True) -> None:
        self._download(request)

    def obtain(self, request: FirstStageRequest) -> tuple[Run, FirstStageRecord]:
        path = self._download(request)
        parsed = read_run(path)
        record = FirstStageRecord(
            kind=self.name,
            label=request.source.label,
            path=self._filename(request),
            repo=request.source.settings["repo"],
            revision=snapshot_commit(path),
            sha256=parsed.sha256,
            **request.reference_fields(),
            duplicate_lines=parsed.duplicate_lines,
        )
        return parsed.run, record


register(HubRun())
