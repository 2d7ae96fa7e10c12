"""Tiny random checkpoints in the published listwise last-token layout, built on the spot.

A byte-level BPE tokenizer is trained on a few sentences (with the chat tokens and the two
embedding tokens added), a small Qwen3 backbone is initialised at random, and the weights are
saved as the real checkpoint stores them: backbone under `model.`, projector under `projector.`,
optionally an `lm_head.weight`, in bfloat16 or float32, with `architectures: ["JinaForRanking"]`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

TRAINING_TEXT = [
    "the quick brown fox jumps over the lazy dog",
    "information retrieval ranks passages by relevance to a query",
    "aspirin lowers the risk of heart attacks in adults",
    "vitamin d and calcium keep bones strong",
    "数据检索与排序 日本語の文章 한국어 문장",
    'emoji 😀 and punctuation: (a), [b]; {c}! "quoted" it\'s',
    '<passage id="0">\n</passage>\n<query>\n</query>\n<think>\n\n</think>\n\n',
] * 20
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|embed_token|>", "<|rerank_token|>"]


def build_tokenizer(folder: Path, model_max_length: int | None, special_tokens: list[str] = SPECIAL_TOKENS):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=special_tokens,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tokenizer.train_from_iterator(TRAINING_TEXT, trainer)
    kwargs = {"model_max_length": model_max_length} if model_max_length else {}
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, eos_token="<|im_end|>", pad_token="<|endoftext|>", **kwargs
    )
    fast.save_pretrained(str(folder))
    return fast


def build_listwise_checkpoint(
    folder: Path,
    *,
    model_max_length: int | None = 4096,
    hidden: int = 32,
    projector_width: int = 16,
    layers: int = 2,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
    with_lm_head: bool = True,
    with_projector: bool = True,
    special_tokens: list[str] = SPECIAL_TOKENS,
    layer_types: list[str] | None = None,
    sliding_window: int | None = None,
) -> Path:
    """A tiny JinaForRanking checkpoint; with `layer_types` and `sliding_window`, in
    jina-reranker-v3.5's layout (some layers attend within a sliding window)."""
    from transformers import Qwen3Config, Qwen3Model

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer(folder, model_max_length, special_tokens)
    torch.manual_seed(seed)
    config = Qwen3Config(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=hidden * 2,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=hidden // 4,
        max_position_embeddings=8192,
        rms_norm_eps=1e-6,
        rope_theta=1_000_000.0,
        tie_word_embeddings=True,
        **(
            {"use_sliding_window": True, "sliding_window": sliding_window, "layer_types": layer_types}
            if layer_types
            else {}
        ),
    )
    backbone = Qwen3Model(config)
    # Random init leaves the norms at 1; perturb them so that the final norm matters in tests.
    with torch.no_grad():
        backbone.norm.weight.uniform_(0.5, 1.5)
    state = {f"model.{k}": v.detach().clone().to(dtype) for k, v in backbone.state_dict().items()}
    if with_lm_head:
        state["lm_head.weight"] = state["model.embed_tokens.weight"].clone()
    if with_projector:
        state["projector.0.weight"] = (torch.randn(projector_width, hidden) / hidden**0.5).to(dtype)
        state["projector.2.weight"] = (
            torch.randn(projector_width, projector_width) / projector_width**0.5
        ).to(dtype)
    save_file({k: v.contiguous() for k, v in state.items()}, str(folder / "model.safetensors"))
    raw = config.to_dict()
    raw["architectures"] = ["JinaForRanking"]
    raw["auto_map"] = {"AutoModel": "modeling.JinaForRanking"}
    raw["model_type"] = "qwen3"
    raw["torch_dtype"] = str(dtype).removeprefix("torch.")
    (folder / "config.json").write_text(json.dumps(raw, indent=2), encoding="utf-8")
    return folder


# --- pointwise families ---------------------------------------------------------------------------

PAIR_TEXT = [
    "what causes scurvy", "scurvy is caused by a lack of vitamin c", "the lazy dog sleeps",
    "bones need calcium and vitamin d", "heart attacks and aspirin", "a query about retrieval",
] * 10  # fmt: skip


def wordpiece_built_on(texts: list[str], lowercase: bool) -> Any:
    """A BERT-style WordPiece tokenizer (without its template) whose vocabulary is built, not
    trained: tokenizers' WordPiece trainer breaks ties between equally frequent merges in hash
    order, so each process got another vocabulary, and a model built from the same seed scored
    otherwise from one test run to the next. Here: the special tokens, every character of `texts`
    alone and as a continuation, then their words whole, each list sorted."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers

    normalizer = normalizers.BertNormalizer(lowercase=lowercase)
    pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    normalized = [normalizer.normalize_str(text) for text in texts]
    words = sorted({word for text in normalized for word, _ in pre_tokenizer.pre_tokenize_str(text)})
    characters = sorted({character for word in words for character in word})
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tokens = [*specials, *characters, *(f"##{c}" for c in characters), *(w for w in words if len(w) > 1)]
    tokenizer = Tokenizer(models.WordPiece({token: i for i, token in enumerate(tokens)}, unk_token="[UNK]"))
    tokenizer.normalizer, tokenizer.pre_tokenizer = normalizer, pre_tokenizer
    return tokenizer


def build_wordpiece_tokenizer(folder: Path):
    """A BERT-style tokenizer (lower-casing WordPiece, [CLS] a [SEP] b [SEP] with token types)."""
    from tokenizers import processors
    from transformers import PreTrainedTokenizerFast

    tokenizer = wordpiece_built_on(PAIR_TEXT, lowercase=True)
    cls, sep = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls), ("[SEP]", sep)],
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]",
        sep_token="[SEP]", mask_token="[MASK]", model_max_length=512,
    )  # fmt: skip
    fast.save_pretrained(str(folder))
    return fast


def _tiny_bert_config(vocab_size: int, **extra):
    from transformers import BertConfig

    return BertConfig(
        vocab_size=vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=64, max_position_embeddings=512, **extra,
    )  # fmt: skip


def build_cross_encoder(folder: Path, num_labels: int = 1, seed: int = 0) -> Path:
    from transformers import BertForSequenceClassification

    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = build_wordpiece_tokenizer(folder)
    torch.manual_seed(seed)
    model = BertForSequenceClassification(_tiny_bert_config(len(tokenizer), num_labels=num_labels))
    model.save_pretrained(str(folder))
    return folder


def build_bi_encoder(folder: Path, seed: int = 0) -> Path:
    from transformers import BertModel

    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = build_wordpiece_tokenizer(folder)
    torch.manual_seed(seed)
    BertModel(_tiny_bert_config(len(tokenizer)), add_pooling_layer=False).save_pretrained(str(folder))
    return folder


CAUSAL_TEXT = [
    "yes", "no", "1", "0", "yes no yes no", "Relevance:", "query: document:",
    "<Instruct>: <Query>: <Document>:", "You are Qwen, created by Alibaba Cloud.",
    "Judge whether the Document meets the requirements", "scurvy vitamin c heart aspirin",
] * 30  # fmt: skip


def build_causal_lm(folder: Path, seed: int = 0) -> Path:
    """A tiny Qwen3 causal LM (untied output embeddings) whose tokenizer has yes/no/1/0 tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast, Qwen3Config, Qwen3ForCausalLM

    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=SPECIAL_TOKENS[:3],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tokenizer.train_from_iterator(CAUSAL_TEXT + TRAINING_TEXT, trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, eos_token="<|im_end|>", pad_token="<|endoftext|>"
    )
    for token in ("yes", "no", "1", "0"):
        assert (
            fast.convert_tokens_to_ids(token) != fast.unk_token_id
            and fast.convert_tokens_to_ids(token) is not None
        )
    fast.save_pretrained(str(folder))
    torch.manual_seed(seed)
    config = Qwen3Config(
        vocab_size=len(fast), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, head_dim=8, max_position_embeddings=2048,
        tie_word_embeddings=False,
    )  # fmt: skip
    Qwen3ForCausalLM(config).save_pretrained(str(folder))
    return folder
