"""Tiny random models of each family lmtune exports to GGUF, with tokenizers of that family's kind.

Byte-level BPE tokenizers are trained here with the pre-tokenizer each family ships (GPT-2's split, SmolLM's
digits, Llama 3's and Qwen2's regexes); SentencePiece ones are trained with ``sentencepiece`` (BPE with byte
fallback, with and without the dummy-prefix space) and converted by transformers as a hub tokenizer would be.
"""

from __future__ import annotations

import json
import random
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

WORDS = (
    "Hello world the answer is not weather in Oslo on Monday rain degrees café naïve plus what system user "
    "assistant spaces and newlines tokenizer model export llama forecast sunny cloudy wind 12 30 42 2024"
).split()
# Texts whose tokenisation llama.cpp must reproduce. None starts with a space: for those, transformers' Metaspace
# ("prepend_scheme": "first") adds no dummy prefix where SentencePiece and llama.cpp do.
TEXTS = [
    "Hello world!",
    "The answer is 2024, not 42.",
    "spaces  and\tand\nnewlines  ",
    "naïve café 😀 in Oslo",
    "Unseen wörds ☃ here: 3.14159",
]
PROMPT = "The weather in Oslo on Monday: rain, 12 to 15 degrees. What is the forecast? The answer is"
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CHATML = (
    "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def corpus(n: int = 400, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(12)) + rng.choice(".!?") for _ in range(n)] + TEXTS * 3


# --------------------------------------------------------------------------- tokenizers


def bpe_tokenizer(split: str, bos: str | None = None, vocab_size: int = 500) -> Any:
    """A byte-level BPE trained here; ``split`` is llama.cpp's name for the pre-tokenizer to build."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    from lmtune.shipping.gguf.vocab import LLAMA3_SPLIT, QWEN2_SPLIT

    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=split in ("gpt-2", "smollm"))
    regex = {"llama-bpe": LLAMA3_SPLIT, "qwen2": QWEN2_SPLIT}.get(split)
    steps = {
        "gpt-2": [byte_level],
        "smollm": [pre_tokenizers.Digits(individual_digits=True), byte_level],
    }.get(split) or [pre_tokenizers.Split(Regex(regex), behavior="isolated"), byte_level]
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.Sequence(steps) if len(steps) > 1 else steps[0]
    backend.decoder = decoders.ByteLevel()
    specials = SPECIALS + ([bos] if bos else [])
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )  # fmt: skip
    backend.train_from_iterator(corpus(), trainer)
    if bos:
        backend.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, backend.token_to_id(bos))]
        )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, eos_token="<|im_end|>", pad_token="<|endoftext|>", unk_token="<|endoftext|>",
        bos_token=bos,
    )  # fmt: skip
    tokenizer.chat_template = CHATML
    return tokenizer


def spm_tokenizer(folder: Path, tokenizer_class: str, dummy_prefix: bool, vocab_size: int = 400) -> Any:
    """A SentencePiece BPE with byte fallback, loaded by transformers from its ``tokenizer.model``."""
    import sentencepiece as spm
    from transformers import AutoTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    text = folder / "corpus.txt"
    text.write_text("\n".join(corpus()), encoding="utf-8")
    spm.SentencePieceTrainer.train(
        input=str(text), model_prefix=str(folder / "sp"), model_type="bpe", vocab_size=vocab_size,
        byte_fallback=True, character_coverage=1.0, add_dummy_prefix=dummy_prefix, unk_id=0, bos_id=1, eos_id=2,
        pad_id=-1, remove_extra_whitespaces=False, normalization_rule_name="identity", minloglevel=2,
        allow_whitespace_only_pieces=True,
    )  # fmt: skip
    hf = folder / "hf"
    hf.mkdir(exist_ok=True)
    shutil.copy(folder / "sp.model", hf / "tokenizer.model")
    config = {"tokenizer_class": tokenizer_class, "add_bos_token": True, "add_eos_token": False}
    (hf / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")
    return AutoTokenizer.from_pretrained(hf)


# --------------------------------------------------------------------------- families


@dataclass
class Case:
    """A family's tiny model: the config overrides and the tokenizer kind it is exported with."""

    model_type: str
    tokenizer: str  # "bpe:<split>" or "spm:<TokenizerClass>:<dummy prefix 0/1>"
    config: dict[str, Any] = field(default_factory=dict)
    bos: str | None = None


CASES = {
    # Llama 3.x: Llama 3's split, a BOS token, untied head, Llama 3's frequency-dependent RoPE
    "llama": Case(
        "llama",
        "bpe:llama-bpe",
        {
            "tie_word_embeddings": False,
            "rope_parameters": {
                "rope_type": "llama3",
                "rope_theta": 500000.0,
                "factor": 8.0,
                "low_freq_factor": 1.0,
                "high_freq_factor": 4.0,
                "original_max_position_embeddings": 64,
            },
        },
        bos="<|begin_of_text|>",
    ),  # fmt: skip
    # Mistral 7B v0.3: SentencePiece with the dummy prefix, untied head, no sliding window
    "mistral": Case("mistral", "spm:LlamaTokenizer:1", {"tie_word_embeddings": False, "sliding_window": None}),
    # Qwen2.5: Qwen2's split, biased Q/K/V, tied head
    "qwen2": Case("qwen2", "bpe:qwen2", {"tie_word_embeddings": True}),
    # Qwen3: Q/K norms, head_dim not hidden / heads, untied head
    "qwen3": Case("qwen3", "bpe:qwen2", {"tie_word_embeddings": False, "head_dim": 32}),
    # Gemma 2: SentencePiece without the prefix, soft-capping, an 8-token sliding window on every other layer
    "gemma2": Case(
        "gemma2",
        "spm:GemmaTokenizer:0",
        {
            "head_dim": 16,
            "query_pre_attn_scalar": 16,
            "sliding_window": 8,
            "attn_logit_softcapping": 50.0,
            "final_logit_softcapping": 30.0,
        },
    ),  # fmt: skip
    # Gemma 3 (text): 7 layers (5 sliding, 1 global, 1 sliding), own RoPE base for sliding layers, linear scaling
    "gemma3_text": Case(
        "gemma3_text",
        "spm:GemmaTokenizer:0",
        {
            "num_hidden_layers": 7,
            "head_dim": 16,
            "query_pre_attn_scalar": 16,
            "sliding_window": 8,
            "rope_parameters": {
                "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0},
                "full_attention": {"rope_type": "linear", "factor": 8.0, "rope_theta": 1000000.0},
            },
        },
    ),  # fmt: skip
    # Phi-3 mini: SentencePiece with the prefix, fused QKV and gate/up, untied head
    "phi3": Case("phi3", "spm:LlamaTokenizer:1", {"tie_word_embeddings": False, "sliding_window": None}),
}


def tokenizer_for(case: Case, folder: Path) -> Any:
    kind, _, rest = case.tokenizer.partition(":")
    if kind == "bpe":
        return bpe_tokenizer(rest, bos=case.bos)
    cls, _, prefix = rest.partition(":")
    tokenizer = spm_tokenizer(folder, cls, dummy_prefix=prefix == "1")
    tokenizer.chat_template = CHATML.replace("<|im_start|>", "<s>").replace("<|im_end|>", "</s>")
    return tokenizer


def tiny_model(case: Case, tokenizer: Any, seed: int = 0, hidden: int = 64, intermediate: int = 128) -> Any:
    """A random model of the family whose logits are spread enough that greedy choices are not near-ties."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    settings = dict(
        vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=intermediate, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )  # fmt: skip
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(AutoConfig.for_model(case.model_type, **{**settings, **case.config}))
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.05)
    return model.eval()


def small_llama(
    tokenizer: Any, tie: bool, extra_rows: int = 0, seed: int = 0, model_type: str = "llama", **overrides: Any
) -> Any:
    """A tiny random Llama (or Mistral) on the small tokenizer; ffn_down's rows (80) are not whole 32-value blocks."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    settings = dict(
        vocab_size=len(tokenizer) + extra_rows,
        hidden_size=64,
        intermediate_size=80,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
        rope_theta=50000.0,
        tie_word_embeddings=tie,
    )
    if model_type == "mistral":
        settings["sliding_window"] = None  # MistralConfig's default (4096) is a window llama.cpp cannot apply
    torch.manual_seed(seed)
    config = AutoConfig.for_model(model_type, **{**settings, **overrides})
    return AutoModelForCausalLM.from_config(config).eval()
