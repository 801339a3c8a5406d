"""GGUF export refuses, with one line and before writing anything, what llama.cpp could not run as trained."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from gguf_cases import small_llama

from lmtune.errors import ExportError
from lmtune.shipping.gguf import GGUF_QUANTS, SUPPORTED_ARCHITECTURES, check_gguf_supported, write_gguf


def test_unknown_quant_is_refused_and_nothing_written(bpe_tokenizer: Any, tmp_path: Path) -> None:
    with pytest.raises(ExportError) as err:
        write_gguf(small_llama(bpe_tokenizer, tie=True), bpe_tokenizer, tmp_path / "out" / "m.gguf", quant="q3_k_s")
    assert all(q in str(err.value) for q in GGUF_QUANTS) and "\n" not in str(err.value)
    assert not (tmp_path / "out").exists()


def test_unsupported_architecture_is_refused(tiny_gpt2_dir: Path, plain_tokenizer: Any, tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_gpt2_dir)
    with pytest.raises(ExportError) as err:
        write_gguf(model, plain_tokenizer, tmp_path / "m.gguf")
    assert all(arch in str(err.value) for arch in SUPPORTED_ARCHITECTURES) and "gpt2" in str(err.value)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("overrides", "words"),
    [
        ({"attention_bias": True}, "biases"),
        ({"mlp_bias": True}, "biases"),
        ({"hidden_act": "gelu"}, "gelu"),
        ({"rope_scaling": {"rope_type": "yarn", "factor": 2.0}}, "yarn"),
        ({"vocab_size": 100}, "embedding rows"),
    ],
)
def test_layouts_llama_cpp_cannot_hold_are_refused(bpe_tokenizer: Any, overrides: dict, words: str) -> None:
    from transformers import LlamaConfig

    config = LlamaConfig(**{"vocab_size": len(bpe_tokenizer), "hidden_size": 64, "num_attention_heads": 4, **overrides})
    with pytest.raises(ExportError, match=words):
        check_gguf_supported(config, bpe_tokenizer, "f32")


def test_sliding_window_mistral_is_refused_and_plain_mistral_is_not(bpe_tokenizer: Any) -> None:
    from transformers import MistralConfig

    size = {"vocab_size": len(bpe_tokenizer), "max_position_embeddings": 4096}
    with pytest.raises(ExportError, match="sliding-window"):
        check_gguf_supported(MistralConfig(sliding_window=1024, **size), bpe_tokenizer, "q8_0")
    check_gguf_supported(MistralConfig(sliding_window=None, **size), bpe_tokenizer, "q8_0")


def test_non_byte_level_tokenizer_is_refused() -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, PreTrainedTokenizerFast

    backend = Tokenizer(models.WordLevel({"[UNK]": 0, "hello": 1}, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="[UNK]")
    with pytest.raises(ExportError, match="byte-level BPE"):
        check_gguf_supported(LlamaConfig(vocab_size=8), tokenizer, "f32")


def test_failed_write_leaves_the_old_file_and_no_temp_file(
    bpe_tokenizer: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import lmtune.shipping.gguf as module

    path = tmp_path / "m.gguf"
    path.write_bytes(b"previous export")
    real, calls = module.encode, []

    def failing(*args: Any) -> Any:
        calls.append(1)
        if len(calls) == 3:
            raise OSError("disk full")
        return real(*args)

    monkeypatch.setattr(module, "encode", failing)
    with pytest.raises(OSError, match="disk full"):
        write_gguf(small_llama(bpe_tokenizer, tie=True), bpe_tokenizer, path)
    assert path.read_bytes() == b"previous export"
    assert sorted(os.listdir(tmp_path)) == ["m.gguf"]


@pytest.mark.parametrize(
    ("settings", "words"),
    [
        ({"use_dora": True}, "DoRA"),
        ({"modules_to_save": ["lm_head"]}, "whole modules"),
        ({"target_modules": ["q_proj", "lm_head"]}, "lm_head"),
    ],
)
def test_adapters_llama_cpp_cannot_apply_are_refused(bpe_tokenizer: Any, settings: dict, words: str) -> None:
    from peft import LoraConfig, get_peft_model

    from lmtune.shipping.gguf.lora import check_lora_supported

    model = get_peft_model(
        small_llama(bpe_tokenizer, tie=False), LoraConfig(**{"target_modules": ["q_proj"], **settings})
    )
    with pytest.raises(ExportError, match=words) as err:
        check_lora_supported(model)
    assert "\n" not in str(err.value)
