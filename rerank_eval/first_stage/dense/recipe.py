"""How a bi-encoder turns text into a vector: read from the checkpoint's own sentence-transformers
files, so bge, e5, gte, GTR, MiniLM or Qwen3-Embedding need no per-model code.

`modules.json` lists the modules (Transformer, Pooling, Dense, Normalize), `1_Pooling/config.json`
the pooling, each Dense module's folder its projection (`projection`), `sentence_bert_config.json`
the maximum length and lower-casing, and `config_sentence_transformers.json` the query and document
prompts. A preset's explicit settings
win over the files (jina-embeddings-v3's adapters and instruction prefixes are not in them).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from rerank_eval.errors import UserError
from rerank_eval.first_stage.dense.checkpoint_files import (
    inside_checkpoint,
    read_dense_spec,
    read_json,
    read_object,
)
from rerank_eval.models.checkpoint import architectures
from rerank_eval.typed import declared_length, is_positive_integer

POOLINGS = ("mean", "cls", "lasttoken", "max")
# sentence-transformers' Pooling config keys for each pooling we implement
_POOLING_KEYS = {
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_cls_token": "cls",
    "pooling_mode_lasttoken": "lasttoken",
    "pooling_mode_max_tokens": "max",
}
_UNSUPPORTED_POOLING_KEYS = ("pooling_mode_mean_sqrt_len_tokens", "pooling_mode_weightedmean_tokens")
_RERANKER_ARCHITECTURES = ("ForSequenceClassification", "ForCausalLM", "JinaForRanking")
DEFAULT_MAX_LENGTH = 512
_SIMILARITIES = {"cosine", "dot"}
# encode_document's prompt names, in sentence-transformers' order
_PASSAGE_PROMPTS = ("document", "passage", "corpus")
_TRANSFORMER_CONFIGS = (
    "sentence_bert_config.json", "sentence_roberta_config.json", "sentence_distilbert_config.json",
    "sentence_camembert_config.json", "sentence_albert_config.json", "sentence_xlm-roberta_config.json",
    "sentence_xlnet_config.json",
)  # fmt: skip


@dataclass(frozen=True)
class EncoderRecipe:
    """Everything besides the weights that decides an embedding."""

    pooling: str
    normalize: bool
    max_length: int
    query_prefix: str
    passage_prefix: str
    lowercase: bool = False
    #: PEFT adapter subfolders per side ({"query": ..., "passage": ...}), or None
    adapters: dict[str, str] | None = None
    #: the Transformer module's subfolder ("" for the checkpoint root)
    transformer_path: str = ""
    #: Matryoshka truncation: the first this many coordinates of each pooled vector, normalised
    #: after the cut where `normalize` is on (None: every coordinate)
    dimensions: int | None = None
    #: the folders of the Dense modules the pooled vector goes through, in order (GTR, sentence-T5)
    dense_layers: tuple[str, ...] = ()

    def prefix(self, side: str) -> str:
        return self.query_prefix if side == "query" else self.passage_prefix

    def adapter(self, side: str) -> str | None:
        return (self.adapters or {}).get(side)

    def side_identity(self, side: str) -> dict[str, Any]:
        """What decides one side's embeddings (the passage side keys the corpus cache)."""
        shared = {
            k: v for k, v in self.to_json().items() if k not in ("query_prefix", "passage_prefix", "adapters")
        }
        return {**shared, "prefix": self.prefix(side), "adapter": self.adapter(side)}

    def to_json(self) -> dict[str, Any]:
        """As manifests record it and keys hash it: `dimensions` and `dense_layers` only when set, so
        caches and score journals written before they existed keep their keys."""
        recorded = asdict(self)
        if self.dimensions is None:
            del recorded["dimensions"]
        if not self.dense_layers:
            del recorded["dense_layers"]
        else:
            recorded["dense_layers"] = list(self.dense_layers)
        return recorded


def _module_kind(entry: dict[str, Any]) -> str:
    """'Transformer', 'Pooling', 'Normalize', ... from `sentence_transformers.models.Pooling` and the like."""
    return str(entry.get("type", "")).rsplit(".", 1)[-1]


def _named(entry: Any) -> str:
    """A modules.json entry as a refusal names it: its type, or the entry where it has none."""
    if isinstance(entry, dict) and entry.get("type"):
        return repr(entry["type"])[:120]
    return f"without a type ({entry!r})"[:160] if isinstance(entry, dict) else repr(entry)[:120]


def _pooling_from_config(config: dict[str, Any], path: Path) -> str:
    declared = config.get("pooling_mode")
    if isinstance(declared, str):
        declared = [declared]
    if isinstance(declared, list):  # newer sentence-transformers name the modes (a list: concatenated)
        chosen = [str(mode) for mode in declared]
    else:
        for key in (*_POOLING_KEYS, *_UNSUPPORTED_POOLING_KEYS):
            _refuse_non_flag(config, key, path)
        chosen = [name for key, name in _POOLING_KEYS.items() if config.get(key)]
        chosen += [key for key in _UNSUPPORTED_POOLING_KEYS if config.get(key)]
    if len(chosen) != 1 or chosen[0] not in POOLINGS:
        raise UserError(
            f"{path}: pooling {', '.join(chosen) or 'none'} is not supported "
            f"(use one of {', '.join(POOLINGS)})"
        )
    _refuse_non_flag(config, "include_prompt", path)
    if not config.get("include_prompt", True):
        raise UserError(
            f"{path}: pooling that leaves the prompt out (include_prompt: false) is not supported"
        )
    return chosen[0]


def _refuse_non_flag(config: dict[str, Any], key: str, path: Path) -> None:
    """sentence-transformers reads a flag by its truth: true, false, 1, 0 and null mean what they
    say, but the string "false" would be true there and here, so a text (or anything else) is
    refused."""
    value = config.get(key, False)
    if not (value is None or isinstance(value, bool) or (type(value) is int and value in (0, 1))):
        raise UserError(f"{path}: {key} must be true or false, not {value!r}"[:300])


#: the modules an encoder runs once; Dense layers may follow one another
_ONCE_ONLY_MODULES = ("Transformer", "Pooling", "Normalize")


def read_sentence_transformers(folder: Path) -> dict[str, Any]:
    """Pooling, normalisation, length, lower-casing and prompts as the checkpoint's files state them
    (empty when it has no modules.json)."""
    modules_path = folder / "modules.json"
    if not modules_path.is_file():
        return {}
    modules = read_json(modules_path, "sentence-transformers modules")
    if not isinstance(modules, list):
        raise UserError(f"{modules_path}: expected a list of modules")
    found: dict[str, Any] = {"normalize": False}
    seen: list[str] = []
    for entry in modules:
        kind = _module_kind(entry) if isinstance(entry, dict) else ""
        if kind in _ONCE_ONLY_MODULES and kind in seen:  # (a second one would run on the first's output)
            raise UserError(f"{modules_path}: more than one {kind} module is not supported")
        seen.append(kind)
        path = (
            inside_checkpoint(folder, entry.get("path", ""), f"{modules_path}: module path")
            if kind
            else folder
        )
        if kind == "Transformer":
            found["transformer_path"] = str(entry.get("path", ""))
            found.update(_transformer_settings(path))
        elif kind == "Pooling":
            found["pooling"] = _pooling_from_config(read_object(path / "config.json", "pooling config"), path)
        elif kind == "Dense":
            _check_dense_place(found, modules_path)
            read_dense_spec(path)  # a module we cannot run is refused now, not after loading
            found.setdefault("dense_layers", []).append(str(entry.get("path", "")))
        elif kind == "Normalize":
            found["normalize"] = True
        else:
            raise UserError(
                f"{modules_path}: module {_named(entry)} is not supported (rerank-eval reads Transformer, "
                f"Pooling, Dense and Normalize)"
            )
    found.update(_prompts_and_similarity(folder / "config_sentence_transformers.json", found["normalize"]))
    return found


def _transformer_settings(path: Path) -> dict[str, Any]:
    """The Transformer module's maximum length and lower-casing, from the first of the files
    sentence-transformers reads that exists (older models name theirs after the architecture, e.g.
    sentence_xlm-roberta_config.json); none where it has none of them."""
    # (exists, not is_file: a folder of that name is refused in reading it, not passed over)
    bert_config = next((path / name for name in _TRANSFORMER_CONFIGS if (path / name).exists()), None)
    if bert_config is None:
        return {}
    values = read_object(bert_config, "sentence-transformers config")
    _refuse_non_flag(values, "do_lower_case", bert_config)
    found: dict[str, Any] = {}
    length = values.get("max_seq_length")
    if length is not None:
        if not is_positive_integer(length):
            raise UserError(f"{bert_config}: max_seq_length must be a positive integer, not {length!r}"[:300])
        found["max_length"] = length
    found["lowercase"] = bool(values.get("do_lower_case", False))
    return found


def _prompts_and_similarity(prompts_path: Path, normalize: bool) -> dict[str, Any]:
    """The query and passage prompts, and whether vectors are made unit length: where the modules
    normalise, or where the similarity is cosine. sentence-transformers scores with the similarity
    the checkpoint names, cosine where it names none; cosine is the inner product of unit vectors,
    dot the raw one."""
    found: dict[str, Any] = {}
    written = prompts_path.is_file()
    settings = read_object(prompts_path, "sentence-transformers prompts") if written else {}
    if written:
        prompts = settings.get("prompts") or {}
        default_name = settings.get("default_prompt_name") or ""
        if not isinstance(default_name, str):
            raise UserError(f"{prompts_path}: default_prompt_name must be a name, not {default_name!r}"[:300])
        _check_prompts(prompts, default_name, prompts_path)
        default = prompts.get(default_name, "")
        found["query_prefix"] = _side_prompt(prompts, ("query",), default, prompts_path)
        found["passage_prefix"] = _side_prompt(prompts, _PASSAGE_PROMPTS, default, prompts_path)
    similarity = settings.get("similarity_fn_name") or "cosine"
    if not isinstance(similarity, str) or similarity not in _SIMILARITIES:
        raise UserError(
            f"{prompts_path}: similarity {similarity!r} is not an inner product; rerank-eval embeds for "
            f"{' or '.join(sorted(_SIMILARITIES))} only (exact inner-product search, bi-encoder scores)"
        )
    found["normalize"] = normalize or similarity == "cosine"
    return found


def _check_prompts(prompts: Any, default_name: str, path: Path) -> None:
    """Prompts as sentence-transformers 6 loads them: an object of names and texts, and a default
    prompt name that is one of them or `query` / `document` (which it always has, empty where the
    file gives none); it refuses the model otherwise."""
    if not isinstance(prompts, dict):
        raise UserError(f"{path}: prompts must be an object of names and texts, not {prompts!r}"[:300])
    if default_name and default_name not in (*prompts, "query", "document"):
        raise UserError(f"{path}: default_prompt_name {default_name!r} names none of its prompts"[:300])


def _check_dense_place(found: dict[str, Any], modules_path: Path) -> None:
    """A Dense module projects the pooled vector before any Normalize: elsewhere (on token
    vectors, or after normalising) it would embed otherwise than we run it."""
    if "pooling" not in found:
        raise UserError(f"{modules_path}: a Dense module before Pooling is not supported")
    if found["normalize"]:
        raise UserError(f"{modules_path}: a Dense module after Normalize is not supported")


def _side_prompt(prompts: dict[str, Any], names: tuple[str, ...], default: Any, path: Path) -> str:
    """sentence-transformers' encode_query / encode_document: the first of the side's prompt names
    that the model has, else its default prompt. (sentence-transformers 6.x fills absent `query` and
    `document` with "" before looking, so it never reaches `passage`, `corpus` or the default there;
    we keep the rule its docstring states and that the models' authors wrote against.)"""
    chosen = next((prompts[name] for name in names if name in prompts), default)
    if not isinstance(chosen, (str, type(None))):  # (one never used is never read, there or here)
        raise UserError(f"{path}: the {names[0]} prompt must be a text, not {chosen!r}"[:300])
    return "" if chosen is None else chosen


def _config_value(folder: Path, name: str) -> int | None:
    """A positive integer of the model's config (None when it declares none). Any other value is
    refused here: transformers' own refusal is many lines, and `true` would pass as 1."""
    config = folder / "config.json"
    if not config.is_file():
        return None
    values = read_object(config, "model config")
    if name not in values:
        return None
    declared = values[name]
    if not is_positive_integer(declared):
        raise UserError(f"{config}: {name} must be a positive integer, not {declared!r}"[:300])
    return declared


def _position_limit(folder: Path) -> int | None:
    """The model's `max_position_embeddings` (None when it declares none)."""
    return _config_value(folder, "max_position_embeddings")


#: the longest query or passage prefix taken: the longest published instruction is a few hundred
#: characters, and a prefix is joined to every text of a shard (65,536) before texts are cut
MAX_PREFIX_CHARACTERS = 4096


def read_recipe(folder: Path, source: str, overrides: dict[str, Any]) -> EncoderRecipe:
    """The recipe of a checkpoint: its sentence-transformers files, then the preset's settings."""
    found = read_sentence_transformers(folder)
    explicit = {k: v for k, v in overrides.items() if v is not None}
    if "pooling" not in found and "pooling" not in explicit:
        rerankers = [a for a in architectures(folder) if a.endswith(_RERANKER_ARCHITECTURES)]
        what = f"is a reranker ({rerankers[0]}), not a bi-encoder" if rerankers else "is not a bi-encoder"
        raise UserError(
            f"encoder {source} {what}: it has no modules.json and no pooling "
            f"setting; give a sentence-transformers checkpoint or set pooling ({', '.join(POOLINGS)})"
        )
    values = {**found, **explicit}
    if values.get("pooling") not in POOLINGS:
        raise UserError(
            f"encoder {source}: pooling {values.get('pooling')!r} is not one of {', '.join(POOLINGS)}"
        )
    transformer = folder / values.get("transformer_path", "")
    max_length = values.get("max_length")
    if not max_length:
        # as sentence-transformers: the tokenizer's limit capped at the model's positions (a longer
        # text would index past the position table); 512 when the tokenizer declares none
        limit = _tokenizer_limit(transformer) or DEFAULT_MAX_LENGTH
        max_length = min(limit, _position_limit(transformer) or limit)
    positions = _position_limit(transformer)
    if positions is not None and max_length > positions:
        raise UserError(
            f"encoder {source}: max_length {max_length} is beyond the model's {positions} positions"
        )
    for side in ("query", "passage"):
        prefix = str(values.get(f"{side}_prefix", ""))
        if len(prefix) > MAX_PREFIX_CHARACTERS:  # it is copied onto every text of a shard before the cut
            raise UserError(
                f"encoder {source}: its {side} prefix is {len(prefix):,} characters long, more than "
                f"{MAX_PREFIX_CHARACTERS:,} (an instruction, not a document)"
            )
    layers = tuple(values.get("dense_layers") or ())
    width = vector_width(folder, transformer, layers, source)
    dimensions = values.get("dimensions")
    if dimensions is not None and width is not None and dimensions > width:
        raise UserError(f"encoder {source}: dimensions {dimensions} is more than its vectors' {width}")
    return EncoderRecipe(
        pooling=values["pooling"],
        normalize=bool(values.get("normalize", False)),
        max_length=int(max_length),
        query_prefix=str(values.get("query_prefix", "")),
        passage_prefix=str(values.get("passage_prefix", "")),
        lowercase=bool(values.get("lowercase", False)),
        adapters=dict(values["adapters"]) if values.get("adapters") else None,
        transformer_path=str(values.get("transformer_path", "")),
        dimensions=dimensions,
        dense_layers=layers,
    )


def vector_width(folder: Path, transformer: Path, layers: tuple[str, ...], source: str) -> int | None:
    """How wide the recipe's vectors are: the last projection's output, else the model's hidden
    size (T5 names it d_model); each projection must take what comes before it."""
    width = _config_value(transformer, "hidden_size") or _config_value(transformer, "d_model")
    for relative in layers:
        spec = read_dense_spec(folder / relative)
        if width is not None and spec.in_features != width:
            raise UserError(
                f"encoder {source}: Dense module {relative} takes vectors of {spec.in_features} "
                f"but is given {width}"
            )
        width = spec.out_features
    return width


def encoder_class(folder: Path) -> str:
    """The transformers Auto class that loads the model in `folder` as an encoder: AutoModel, except
    for an encoder-decoder (T5, mT5: GTR, sentence-T5), whose encoder alone embeds (as
    sentence-transformers loads it; AutoModel would want decoder inputs)."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_TEXT_ENCODING_MAPPING_NAMES

    config = folder / "config.json"
    model_type = read_object(config, "model config").get("model_type") if config.is_file() else None
    loaded = MODEL_FOR_TEXT_ENCODING_MAPPING_NAMES.get(str(model_type), "")
    return "AutoModelForTextEncoding" if loaded.endswith("EncoderModel") else "AutoModel"


def _tokenizer_limit(folder: Path) -> int | None:
    """The tokenizer's declared `model_max_length`, when it is a real limit (not 1e30)."""
    path = folder / "tokenizer_config.json"
    if not path.is_file():
        return None
    return declared_length(read_object(path, "tokenizer config").get("model_max_length"))
