"""GGUF export: files that transformers loads back to the same logits and tokenizer, and whose tokenizer
metadata is what llama.cpp's own converter wrote into the embedded SmolLM2 GGUF.

Loading a GGUF with a 49k-token vocabulary takes transformers seconds (it parses every token twice), so
only the f32 round trip uses the real tokenizer; the quantisation and tied-embedding round trips use a
~300-token byte-level BPE trained here, whose files load in a fraction of a second.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from gguf_cases import CASES, small_llama, tiny_model, tokenizer_for
from gguf_cases import TEXTS as FAMILY_TEXTS

from lmtune.shipping.gguf import reader_config, write_gguf
from lmtune.shipping.gguf.families import FAMILIES

TEXTS = ["Hello world!", "The answer is 2024, not 42.", "  spaces\tand\nnewlines  ", "naïve café 😀 <|im_end|>"]
CHAT = [
    {"role": "user", "content": "What is 12 plus 30?"},
    {"role": "assistant", "content": "12 plus 30 is 42."},
]
CHATML = (
    "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
TOKENIZER_KEYS = [
    "tokenizer.ggml.model",
    "tokenizer.ggml.pre",
    "tokenizer.ggml.tokens",
    "tokenizer.ggml.token_type",
    "tokenizer.ggml.merges",
    "tokenizer.ggml.bos_token_id",
    "tokenizer.ggml.eos_token_id",
    "tokenizer.ggml.unknown_token_id",
    "tokenizer.ggml.padding_token_id",
    "tokenizer.ggml.add_bos_token",
    "tokenizer.ggml.add_space_prefix",
    "tokenizer.chat_template",
]


# --------------------------------------------------------------------------- helpers


def fields(path: Path) -> dict[str, Any]:
    """The file's metadata, read the way transformers reads it (10x faster than GGUFReader on a 49k vocabulary)."""
    from transformers.integrations.gguf.reader import read_gguf_metadata

    return read_gguf_metadata(str(path), ("tokenizer.ggml.tokens", "tokenizer.ggml.merges"))[0]


def tensor_types(path: Path) -> dict[str, str]:
    from gguf import GGMLQuantizationType
    from transformers.integrations.gguf.reader import GgufHeader

    return {name: GGMLQuantizationType(kind).name for name, kind in GgufHeader.from_file(str(path)).ggml_types.items()}


def load(path: Path) -> Any:
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32).eval()


def sequences(tokenizer: Any) -> list[list[int]]:
    chat = tokenizer.apply_chat_template(CHAT, tokenize=False)
    return [tokenizer.encode(text) for text in [*TEXTS, chat]]


@torch.no_grad()
def logits(model: Any, seqs: list[list[int]]) -> list[torch.Tensor]:
    return [model(torch.tensor([ids])).logits[0] for ids in seqs]


def max_delta(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    return max((x - y).abs().max().item() for x, y in zip(a, b, strict=True))


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def tiny_gguf(tiny_llama_dir: Path, tokenizer: Any, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    """(f32 GGUF of the tiny random Llama with the real SmolLM2 tokenizer, the model it was written from)."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir, dtype=torch.float32).eval()
    path = tmp_path_factory.mktemp("gguf") / "tiny.gguf"
    write_gguf(model, tokenizer, path, name="tiny-llama")
    return path, model


# --------------------------------------------------------------------------- round trips


def test_llama_f32_round_trip_undoes_the_rotary_interleave_exactly(bpe_tokenizer: Any, tmp_path: Path) -> None:
    model = small_llama(bpe_tokenizer, tie=False)
    path = tmp_path / "m.gguf"
    write_gguf(model, bpe_tokenizer, path)
    loaded = load(path)
    seqs = sequences(bpe_tokenizer)
    assert max_delta(logits(model, seqs), logits(loaded, seqs)) <= 1e-4
    config = loaded.config
    assert (config.num_attention_heads, config.num_key_value_heads, config.head_dim) == (4, 2, 16)
    assert config.rope_parameters["rope_theta"] == 50000.0 and config.tie_word_embeddings is False
    for name, weight in model.state_dict().items():  # the Q/K permutation is undone exactly
        assert torch.equal(loaded.state_dict()[name], weight), name


@pytest.mark.parametrize("family", sorted(CASES))
def test_every_family_reads_back_into_transformers_with_the_same_logits(family: str, tmp_path: Path) -> None:
    """transformers' own GGUF reader (with the model's config) gets every weight back as it was written."""
    from transformers import AutoModelForCausalLM

    case = CASES[family]
    tokenizer = tokenizer_for(case, tmp_path / "tokenizer")
    model = tiny_model(case, tokenizer)
    path = tmp_path / "m.gguf"
    write_gguf(model, tokenizer, path)
    config = reader_config(model.config)
    loaded = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, config=config).eval()
    seqs = [tokenizer.encode(text) for text in FAMILY_TEXTS]
    assert max_delta(logits(model, seqs), logits(loaded, seqs)) <= 1e-5
    assert fields(path)["general.architecture"] == FAMILIES[family].arch_name


def test_f32_metadata_and_tensors(tiny_gguf: tuple[Path, Any]) -> None:
    import gguf

    path, model = tiny_gguf
    meta = fields(path)
    expected = {
        "general.architecture": "llama",
        "general.name": "tiny-llama",
        "general.file_type": int(gguf.LlamaFileType.ALL_F32),
        "general.quantization_version": gguf.GGML_QUANT_VERSION,
        "llama.context_length": 512,
        "llama.embedding_length": 32,
        "llama.block_count": 2,
        "llama.feed_forward_length": 64,
        "llama.attention.head_count": 4,
        "llama.attention.head_count_kv": 2,
        "llama.rope.dimension_count": 8,
        "llama.rope.freq_base": 10000.0,
        "llama.vocab_size": model.config.vocab_size,
    }
    assert {key: meta.get(key) for key in expected} == expected
    assert meta["llama.attention.layer_norm_rms_epsilon"] == pytest.approx(model.config.rms_norm_eps)
    per_block = ["attn_norm", "attn_q", "attn_k", "attn_v", "attn_output", "ffn_norm", "ffn_gate", "ffn_up", "ffn_down"]
    names = {"token_embd.weight", "output_norm.weight", "output.weight"}
    names |= {f"blk.{i}.{t}.weight" for i in range(2) for t in per_block}
    types = tensor_types(path)
    assert set(types) == names and set(types.values()) == {"F32"}
    assert not list(path.parent.glob(".*.tmp"))


def test_tokenizer_round_trip(tiny_gguf: tuple[Path, Any], tokenizer: Any) -> None:
    import json

    from transformers import AutoTokenizer

    path, _ = tiny_gguf
    loaded = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    assert loaded.get_vocab() == tokenizer.get_vocab()
    merges = [json.loads(t.backend_tokenizer.to_str())["model"]["merges"] for t in (loaded, tokenizer)]
    assert merges[0] == merges[1] and len(merges[0]) > 40_000
    for attr in ("bos_token_id", "eos_token_id", "pad_token_id", "unk_token_id", "chat_template"):
        assert getattr(loaded, attr) == getattr(tokenizer, attr), attr
    chat = tokenizer.apply_chat_template(CHAT, tokenize=False, add_generation_prompt=True)
    assert chat.count("<|im_start|>") == 4  # system prompt, user, assistant, generation prompt
    for text in [*TEXTS, chat]:
        assert loaded.encode(text) == tokenizer.encode(text), text
    assert loaded.encode(chat)[0] == tokenizer.convert_tokens_to_ids("<|im_start|>")


def test_tokenizer_metadata_is_what_llama_cpp_wrote(tiny_gguf: tuple[Path, Any]) -> None:
    """The embedded SmolLM2 GGUF was made by convert_hf_to_gguf.py from the same tokenizer."""
    from lmtune.models import embedded_gguf

    ours, reference = fields(tiny_gguf[0]), fields(embedded_gguf())
    assert reference["tokenizer.ggml.pre"] == "smollm"
    for key in TOKENIZER_KEYS:
        assert ours[key] == reference[key], key


def test_tied_embeddings_write_no_output_tensor(bpe_tokenizer: Any, tmp_path: Path) -> None:
    import gguf

    model = small_llama(bpe_tokenizer, tie=True, extra_rows=3)
    assert model.lm_head.weight is model.model.embed_tokens.weight
    path = tmp_path / "tied.gguf"
    write_gguf(model, bpe_tokenizer, path)
    names = {t.name for t in gguf.GGUFReader(path).tensors}
    assert "output.weight" not in names and "token_embd.weight" in names and len(names) == 2 * 9 + 2
    meta = fields(path)
    assert meta["tokenizer.ggml.pre"] == "gpt-2" and meta["llama.rope.freq_base"] == 50000.0
    # rows past the tokenizer are padded like convert_hf_to_gguf does
    n = len(bpe_tokenizer)
    assert len(meta["tokenizer.ggml.tokens"]) == n + 3
    assert meta["tokenizer.ggml.tokens"][n:] == [f"[PAD{i}]" for i in range(n, n + 3)]
    assert meta["tokenizer.ggml.token_type"][n:] == [gguf.TokenType.UNUSED] * 3
    assert meta["tokenizer.ggml.token_type"][:3] == [gguf.TokenType.CONTROL] * 3  # the special tokens
    assert "tokenizer.ggml.bos_token_id" not in meta and meta["tokenizer.ggml.add_bos_token"] is False
    loaded = load(path)
    assert loaded.config.tie_word_embeddings is True
    seqs = sequences(bpe_tokenizer)
    assert max_delta(logits(model, seqs), logits(loaded, seqs)) <= 1e-4


# measured here (seeds 0-2), mean |Δlogit| / mean |logit|: f16 0.0004, bf16 0.003, q8_0 0.010, q4_0 0.094-0.100
QUANTS = {
    # quant: (file type, type of 2-D weights, of token_embd, of output, of ffn_down (rows of 80), mean-Δ bound);
    # q4_0's output is Q6_K in llama-quantize, Q8_0 when (as here, 64 wide) its rows are not 256-value blocks
    "f16": ("MOSTLY_F16", "F16", "F16", "F16", "F16", 0.003),
    "bf16": ("MOSTLY_BF16", "BF16", "BF16", "BF16", "BF16", 0.01),
    "q8_0": ("MOSTLY_Q8_0", "Q8_0", "Q8_0", "Q8_0", "F16", 0.03),
    "q4_0": ("MOSTLY_Q4_0", "Q4_0", "Q4_0", "Q8_0", "F16", 0.2),
}


@pytest.mark.parametrize("quant", QUANTS)
def test_quantised_round_trip(quant: str, bpe_tokenizer: Any, tmp_path: Path) -> None:
    import gguf

    file_type, weights, embd, output, down, bound = QUANTS[quant]
    model = small_llama(bpe_tokenizer, tie=False)
    write_gguf(model, bpe_tokenizer, tmp_path / "f32.gguf")
    path = tmp_path / f"{quant}.gguf"
    write_gguf(model, bpe_tokenizer, path, quant=quant)
    assert path.stat().st_size < (tmp_path / "f32.gguf").stat().st_size
    assert fields(path)["general.file_type"] == int(gguf.LlamaFileType[file_type])
    for name, kind in tensor_types(path).items():
        if name.endswith("norm.weight"):
            assert kind == "F32", name
        elif name in ("token_embd.weight", "output.weight"):
            assert kind == (embd if name == "token_embd.weight" else output), name
        else:
            assert kind == (down if ".ffn_down." in name else weights), name
    seqs = sequences(bpe_tokenizer)
    ref, out = logits(model, seqs), logits(load(path), seqs)
    mean_delta = torch.cat([(a - b).abs().flatten() for a, b in zip(ref, out, strict=True)]).mean().item()
    scale = torch.cat([a.abs().flatten() for a in ref]).mean().item()
    assert mean_delta / scale <= bound


# measured here on an 8-layer, 256-wide random Llama: mean |Δlogit| / mean |logit| q4_k_m 0.20, q5_k_m 0.11, q6_k 0.056
K_BOUNDS = {"q4_k_m": 0.3, "q5_k_m": 0.16, "q6_k": 0.08}


@pytest.mark.parametrize("quant", K_BOUNDS)
def test_k_quant_mixes_give_each_tensor_llama_quantize_s_type_and_read_back(
    quant: str, bpe_tokenizer: Any, tmp_path: Path
) -> None:
    """256-wide rows, so the k-quant blocks apply; 8 layers, so use_more_bits picks some and not others."""
    import gguf

    from lmtune.shipping.gguf.kmix import mix_type

    model = small_llama(bpe_tokenizer, tie=False, hidden_size=256, intermediate_size=512, num_hidden_layers=8)
    path = tmp_path / f"{quant}.gguf"
    write_gguf(model, bpe_tokenizer, path, quant=quant)
    types = tensor_types(path)
    reader = gguf.GGUFReader(path)
    for tensor in reader.tensors:
        kind, _ = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, 8).get_type_and_name(
            tensor.name.removesuffix(".weight"), try_suffixes=(".weight",)
        ) or (None, None)
        layer = int(tensor.name.split(".")[1]) if tensor.name.startswith("blk.") else None
        shape = tuple(int(n) for n in reversed(tensor.shape))
        assert types[tensor.name] == mix_type(quant, kind, shape, layer, 8).name, tensor.name
    base = quant.upper().removesuffix("_M")  # Q4_K, Q5_K, Q6_K
    assert types["blk.0.attn_v.weight"] == types["blk.0.ffn_down.weight"] == "Q6_K"  # first eighth: more bits
    assert types["blk.1.attn_v.weight"] == types["blk.1.ffn_down.weight"] == base
    assert types["output.weight"] == "Q6_K" and types["blk.3.attn_q.weight"] == base
    seqs = sequences(bpe_tokenizer)
    ref, out = logits(model, seqs), logits(load(path), seqs)
    mean_delta = torch.cat([(a - b).abs().flatten() for a, b in zip(ref, out, strict=True)]).mean().item()
    scale = torch.cat([a.abs().flatten() for a in ref]).mean().item()
    assert mean_delta / scale <= K_BOUNDS[quant]


# --------------------------------------------------------------------------- the real model


@pytest.mark.slow
def test_smollm2_f32_round_trip(embedded_dir: Path, tokenizer: Any, tmp_path: Path) -> None:
    import json

    from transformers import AutoModelForCausalLM, AutoTokenizer

    from lmtune.models import embedded_gguf

    model = AutoModelForCausalLM.from_pretrained(embedded_dir, dtype=torch.float32).eval()
    path = tmp_path / "smollm2.gguf"
    write_gguf(model, tokenizer, path)
    assert "output.weight" not in tensor_types(path)  # SmolLM2 ties its embeddings
    prompt = tokenizer.apply_chat_template(CHAT[:1], tokenize=False, add_generation_prompt=True)
    seqs = [tokenizer.encode(prompt)]
    assert max_delta(logits(model, seqs), logits(load(path), seqs)) <= 1e-4

    ours, reference = fields(path), fields(embedded_gguf())
    for key in TOKENIZER_KEYS:
        assert ours[key] == reference[key], key
    loaded = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    assert loaded.get_vocab() == tokenizer.get_vocab()
    merges = [json.loads(t.backend_tokenizer.to_str())["model"]["merges"] for t in (loaded, tokenizer)]
    assert merges[0] == merges[1]
    for attr in ("bos_token_id", "eos_token_id", "pad_token_id", "unk_token_id", "chat_template"):
        assert getattr(loaded, attr) == getattr(tokenizer, attr), attr
    assert loaded.encode(prompt) == seqs[0]
