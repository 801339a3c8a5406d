"""Resolving model names without the hub: the embedded default, folders, .gguf paths, hub ids offline."""

from __future__ import annotations

import os

import pytest
from helpers import EMBEDDED

from lmtune.config import ModelConfig
from lmtune.errors import ModelError
from lmtune.models import cache_root, load_model, load_tokenizer, resolve


def test_embedded_model_is_cached_under_lmtune_cache(embedded_dir, lmtune_cache):
    assert embedded_dir.parent == lmtune_cache == cache_root()
    assert (embedded_dir / "config.json").is_file()
    assert (embedded_dir / "model.safetensors").is_file()
    assert resolve(EMBEDDED) == embedded_dir  # the second time it is the cached folder


def test_cache_root_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("LMTUNE_CACHE", str(tmp_path / "elsewhere"))
    assert cache_root() == tmp_path / "elsewhere"
    monkeypatch.delenv("LMTUNE_CACHE")
    assert cache_root().parts[-2:] == (".cache", "lmtune")


def test_embedded_tokenizer(tokenizer):
    assert len(tokenizer) == 49152
    assert tokenizer.chat_template
    assert tokenizer.pad_token_id == tokenizer.eos_token_id == tokenizer.convert_tokens_to_ids("<|im_end|>")


def test_local_folder(tiny_llama_dir):
    assert resolve(str(tiny_llama_dir)) == tiny_llama_dir
    model, tokenizer, base = load_model(ModelConfig(name=str(tiny_llama_dir)))
    assert base == str(tiny_llama_dir)
    assert model.config.hidden_size == 32
    # no pad id in the model's config: it is taken from the tokenizer (pad = EOS)
    assert model.config.pad_token_id == tokenizer.pad_token_id == tokenizer.eos_token_id


def test_dtype_is_applied(tiny_llama_dir):
    import torch

    model, _, _ = load_model(ModelConfig(name=str(tiny_llama_dir), dtype="bfloat16"))
    assert next(model.parameters()).dtype == torch.bfloat16


def test_tokenizer_without_pad_gets_eos_as_pad(tmp_path, plain_tokenizer):
    import copy

    tok = copy.deepcopy(plain_tokenizer)
    tok.pad_token = None
    tok.save_pretrained(tmp_path)
    loaded = load_tokenizer(tmp_path)
    assert loaded.pad_token == loaded.eos_token


@pytest.mark.parametrize(
    ("name", "words"),
    [
        ("./no/such/folder", "no such file or folder"),
        ("/no/such/model.gguf", "no such .gguf file"),
        ("a/b/c", "no such file or folder"),
    ],
)
def test_names_that_cannot_resolve(name, words):
    with pytest.raises(ModelError, match=words):
        resolve(name)


def test_folder_without_config(tmp_path):
    with pytest.raises(ModelError, match="no config.json or adapter_config.json"):
        resolve(str(tmp_path))


def test_file_that_is_not_gguf(tmp_path):
    fake = tmp_path / "model.gguf"
    fake.write_bytes(b"NOPE" + bytes(60))
    with pytest.raises(ModelError, match="not a GGUF file"):
        resolve(str(fake))


def test_hub_id_offline_fails_at_once_with_alternatives(monkeypatch):
    assert resolve("nobody-here/no-such-model") == "nobody-here/no-such-model"  # hub ids stay strings
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert os.environ["HF_HUB_OFFLINE"] == "1"
    with pytest.raises(ModelError) as e:
        load_model(ModelConfig(name="nobody-here/no-such-model"))
    message = str(e.value)
    assert "model.name: 'nobody-here/no-such-model'" in message
    assert EMBEDDED in message and "\n" not in message


def test_the_hub_is_switched_off_for_the_tests():
    """conftest forces the offline switches and replaces the hub probe: no test can go online."""
    import lmtune.models

    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
        assert os.environ[name] == "1"
    assert lmtune.models.hub_reachable() is False


def test_hub_id_fails_at_once_when_the_probe_finds_no_hub(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE")  # not skipped by the switch: the (patched) probe answers
    with pytest.raises(ModelError, match="cannot be reached"):
        load_model(ModelConfig(name="nobody-here/no-such-model"))


@pytest.mark.parametrize(
    ("dtype", "trains_base", "fast", "expected"),
    [
        ("auto", False, True, "bfloat16"),  # LoRA-family on bf16 hardware
        ("auto", True, True, "float32"),  # full / freeze keep float32 weights for the optimizer
        ("auto", False, False, "float32"),  # no fast bf16 here: nothing to gain
        ("float16", False, True, "float16"),  # an explicit choice is kept
    ],
)
def test_auto_dtype(monkeypatch, dtype, trains_base, fast, expected):
    import lmtune.models

    monkeypatch.setattr(lmtune.models, "fast_bfloat16", lambda: fast)
    assert lmtune.models.training_dtype(dtype, trains_base_weights=trains_base) == expected


def test_auto_dtype_lora_run_trains_float32_adapters_on_a_bfloat16_base(
    monkeypatch, tmp_path, tiny_llama_dir, task_files
):
    import torch
    from helpers import tiny_run_raw
    from safetensors.torch import load_file

    import lmtune.models
    from lmtune.config import validate_config
    from lmtune.pipeline import finetune

    monkeypatch.setattr(lmtune.models, "fast_bfloat16", lambda: True)
    raw = tiny_run_raw(tiny_llama_dir, *task_files, tmp_path / "run")
    raw["model"]["dtype"] = "auto"
    metrics = finetune(validate_config(raw), echo=lambda *a: None)
    assert metrics["run"]["dtype"] == "bfloat16"
    adapter = load_file(tmp_path / "run" / "adapter_model.safetensors")
    assert adapter and {t.dtype for t in adapter.values()} == {torch.float32}
    assert metrics["finetuned"]["perplexity"] < metrics["base"]["perplexity"]
