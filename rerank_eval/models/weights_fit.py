"""A checkpoint's config.json held against the weights it ships, before any model is built.

transformers builds a model from its config, then loads the weights into it: a config declaring
sizes its weights do not have (a vocabulary of 10**9, 10**5 layers) first allocates them, which
fills memory or runs for hours, and only then is refused (in a traceback). Here the model is built
on the meta device (shapes, no memory) and each of its tensors that the checkpoint's safetensors
files hold is compared with the shape their headers record; no weight is read. A checkpoint
without safetensors files, or quantized (its stored shapes are packed), is left to transformers.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from rerank_eval.errors import UserError, describe

#: the config keys that count a model's layers, by architecture
LAYER_COUNTS = ("num_hidden_layers", "num_layers", "n_layer")


def read_config(load: Callable[[], Any], source: str) -> Any:
    """A checkpoint's config as transformers reads it (`load`), or one line saying why not: its
    fields are validated in many ways, some of them wrapping the reason (huggingface_hub's strict
    dataclasses) in an error whose own first line says nothing of it."""
    try:
        return load()
    except Exception as exc:
        raise UserError(f"cannot read the config of {source}: {describe(exc.__cause__ or exc)}") from None


def _stored_shapes(folder: Path) -> dict[str, tuple[int, ...]]:
    """Each tensor's shape in the folder's safetensors files (their headers only); empty where
    there are none."""
    from safetensors import safe_open

    shapes: dict[str, tuple[int, ...]] = {}
    for path in sorted(folder.glob("*.safetensors")):
        try:
            with safe_open(str(path), framework="pt") as handle:
                for key in handle.keys():
                    shapes[key] = tuple(handle.get_slice(key).get_shape())
        except Exception as exc:  # a truncated or foreign file fails in many ways
            raise UserError(f"cannot read the weights {path}: {describe(exc)}") from None
    return shapes


def check_config_fits_weights(folder: Path, source: str, config: Any, build: Callable[[Any], Any]) -> None:
    """Refuse, in one line, a `config` (transformers' config object) that declares more layers
    than the checkpoint holds tensors, or a tensor of another shape than the weights record;
    `build(config)` makes the model the family loads (on the meta device, so it costs nothing)."""
    import torch

    shapes = _stored_shapes(folder)
    if not shapes or getattr(config, "quantization_config", None):
        return
    counts = [getattr(config, key, None) for key in LAYER_COUNTS]
    layers = max((count for count in counts if isinstance(count, int)), default=0)
    if layers > len(shapes):  # each layer holds a tensor of its own
        raise UserError(
            f"checkpoint {source}: config.json declares {layers:,} layers, but its weights hold "
            f"{len(shapes):,} tensors in all"
        )
    try:
        with torch.device("meta"):
            model = build(config)
    except Exception as exc:  # transformers checks a config's sizes as it builds, in many ways
        raise UserError(f"checkpoint {source}: config.json does not build a model: {describe(exc)}") from None
    prefix = getattr(model, "base_model_prefix", "") or ""
    declared = {name: tuple(tensor.shape) for name, tensor in model.state_dict().items()}
    names = {key: _model_name(key, declared, prefix) for key in shapes}
    if declared and not any(names.values()):  # the model would run on weights initialised at random
        raise UserError(
            f"checkpoint {source}: none of its {len(shapes):,} stored tensors is one of the model its "
            f"config.json builds ({type(model).__name__}): are they of the same model?"
        )
    for key, shape in shapes.items():
        name = names[key]
        if name is not None and declared[name] != shape:
            raise UserError(
                f"checkpoint {source}: config.json makes {name} {_shape(declared[name])}, but its weights "
                f"hold {key} as {_shape(shape)}: are they of the same model?"
            )


def check_tokenizer_fits_config(tokenizer: Any, config: Any, source: str) -> None:
    """Refuse a tokenizer of far fewer tokens than the model's vocabulary: where a checkpoint's
    tokenizer files are missing, transformers may build one of a few special tokens, and every
    word would then be the one unknown token (models pad their vocabulary a little, never twice)."""
    vocabulary = getattr(config, "vocab_size", None)
    if isinstance(vocabulary, int) and len(tokenizer) * 2 < vocabulary:
        raise UserError(
            f"checkpoint {source}: its tokenizer holds {len(tokenizer):,} tokens for a vocabulary of "
            f"{vocabulary:,}: are its tokenizer files missing, or of another model?"
        )


def check_token_ids_fit(
    rows: Sequence[Sequence[int]], model: Any, named: str, where: str, pad: int | None = None
) -> None:
    """Refuse a token id beyond the model's embeddings (a tokenizer of a larger vocabulary beside
    the weights) in one line, not as an indexing error inside the model (on a GPU, a device-side
    assert); only where one occurs, as a tokenizer may hold special tokens no text produces. `pad`:
    the id padding adds, where rows are padded."""
    largest = max((max(row) for row in rows if len(row)), default=-1)
    largest = largest if pad is None else max(largest, pad)
    layer = model.get_input_embeddings()
    embeddings = getattr(layer, "base_layer", layer).num_embeddings  # (PEFT wraps an adapted one)
    if largest >= embeddings:
        raise UserError(
            f"{named}: its tokenizer gave token id {largest:,} in {where}, beyond the {embeddings:,} "
            f"token embeddings of the model: is the tokenizer of another model?"
        )


def _model_name(key: str, declared: dict[str, Any], prefix: str) -> str | None:
    """The model's name of a stored tensor, as transformers matches them: the same, or without or
    with the base model's prefix (a bare encoder loaded from a classifier's checkpoint, or the
    reverse); None for a tensor the model does not have."""
    if key in declared:
        return key
    if prefix and key.startswith(prefix + ".") and key[len(prefix) + 1 :] in declared:
        return key[len(prefix) + 1 :]
    if prefix and f"{prefix}.{key}" in declared:
        return f"{prefix}.{key}"
    return None


def _shape(shape: tuple[int, ...]) -> str:
    return f"[{', '.join(f'{size:,}' for size in shape)}] ({math.prod(shape):,} values)"
