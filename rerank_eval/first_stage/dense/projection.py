"""sentence-transformers' Dense modules: the pooled vector through a linear layer and an activation
(GTR and sentence-T5 project theirs, LaBSE through tanh), as each module's own folder describes it
(`config.json`, `model.safetensors` or `pytorch_model.bin`).

They run in float32 on the pooled vectors, as sentence-transformers runs them (a dtype given to it
reaches the transformer only). A module that reads or writes anything but the sentence embedding (a
token-level projection, as late-interaction models have) is refused: the result would not be one
vector per text.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from rerank_eval.errors import UserError, describe

#: the activations sentence-transformers' Dense modules name that we run (torch.nn's own modules)
ACTIVATIONS = ("Identity", "Tanh", "ReLU", "GELU", "Sigmoid", "SiLU")
#: a Dense module's weight files, as sentence-transformers reads them (safetensors first)
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
_EMBEDDING = "sentence_embedding"


@dataclass(frozen=True)
class DenseSpec:
    """What one Dense module's config.json says."""

    in_features: int
    out_features: int
    bias: bool
    activation: str
    residual: bool


def read_dense_spec(folder: Path) -> DenseSpec:
    """The module in `folder`, checked: sizes, bias, a known activation, and that it maps the
    sentence embedding to itself."""
    import json

    path = folder / "config.json"
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise UserError(f"cannot read Dense config {path}: {exc.strerror}") from None
    except ValueError:
        raise UserError(f"Dense config {path} is not valid JSON") from None
    if not isinstance(config, dict):
        raise UserError(f"Dense config {path}: expected a JSON object")
    sizes = [config.get("in_features"), config.get("out_features")]
    if not all(isinstance(size, int) and not isinstance(size, bool) and size > 0 for size in sizes):
        raise UserError(f"Dense config {path}: in_features and out_features must be positive integers")
    activation = str(config.get("activation_function") or "torch.nn.modules.activation.Tanh")
    name = activation.rsplit(".", 1)[-1]
    if not activation.startswith("torch.") or name not in ACTIVATIONS:
        raise UserError(
            f"Dense config {path}: activation {activation!r} is not supported "
            f"(rerank-eval runs torch's {', '.join(ACTIVATIONS)})"
        )
    for key in ("module_input_name", "module_output_name"):
        if config.get(key, _EMBEDDING) not in (None, _EMBEDDING):
            raise UserError(
                f"Dense config {path}: {key} {config[key]!r} is not supported (rerank-eval projects "
                f"the pooled sentence embedding, one vector per text)"
            )
    return DenseSpec(
        in_features=sizes[0],
        out_features=sizes[1],
        bias=bool(config.get("bias", True)),
        activation=name,
        residual=bool(config.get("use_residual", False)),
    )


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

            return load_file(str(path))
        return torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # a truncated or foreign file fails in many ways
        raise UserError(f"cannot read the weights of Dense module {path}: {describe(exc)}") from None


def load_projections(folder: Path, paths: Sequence[str], source: str, device: Any) -> list[Projection]:
    """The checkpoint's Dense modules in order, float32 on `device`, ready to apply (`project`)."""
    projections = []
    for relative in paths:
        module_folder = folder / relative
        projection = Projection(read_dense_spec(module_folder))
        try:
            projection.load_state_dict(_weights(module_folder, source))
        except RuntimeError as exc:  # missing, unexpected or misshapen weights
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
