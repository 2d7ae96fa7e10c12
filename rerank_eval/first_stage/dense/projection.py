"""sentence-transformers' Dense modules: the pooled vector through a linear layer and an activation
(GTR and sentence-T5 project theirs, LaBSE through tanh), as each module's own folder describes it
(`config.json`, `model.safetensors` or `pytorch_model.bin`).

They run in float32 on the pooled vectors, as sentence-transformers runs them (a dtype given to it
reaches the transformer only). A module that reads or writes anything but the sentence embedding (a
token-level projection, as late-interaction models have) is refused: the result would not be one
vector per text.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from rerank_eval.errors import UserError, describe
from rerank_eval.first_stage.dense.checkpoint_files import DenseSpec, read_dense_spec

#: a Dense module's weight files, as sentence-transformers reads them (safetensors first)
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


class Projection(torch.nn.Module):
    """One Dense module: activation(linear(x)), plus x (or its own projection of x) with a residual."""

    def __init__(self, spec: DenseSpec) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(spec.in_features, spec.out_features, bias=spec.bias)
        self.activation = getattr(torch.nn, spec.activation)()
        self.adds_input = spec.residual
        # (named as sentence-transformers names it, so that its weight files load as they are)
        self.residual = (
            torch.nn.Linear(spec.in_features, spec.out_features, bias=False)
            if spec.residual and spec.in_features != spec.out_features
            else None
        )

    def forward(self, vectors: torch.Tensor) -> torch.Tensor:
        out = self.activation(self.linear(vectors))
        if not self.adds_input:
            return out
        return out + (vectors if self.residual is None else self.residual(vectors))


def _weights(folder: Path, source: str) -> dict[str, torch.Tensor]:
    path = next((folder / name for name in WEIGHT_FILES if (folder / name).is_file()), None)
    if path is None:
        raise UserError(f"encoder {source}: Dense module {folder.name} has no {' or '.join(WEIGHT_FILES)}")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            weights = load_file(str(path))
        else:
            weights = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # a truncated or foreign file fails in many ways
        # (torch's own advice, in terminal colours, offers loading it unsafely: its first words only)
        problem = re.sub(r"\x1b\[[0-9;]*m", "", describe(exc)).split(". ")[0]
        raise UserError(f"cannot read the weights of Dense module {path}: {problem}") from None
    if not isinstance(weights, dict):
        raise UserError(f"the weights of Dense module {path} are not named tensors")
    return weights


def load_projections(folder: Path, paths: Sequence[str], source: str, device: Any) -> list[Projection]:
    """The checkpoint's Dense modules in order, float32 on `device`, ready to apply (`project`)."""
    projections = []
    for relative in paths:
        module_folder = folder / relative
        spec = read_dense_spec(module_folder)
        with torch.device("meta"):  # shapes only: weights that do not fit the config allocate nothing
            projection = Projection(spec)
        try:
            projection.load_state_dict(_weights(module_folder, source), assign=True)
        except (RuntimeError, TypeError) as exc:  # missing, unexpected or misshapen weights
            first = str(exc).splitlines()[1:2] or [str(exc)]
            raise UserError(
                f"encoder {source}: the weights of Dense module {relative} do not fit its config: "
                f"{first[0].strip()}"
            ) from None
        projections.append(projection.to(device=device, dtype=torch.float32).eval())
    return projections


def project(vectors: torch.Tensor, projections: Sequence[Projection]) -> torch.Tensor:
    """Pooled float32 vectors through every projection in turn."""
    for projection in projections:
        vectors = projection(vectors)
    return vectors
