"""A checkpoint's own files, read with care: JSON parsed into what it must be, module and adapter
folders that stay inside the checkpoint (its content hash covers them), and sentence-transformers'
Dense module configs checked before any layer is built."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rerank_eval.errors import UserError
from rerank_eval.paths import lies_inside
from rerank_eval.typed import is_positive_integer


def read_json(path: Path, what: str) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise UserError(f"cannot read {what} {path}: {exc.strerror}") from None
    except ValueError:
        raise UserError(f"{what} {path} is not valid JSON") from None
    if not isinstance(value, (dict, list)):
        raise UserError(f"{what} {path}: unexpected content")
    return value  # type: ignore[return-value]


def inside_checkpoint(folder: Path, name: Any, where: str) -> Path:
    """The subfolder `name` of the checkpoint `folder` (a module's, an adapter's): a path leading
    out of it (absolute, or through ..) would load files that its content hash, and so every cache
    key of what it embeds, does not cover. So would a subfolder that is a link to elsewhere (the
    hash does not follow links to folders)."""
    relative = Path(str(name))
    if relative.is_absolute() or ".." in relative.parts or not lies_inside(folder, folder / relative):
        raise UserError(f"{where}: {str(name)!r} leads outside the checkpoint folder {folder}"[:400])
    return folder / relative


def read_object(path: Path, what: str) -> dict[str, Any]:
    value = read_json(path, what)
    if not isinstance(value, dict):
        raise UserError(f"{what} {path}: expected a JSON object")
    return value


#: the activations sentence-transformers' Dense modules name that we run (torch.nn's own modules)
ACTIVATIONS = ("Identity", "Tanh", "ReLU", "GELU", "Sigmoid", "SiLU")
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
    path = folder / "config.json"
    config = read_object(path, "Dense config")
    sizes = [config.get("in_features"), config.get("out_features")]
    if not all(is_positive_integer(size) for size in sizes):
        raise UserError(f"Dense config {path}: in_features and out_features must be positive integers")
    for key in ("bias", "use_residual"):
        if not isinstance(config.get(key, False), bool):
            raise UserError(f"Dense config {path}: {key} must be true or false, not {config[key]!r}"[:300])
    # (absent: sentence-transformers' default, tanh; null it cannot load, and neither do we)
    activation = str(config.get("activation_function", "torch.nn.modules.activation.Tanh"))
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
