"""Write a Llama-family model and its tokenizer to a GGUF file, in-process with the ``gguf`` package.

The file holds what llama.cpp's ``convert_hf_to_gguf.py`` would write for the model (architecture
``llama``, Q/K rows permuted into llama.cpp's rotary layout, a ``gpt2`` byte-level BPE vocabulary),
so llama.cpp and Ollama load it, and so does ``transformers``
(``from_pretrained(folder, gguf_file=name)``), whose GGUF loader undoes the permutation.

Tensor types per ``quant``:

* 1-D tensors (the RMS norms) are always F32, as in llama.cpp;
* ``f32`` / ``f16`` / ``bf16``: every 2-D weight in that type;
* ``q8_0``: 2-D weights whose rows split into 32-value blocks are Q8_0, others F16 (as ``convert_hf_to_gguf``);
* ``q4_0``: the same with Q4_0, except ``token_embd`` and ``output``, which stay Q8_0: logits are the most
  sensitive to them (llama-quantize keeps ``output`` at Q6_K, which ``gguf.quants`` cannot write).
"""

from __future__ import annotations

import json
import math
import os
import uuid
from hashlib import sha256
from pathlib import Path
from typing import Any

import gguf
import numpy as np

from lmtune.errors import ExportError

GGUF_QUANTS = ("f32", "f16", "bf16", "q8_0", "q4_0")
SUPPORTED_ARCHITECTURES = ("llama", "mistral")  # model.config.model_type values; both are llama.cpp arch "llama"

_Q = gguf.GGMLQuantizationType
_T = gguf.MODEL_TENSOR
_FILE_TYPES = {
    "f32": gguf.LlamaFileType.ALL_F32,
    "f16": gguf.LlamaFileType.MOSTLY_F16,
    "bf16": gguf.LlamaFileType.MOSTLY_BF16,
    "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0,
    "q4_0": gguf.LlamaFileType.MOSTLY_Q4_0,
}
_WEIGHT_TYPES = {"f32": _Q.F32, "f16": _Q.F16, "bf16": _Q.BF16, "q8_0": _Q.Q8_0, "q4_0": _Q.Q4_0}

# llama.cpp picks its pre-tokenizer (the regex that splits text before BPE) by hashing the ids the HF
# tokenizer gives this text; the hashes and names below are copied from convert_hf_to_gguf.py's
# get_vocab_base_pre.  The name must be one llama.cpp knows: it refuses to load an unknown one ("gpt2" too).
_CHKTXT = (
    "\n \n\n \n\n\n \t \t\t \t\n  \n   \n    \n     \n🚀 (normal) 😶\u200d🌫️ (multiple emojis concatenated) ✅ 🦙🦙 "
    "3 33 333 3333 33333 333333 3333333 33333333 3.3 3..3 3...3 កាន់តែពិសេសអាច😁 ?我想在apple工作1314151天～ "
    "------======= нещо на Български ''''''```````\"\"\"\"......!!!!!!?????? I've been 'told he's there, "
    "'RE you sure? 'M not sure I'll make it, 'D you like some tea? We'Ve a'lL"
)
_PRE_TOKENIZERS = {
    "855059429035d75a914d1eda9f10a876752e281a054a7a3d421ef0533e5b6249": "smollm",  # SmolLM, SmolLM2
    "0ef9807a4087ebef797fc749390439009c3b9eda9ad1a097abbe738f486c01e5": "llama-bpe",  # Llama 3
    "63b97e4253352e6f357cc59ea5b583e3a680eaeaf2632188c2b952de2588485e": "tekken",  # Mistral Nemo
    "3ce83efda5659b07b1ad37ca97ca5797ea4285d9b9ab0dc679e4a720c9da7454": "gpt-2",  # GPT-2
}
_GPT2_PRE_TOKENIZER = {"type": "ByteLevel", "use_regex": True}  # GPT-2's own split: llama.cpp's "gpt-2"


def check_gguf_supported(model_config: Any, tokenizer: Any, quant: str) -> None:
    """Raise :class:`ExportError` (one line) if this model, tokenizer or quant cannot be written as GGUF."""
    _check(model_config, tokenizer, quant)


def _check(config: Any, tokenizer: Any, quant: str) -> tuple[dict[str, Any], str]:
    """(the tokenizer's tokenizer.json, llama.cpp's name for its pre-tokenizer), once everything is checked."""
    if quant not in GGUF_QUANTS:
        raise ExportError(f"GGUF quantisation '{quant}' is not one of: {', '.join(GGUF_QUANTS)}")
    model_type = getattr(config, "model_type", None)
    if model_type not in SUPPORTED_ARCHITECTURES:
        raise ExportError(
            f"GGUF export supports the model types {', '.join(SUPPORTED_ARCHITECTURES)}; this model is '{model_type}'"
        )
    _check_layout(config)
    spec = _tokenizer_spec(tokenizer)
    pre = _pre_tokenizer_name(tokenizer, spec)
    top = max(tokenizer.get_vocab().values())
    if top >= config.vocab_size:
        raise ExportError(
            f"GGUF export: the tokenizer has ids up to {top}, but the model has only {config.vocab_size} embedding rows"
        )
    return spec, pre


def write_gguf(model: Any, tokenizer: Any, path: Path, quant: str = "f32", name: str | None = None) -> None:
    """Write ``model`` (a Llama-family ``PreTrainedModel``) and its fast tokenizer to ``path`` as GGUF.

    ``quant`` is one of :data:`GGUF_QUANTS`; ``name`` becomes ``general.name`` (default: the model's
    folder name). The file appears whole or not at all.
    """
    if hasattr(model, "peft_config"):
        raise ExportError("GGUF export needs a plain model: merge the adapter into its base first")
    config = model.config
    spec, pre = _check(config, tokenizer, quant)
    tensors = _plan_tensors(model, quant)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Same folder, so os.replace is a rename; opened by GGUFWriter with the usual umask permissions.
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    writer = gguf.GGUFWriter(tmp, gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH.LLAMA])
    try:
        _add_hyperparameters(writer, config, quant, name)
        _add_tokenizer(writer, tokenizer, spec, pre, config.vocab_size)
        writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
        for gguf_name, tensor, qtype, _ in tensors:
            shape = tuple(tensor.shape)
            nbytes = math.prod(gguf.quant_shape_to_byte_shape(shape, qtype))
            writer.add_tensor_info(gguf_name, shape, np.dtype(np.float32), nbytes, raw_dtype=qtype)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        # One tensor at a time: peak memory is one converted tensor, not a second copy of the model.
        for _, tensor, qtype, heads in tensors:
            writer.write_tensor_data(_encode(tensor, qtype, heads))
        writer.close()
        os.replace(tmp, path)
    except BaseException:
        writer.close()
        tmp.unlink(missing_ok=True)
        raise


# --------------------------------------------------------------------------- model


def _rope_parameters(config: Any) -> dict[str, Any]:
    # transformers 4.x: rope_theta + rope_scaling (None when default); 5.x: rope_parameters holds both.
    params = dict(getattr(config, "rope_scaling", None) or {})
    params.update(getattr(config, "rope_parameters", None) or {})
    return params


def _rope_theta(config: Any) -> float:
    theta = _rope_parameters(config).get("rope_theta", getattr(config, "rope_theta", None))
    return float(theta if theta is not None else 10000.0)


def _head_dim(config: Any) -> int:
    return getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads


def _check_layout(config: Any) -> None:
    if getattr(config, "attention_bias", False) or getattr(config, "mlp_bias", False):
        raise ExportError("GGUF export: this model has attention or MLP biases, which the llama layout cannot hold")
    if getattr(config, "hidden_act", "silu") != "silu":
        raise ExportError(f"GGUF export: activation '{config.hidden_act}' is not SiLU, the llama layout's only one")
    rope = _rope_parameters(config)
    rope_type = rope.get("rope_type", rope.get("type")) or "default"
    if rope_type != "default":
        raise ExportError(f"GGUF export: RoPE scaling '{rope_type}' is not supported; only unscaled RoPE is written")
    if rope.get("partial_rotary_factor", 1.0) != 1.0:
        raise ExportError("GGUF export: partial rotary embeddings are not supported by the llama layout")
    window = getattr(config, "sliding_window", None)
    if window is not None and window < config.max_position_embeddings:
        raise ExportError(
            f"GGUF export: sliding-window attention ({window} tokens) is not supported by llama.cpp's llama layout"
        )


def _is_tied(model: Any) -> bool:
    import torch

    embed, head = model.get_input_embeddings(), model.get_output_embeddings()
    if head is None:
        return True
    if embed.weight.data_ptr() == head.weight.data_ptr():
        return True
    # A config that says "tied" over two different matrices: keep output.weight, or the file would be wrong.
    return bool(getattr(model.config, "tie_word_embeddings", False) and torch.equal(embed.weight, head.weight))


def _plan_tensors(model: Any, quant: str) -> list[tuple[str, Any, Any, tuple[int, int] | None]]:
    """(gguf name, tensor, ggml type, (n_head, n_head_kv) to permute by, or None) per tensor to write."""
    config = model.config
    n_head = config.num_attention_heads
    n_kv = getattr(config, "num_key_value_heads", None) or n_head
    name_map = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, config.num_hidden_layers)
    tied = _is_tied(model)
    plan = []
    for hf_name, tensor in model.state_dict().items():
        if hf_name.endswith("rotary_emb.inv_freq"):  # recomputed from rope.freq_base
            continue
        found = name_map.get_type_and_name(hf_name, try_suffixes=(".weight", ".bias"))
        if found is None:
            raise ExportError(f"GGUF export: the llama layout has no place for the tensor '{hf_name}'")
        kind, gguf_name = found
        if kind == _T.OUTPUT and tied:
            continue  # llama.cpp reuses token_embd when output.weight is absent
        heads = {_T.ATTN_Q: (n_head, n_head), _T.ATTN_K: (n_head, n_kv)}.get(kind)
        plan.append((gguf_name, tensor, _tensor_type(kind, tuple(tensor.shape), quant), heads))
    return plan


def _tensor_type(kind: Any, shape: tuple[int, ...], quant: str) -> Any:
    if len(shape) < 2:
        return _Q.F32
    qtype = _WEIGHT_TYPES[quant]
    if quant == "q4_0" and kind in (_T.TOKEN_EMBD, _T.OUTPUT):
        qtype = _Q.Q8_0
    block_size, _ = gguf.GGML_QUANT_SIZES[qtype]
    return qtype if shape[-1] % block_size == 0 else _Q.F16


def _permute(weights: np.ndarray, n_head: int, n_head_kv: int) -> np.ndarray:
    # convert_hf_to_gguf's LlamaModel.permute: HF rotates the two halves of each head, llama.cpp
    # rotates adjacent pairs, so each head's rows are interleaved.
    if n_head != n_head_kv:
        n_head = n_head_kv
    return (
        weights.reshape(n_head, 2, weights.shape[0] // n_head // 2, *weights.shape[1:])
        .swapaxes(1, 2)
        .reshape(weights.shape)
    )


def _encode(tensor: Any, qtype: Any, heads: tuple[int, int] | None) -> np.ndarray:
    import torch

    data = tensor.detach().to(device="cpu", dtype=torch.float32).numpy()
    if heads is not None:
        data = _permute(data, *heads)
    return np.ascontiguousarray(gguf.quants.quantize(np.ascontiguousarray(data), qtype))


def _add_hyperparameters(writer: gguf.GGUFWriter, config: Any, quant: str, name: str | None) -> None:
    head_dim = _head_dim(config)
    writer.add_type(gguf.GGUFType.MODEL)
    # Not the bare model_type: transformers reads general.name == "mistral" as a model type it cannot load.
    writer.add_name(name or Path(getattr(config, "_name_or_path", "") or "").name or "model")
    writer.add_block_count(config.num_hidden_layers)
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(getattr(config, "num_key_value_heads", None) or config.num_attention_heads)
    writer.add_rope_freq_base(_rope_theta(config))
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_file_type(_FILE_TYPES[quant])
    writer.add_vocab_size(config.vocab_size)
    writer.add_rope_dimension_count(head_dim)
    if head_dim * config.num_attention_heads != config.hidden_size:
        writer.add_key_length(head_dim)  # llama.cpp assumes hidden_size / n_head otherwise
        writer.add_value_length(head_dim)


# --------------------------------------------------------------------------- tokenizer


def _has_byte_level(node: Any) -> bool:
    if not isinstance(node, dict):
        return False
    return node.get("type") == "ByteLevel" or any(_has_byte_level(n) for n in node.get("pretokenizers") or ())


def _tokenizer_spec(tokenizer: Any) -> dict[str, Any]:
    """The tokenizer's ``tokenizer.json`` as a dict; raises unless it is a byte-level BPE."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise ExportError(
            f"GGUF export needs a fast (tokenizers-backed) byte-level BPE tokenizer; got {type(tokenizer).__name__}"
        )
    spec = json.loads(backend.to_str())
    model = spec.get("model") or {}
    if model.get("type") != "BPE" or model.get("byte_fallback") or not _has_byte_level(spec.get("pre_tokenizer")):
        kind = "sentencepiece-style BPE" if model.get("byte_fallback") else model.get("type")
        raise ExportError(f"GGUF export supports byte-level BPE (GPT-2 style) tokenizers only; this one is {kind}")
    return spec


def _pre_tokenizer_name(tokenizer: Any, spec: dict[str, Any]) -> str:
    digest = sha256(str(tokenizer.encode(_CHKTXT)).encode()).hexdigest()
    if digest in _PRE_TOKENIZERS:
        return _PRE_TOKENIZERS[digest]
    pre = spec.get("pre_tokenizer") or {}
    if all(pre.get(k) == v for k, v in _GPT2_PRE_TOKENIZER.items()):
        return "gpt-2"
    raise ExportError(
        "GGUF export: the tokenizer splits text in a way llama.cpp does not recognise "
        f"(known: {', '.join(sorted(set(_PRE_TOKENIZERS.values())))})"
    )


def _vocab(tokenizer: Any, vocab_size: int) -> tuple[list[str], list[int]]:
    by_id = {i: token for token, i in tokenizer.get_vocab().items()}
    added = tokenizer.added_tokens_decoder
    tokens, types = [], []
    for i in range(vocab_size):
        if i not in by_id:  # embedding rows past the tokenizer (padded vocabularies)
            tokens.append(f"[PAD{i}]")
            types.append(gguf.TokenType.UNUSED)
            continue
        tokens.append(by_id[i])
        if i not in added:
            types.append(gguf.TokenType.NORMAL)
        else:  # special ones (chat markers, <|endoftext|>) are never printed by llama.cpp
            types.append(gguf.TokenType.CONTROL if added[i].special else gguf.TokenType.USER_DEFINED)
    return tokens, types


def _adds(tokenizer: Any, token_id: int | None, first: bool) -> bool:
    if token_id is None:
        return False
    with_special = tokenizer.encode("a", add_special_tokens=True)
    without = tokenizer.encode("a", add_special_tokens=False)
    return len(with_special) > len(without) and with_special[0 if first else -1] == token_id


def _add_tokenizer(writer: gguf.GGUFWriter, tokenizer: Any, spec: dict[str, Any], pre: str, vocab_size: int) -> None:
    tokens, types = _vocab(tokenizer, vocab_size)
    merges = [m if isinstance(m, str) else " ".join(m) for m in spec["model"].get("merges") or ()]
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(pre)
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(merges)
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    for add, token_id in (
        (writer.add_bos_token_id, bos),
        (writer.add_eos_token_id, eos),
        (writer.add_unk_token_id, tokenizer.unk_token_id),
        (writer.add_pad_token_id, tokenizer.pad_token_id),
    ):
        if token_id is not None:
            add(token_id)
    writer.add_add_bos_token(_adds(tokenizer, bos, first=True))
    writer.add_add_eos_token(_adds(tokenizer, eos, first=False))
    writer.add_add_space_prefix(False)
    template = getattr(tokenizer, "chat_template", None)
    if isinstance(template, dict):  # several named templates: llama.cpp keeps "default" as the main one
        template = [{"name": key, "template": value} for key, value in template.items()]
    if template:
        writer.add_chat_template(template)
