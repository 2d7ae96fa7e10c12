"""Tiny random bi-encoder checkpoints for the dense first stage, built on the spot.

- `build_jina_embeddings`: a `JinaEmbeddingsV3Model` (the native transformers port of
  jina-embeddings-v3) with an XLM-R-like tokenizer and two PEFT LoRA adapters in
  `retrieval_query/` and `retrieval_passage/`, their B matrices random and different per adapter
  (PEFT initialises B at zero, which would make an adapter a no-op).
- `build_sentence_transformers`: a sentence-transformers layout (modules.json, 1_Pooling,
  optional 2_Normalize, sentence_bert_config.json, config_sentence_transformers.json) around a
  tiny BertModel (mean / cls / max pooling) or Qwen3Model (last-token pooling, Qwen3-Embedding's
  tokenizer conventions: `<|endoftext|>` appended, pad = `<|endoftext|>`, left padding).
- `build_reranker`: a cross-encoder (BertForSequenceClassification), which is not a bi-encoder.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

TEXT = [
    "the quick brown fox jumps over the lazy dog",
    "The Quick Brown Fox Jumps Over The Lazy Dog",
    "information retrieval ranks passages by relevance to a query",
    "Information Retrieval Ranks Passages By Relevance To A Query",
    "aspirin lowers the risk of heart attacks in adults",
    "vitamin d and calcium keep bones strong",
    "Represent the query for retrieving evidence documents:",
    "Represent the document for retrieval:",
    "query: passage: search_query: search_document: Instruct: Query:",
    "scurvy is caused by a lack of vitamin c",
    "数据检索与排序 日本語の文章 한국어 문장",
] * 20

JINA_ADAPTERS = ("retrieval_query", "retrieval_passage")
JINA_LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "fc1", "fc2"]


#: every setting of a dense first stage left to the checkpoint's own files
NO_OVERRIDES = dict.fromkeys(
    ("pooling", "normalize", "max_length", "dimensions", "query_prefix", "passage_prefix", "adapters")
)


def cpu_encoder(folder: Path, overrides: dict | None = None, dtype: str = "float32", **kwargs):
    """A CPU encoder of a checkpoint folder: its recipe from the folder's files, then `overrides`;
    `kwargs` go to DenseEncoder (batch budget, packing, ...)."""
    from rerank_eval.first_stage.dense.encoder import DenseEncoder
    from rerank_eval.first_stage.dense.recipe import read_recipe
    from rerank_eval.models.checkpoint import resolve_checkpoint

    checkpoint = resolve_checkpoint(str(folder))
    recipe = read_recipe(checkpoint.folder, checkpoint.source, {**NO_OVERRIDES, **(overrides or {})})
    return DenseEncoder(checkpoint, recipe, device="cpu", dtype=dtype, **kwargs)


def _write_json(path: Path, value) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value, indent=2), encoding="utf-8")


# --- tokenizers ----------------------------------------------------------------------------------


def unigram_built_on(texts: list[str], specials: list[str], unk: str) -> Any:
    """A Unigram tokenizer over Metaspace pieces whose vocabulary is built, not trained (the
    trainer's result changed from one process to the next, as WordPiece's does; see
    `tests.checkpoints.wordpiece_built_on`): the special tokens, then every character of `texts`
    (unlikely), then their pieces whole (likely), each list sorted."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    pre_tokenizer = pre_tokenizers.Metaspace()
    pieces = sorted({piece for text in texts for piece, _ in pre_tokenizer.pre_tokenize_str(text)})
    characters = sorted({character for piece in pieces for character in piece})
    vocabulary = [(token, 0.0) for token in specials] + [(c, -10.0) for c in characters]
    vocabulary += [(piece, -1.0) for piece in pieces if len(piece) > 1]
    tokenizer = Tokenizer(models.Unigram(vocabulary, unk_id=specials.index(unk)))
    tokenizer.pre_tokenizer, tokenizer.decoder = pre_tokenizer, decoders.Metaspace()
    return tokenizer


def build_xlmr_tokenizer(folder: Path, model_max_length: int = 8192):
    """An XLM-R-like tokenizer: Unigram over Metaspace pieces, `<s>`=0 `<pad>`=1 `</s>`=2 `<unk>`=3,
    `<s> $A </s>` around every text."""
    from tokenizers import processors
    from transformers import PreTrainedTokenizerFast

    tokenizer = unigram_built_on(TEXT, ["<s>", "<pad>", "</s>", "<unk>"], unk="<unk>")
    bos, eos = tokenizer.token_to_id("<s>"), tokenizer.token_to_id("</s>")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", pair="<s> $A </s> </s> $B </s>", special_tokens=[("<s>", bos), ("</s>", eos)]
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
        unk_token="<unk>", cls_token="<s>", sep_token="</s>", model_max_length=model_max_length,
    )  # fmt: skip
    fast.save_pretrained(str(folder))
    return fast


def build_cased_wordpiece_tokenizer(folder: Path, model_max_length: int | None = 512):
    """A BERT-style WordPiece tokenizer that keeps case (so lower-casing changes the tokens)."""
    from tokenizers import processors
    from transformers import PreTrainedTokenizerFast

    from tests.checkpoints import wordpiece_built_on

    tokenizer = wordpiece_built_on(TEXT, lowercase=False)
    cls, sep = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls), ("[SEP]", sep)],
    )
    kwargs = {"model_max_length": model_max_length} if model_max_length else {}
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]",
        sep_token="[SEP]", mask_token="[MASK]", **kwargs,
    )  # fmt: skip
    fast.save_pretrained(str(folder))
    return fast


def build_qwen3_embedding_tokenizer(folder: Path):
    """Byte-level BPE as Qwen3-Embedding: `<|endoftext|>` appended to every text and used as the pad
    token, padding on the left."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tokenizer.train_from_iterator(TEXT, trainer)
    eot = tokenizer.token_to_id("<|endoftext|>")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="$A <|endoftext|>", pair="$A <|endoftext|> $B:1 <|endoftext|>:1",
        special_tokens=[("<|endoftext|>", eot)],
    )  # fmt: skip
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, eos_token="<|im_end|>", pad_token="<|endoftext|>",
        padding_side="left", model_max_length=131072,
    )  # fmt: skip
    fast.save_pretrained(str(folder))
    return fast


# --- jina-embeddings-v3 --------------------------------------------------------------------------


def build_jina_embeddings(folder: Path, seed: int = 0) -> Path:
    """A tiny JinaEmbeddingsV3Model with `retrieval_query/` and `retrieval_passage/` LoRA adapters."""
    from peft import LoraConfig, get_peft_model
    from transformers import JinaEmbeddingsV3Config, JinaEmbeddingsV3Model

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = build_xlmr_tokenizer(folder)
    torch.manual_seed(seed)
    config = JinaEmbeddingsV3Config(
        vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=64, max_position_embeddings=8194, pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
    )  # fmt: skip
    base = JinaEmbeddingsV3Model(config)
    with torch.no_grad():  # LayerNorms away from (1, 0), so that they matter
        for module in base.modules():
            if isinstance(module, torch.nn.LayerNorm):
                module.weight.uniform_(0.5, 1.5)
                module.bias.normal_(0.0, 0.1)
    base.save_pretrained(str(folder))
    for index, name in enumerate(JINA_ADAPTERS):
        # a fresh copy of the base per adapter, so each adapter is saved alone
        model = get_peft_model(
            JinaEmbeddingsV3Model.from_pretrained(str(folder)),
            LoraConfig(r=4, lora_alpha=1, target_modules=JINA_LORA_TARGETS, lora_dropout=0.0),
        )
        generator = torch.Generator().manual_seed(1000 + index)
        with torch.no_grad():
            for parameter_name, parameter in model.named_parameters():
                if "lora_" in parameter_name:
                    # random A and B (B is zero at init); large enough to move the embeddings clearly
                    parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.5)
        model.save_pretrained(str(folder / name))
    return folder


# --- sentence-transformers layouts -----------------------------------------------------------------


def _tiny_bert(vocab_size: int, seed: int):
    from transformers import BertConfig, BertModel

    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=64, max_position_embeddings=64, initializer_range=0.2,
    )  # fmt: skip
    # (a wide init: at the usual 0.02 attention is nearly uniform and a CLS vector barely sees its text)
    return BertModel(config, add_pooling_layer=False)


def _tiny_qwen3(vocab_size: int, seed: int):
    from transformers import Qwen3Config, Qwen3Model

    torch.manual_seed(seed)
    config = Qwen3Config(
        vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, head_dim=8, max_position_embeddings=2048,
        initializer_range=0.2,
    )  # fmt: skip
    model = Qwen3Model(config)
    with torch.no_grad():
        model.norm.weight.uniform_(0.5, 1.5)
    return model


POOLING_KEYS = {
    "mean": "pooling_mode_mean_tokens",
    "cls": "pooling_mode_cls_token",
    "max": "pooling_mode_max_tokens",
    "lasttoken": "pooling_mode_lasttoken",
}


def build_sentence_transformers(
    folder: Path,
    *,
    pooling: str,
    normalize: bool,
    max_seq_length: int | None = 16,
    do_lower_case: bool = False,
    prompts: dict[str, str] | None = None,
    similarity_fn_name: str | None = None,
    default_prompt_name: str | None = None,
    extra_modules: list[dict] | None = None,
    transformer_config: str = "sentence_bert_config.json",
    seed: int = 0,
) -> Path:
    """A sentence-transformers checkpoint in the layout the Hub's bi-encoders ship: Transformer at the
    root, `1_Pooling/config.json` (the legacy `pooling_mode_*` keys), `2_Normalize` when asked."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if pooling == "lasttoken":
        tokenizer = build_qwen3_embedding_tokenizer(folder)
        model = _tiny_qwen3(len(tokenizer), seed)
    else:
        tokenizer = build_cased_wordpiece_tokenizer(folder)
        model = _tiny_bert(len(tokenizer), seed)
    model.save_pretrained(str(folder))
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
    ]
    pooling_config = {"word_embedding_dimension": model.config.hidden_size}
    pooling_config.update({key: False for key in POOLING_KEYS.values()})
    pooling_config.update(
        {"pooling_mode_mean_sqrt_len_tokens": False, "pooling_mode_weightedmean_tokens": False}
    )
    pooling_config[POOLING_KEYS[pooling]] = True
    pooling_config["include_prompt"] = True
    _write_json(folder / "1_Pooling" / "config.json", pooling_config)
    for extra in extra_modules or []:
        modules.append({"idx": len(modules), "name": str(len(modules)), **extra})
    if normalize:
        modules.append(
            {"idx": len(modules), "name": str(len(modules)), "path": f"{len(modules)}_Normalize",
             "type": "sentence_transformers.models.Normalize"}
        )  # fmt: skip
        (folder / modules[-1]["path"]).mkdir(exist_ok=True)
    _write_json(folder / "modules.json", modules)
    bert_config: dict = {"do_lower_case": do_lower_case}
    if max_seq_length is not None:
        bert_config["max_seq_length"] = max_seq_length
    _write_json(folder / transformer_config, bert_config)
    st_config: dict = {
        "__version__": {"sentence_transformers": "3.0.1", "transformers": "4.41.2", "pytorch": "2.3.0"},
        "prompts": prompts or {},
        "default_prompt_name": default_prompt_name,
    }
    if similarity_fn_name is not None:
        st_config["similarity_fn_name"] = similarity_fn_name
    _write_json(folder / "config_sentence_transformers.json", st_config)
    return folder


# --- encoder-decoder backbones with projections (GTR, sentence-T5) -----------------------------------


def build_t5_tokenizer(folder: Path, model_max_length: int = 512):
    """A T5-like tokenizer: Unigram over Metaspace pieces, `<pad>`=0 `</s>`=1 `<unk>`=2, `</s>`
    appended to every text, case kept."""
    from tokenizers import processors
    from transformers import PreTrainedTokenizerFast

    tokenizer = unigram_built_on(TEXT, ["<pad>", "</s>", "<unk>"], unk="<unk>")
    eos = tokenizer.token_to_id("</s>")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", eos)]
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, eos_token="</s>", pad_token="<pad>", unk_token="<unk>",
        model_max_length=model_max_length,
    )  # fmt: skip
    fast.save_pretrained(str(folder))
    return fast


def build_t5_sentence_transformers(
    folder: Path,
    *,
    projections: list[dict],
    pooling: str = "mean",
    normalize: bool = True,
    max_seq_length: int = 16,
    prompts: dict[str, str] | None = None,
    seed: int = 0,
) -> Path:
    """A GTR / sentence-T5 layout saved by sentence-transformers itself: a whole T5 (encoder and
    decoder, as the Hub's T5 checkpoints hold them) of which sentence-transformers loads the encoder
    alone, pooled, then each of `projections` (`Dense` keyword arguments: out_features, bias,
    activation_function, use_residual), then Normalize when asked."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Dense, Normalize, Pooling, Transformer
    from transformers import T5Config, T5ForConditionalGeneration

    folder = Path(folder)
    backbone = folder.parent / f"{folder.name}-t5"
    tokenizer = build_t5_tokenizer(backbone)
    torch.manual_seed(seed)
    config = T5Config(
        vocab_size=len(tokenizer), d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
        decoder_start_token_id=tokenizer.pad_token_id, pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id, initializer_factor=4.0,
    )  # fmt: skip
    T5ForConditionalGeneration(config).save_pretrained(str(backbone))
    transformer = Transformer(str(backbone), max_seq_length=max_seq_length)
    width = transformer.get_embedding_dimension()
    modules = [transformer, Pooling(width, pooling)]
    for options in projections:
        options = {"out_features": width, **options}
        modules.append(Dense(in_features=width, **options))
        width = options["out_features"]
        with torch.no_grad():  # a wide init, so that a projection moves vectors well beyond float error
            for parameter in modules[-1].parameters():
                parameter.copy_(torch.randn(parameter.shape) * 0.5)
    if normalize:
        modules.append(Normalize())
    model = SentenceTransformer(modules=modules, device="cpu", prompts=prompts or {})
    model.save(str(folder))
    return folder
