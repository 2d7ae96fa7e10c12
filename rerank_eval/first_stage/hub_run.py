"""`kind: hub`: a published run file from a Hugging Face Hub repository (e.g. Pyserini's BEIR runs)."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from rerank_eval.first_stage.base import FirstStageKind, FirstStageRecord, FirstStageRequest, Setting
from rerank_eval.first_stage.registry import register
from rerank_eval.hub import hub_file
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

    @staticmethod
    def _filename(request: FirstStageRequest) -> str:
        spec = request.spec
        return spec.run_file or request.source.settings["file"].format(name=spec.run_name or spec.key)

    def _download(self, request: FirstStageRequest) -> Path:
        settings = request.source.settings
        return hub_file(settings["repo"], self._filename(request), settings["repo_type"], kind="run file")

    def fetch(self, request: FirstStageRequest, build: bool = True) -> None:
        self._download(request)

    def obtain(self, request: FirstStageRequest) -> tuple[Run, FirstStageRecord]:
        path = self._download(request)
        parsed = read_run(path)
        reference_name, reference = request.reference()
        record = FirstStageRecord(
            kind=self.name,
            label=request.source.label,
            path=self._filename(request),
            repo=request.source.settings["repo"],
            revision=snapshot_commit(path),
            sha256=parsed.sha256,
            reference_name=reference_name,
            reference_ndcg10=reference,
            duplicate_lines=parsed.duplicate_lines,
        )
        return parsed.run, record


register(HubRun())
