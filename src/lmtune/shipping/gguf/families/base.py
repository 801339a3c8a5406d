"""What every dense decoder family shares on its way into a GGUF file: names, hyperparameters, RoPE, tied heads.

A family module subclasses :class:`Family` and says only what differs: llama.cpp's architecture, the activation,
which layouts it can hold, the keys only it has, and how a tensor's values change on the way (the rotary layout of
Llama's Q/K rows, Gemma's norm offset). Tensor names come from the ``gguf`` package's own map of transformers'
names, the one llama.cpp's converter uses.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import gguf
import numpy as np

from lmtune.errors import ExportError

T = gguf.MODEL_TENSOR


@dataclass(frozen=True)
class Tensor:
    """One tensor of the file: its GGUF name and kind, its block, and its float32 values in llama.cpp's layout."""

    name: str
    kind: gguf.MODEL_TENSOR
    layer: int | None
    shape: tuple[int, ...]
    values: Callable[[], np.ndarray]  # computed when written, so peak memory is one tensor, not a model copy


class Family:
    """A dense decoder-only family as llama.cpp runs it."""

    arch: gguf.MODEL_ARCH = gguf.MODEL_ARCH.LLAMA
    activation_key = "hidden_act"
    activation = "silu"
    rope_types: tuple[str, ...] = ("default", "linear")
    biases: tuple[str, ...] = ()  # HF projections that may carry a bias here ("q_proj", ...)
    ties_head = False  # llama.cpp's graph has no separate output matrix (Gemma 2)

    @property
    def arch_name(self) -> str:
        return gguf.MODEL_ARCH_NAMES[self.arch]

    # ------------------------------------------------------------------ checks

    def check(self, config: Any) -> None:
        """Raise :class:`ExportError` (one line) for a layout llama.cpp's graph for this family cannot reproduce."""
        act = getattr(config, self.activation_key, None) or getattr(config, "hidden_act", None)
        if act != self.activation:
            raise ExportError(f"GGUF export: activation '{act}' is not {self.activation}, which llama.cpp's "
                              f"{self.arch_name} graph uses")  # fmt: skip
        if getattr(config, "mlp_bias", False) or (getattr(config, "attention_bias", False) and not self.biases):
            raise ExportError(f"GGUF export: this model has biases that llama.cpp's {self.arch_name} graph has no "
                              "place for")  # fmt: skip
        rope = rope_parameters(config)
        kind = rope.get("rope_type", "default")
        if kind not in self.rope_types:
            raise ExportError(f"GGUF export: RoPE scaling '{kind}' is not written for {config.model_type} "
                              f"(supported: {', '.join(self.rope_types)})")  # fmt: skip
        if rope.get("partial_rotary_factor", 1.0) != 1.0 and not self.partial_rotary:
            raise ExportError(f"GGUF export: partial rotary embeddings are not supported for {config.model_type}")
        self.check_layout(config)

    partial_rotary = False

    def check_layout(self, config: Any) -> None:
        """Family-specific checks (sliding windows, soft-capping, attention scale)."""

    # ------------------------------------------------------------------ hyperparameters

    def hyperparameters(self, writer: gguf.GGUFWriter, config: Any) -> None:
        head_dim = head_dimension(config)
        writer.add_block_count(config.num_hidden_layers)
        writer.add_context_length(config.max_position_embeddings)
        writer.add_embedding_length(config.hidden_size)
        writer.add_feed_forward_length(config.intermediate_size)
        writer.add_head_count(config.num_attention_heads)
        writer.add_head_count_kv(getattr(config, "num_key_value_heads", None) or config.num_attention_heads)
        writer.add_layer_norm_rms_eps(config.rms_norm_eps)
        writer.add_vocab_size(config.vocab_size)
        rope = rope_parameters(config)
        writer.add_rope_freq_base(float(rope.get("rope_theta", 10000.0)))
        writer.add_rope_dimension_count(int(head_dim * rope.get("partial_rotary_factor", 1.0)))
        if head_dim * config.num_attention_heads != config.hidden_size:
            writer.add_key_length(head_dim)  # llama.cpp assumes hidden_size / n_head otherwise
            writer.add_value_length(head_dim)
        if rope.get("rope_type") == "linear":
            writer.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
            writer.add_rope_scaling_factor(float(rope["factor"]))
        self.extra_hyperparameters(writer, config)

    def extra_hyperparameters(self, writer: gguf.GGUFWriter, config: Any) -> None:
        """Keys only this family has."""

    # ------------------------------------------------------------------ tensors

    def tensors(self, model: Any) -> list[Tensor]:
        """Every tensor to write, named and shaped as llama.cpp loads them."""
        config = model.config
        names = gguf.get_tensor_name_map(self.arch, config.num_hidden_layers)
        tied = is_tied(model)
        if self.ties_head and not tied:
            raise ExportError(f"GGUF export: llama.cpp's {self.arch_name} graph reuses the embeddings as output "
                              "layer, but this model has its own")  # fmt: skip
        head = _output_name(model)
        out = []
        for hf_name, tensor in model.state_dict().items():
            if hf_name.endswith("rotary_emb.inv_freq"):  # recomputed from the RoPE keys
                continue
            if hf_name == head and tied:
                continue  # llama.cpp reuses token_embd when output.weight is absent
            found = names.get_type_and_name(hf_name, try_suffixes=(".weight", ".bias"))
            if found is None or (hf_name.endswith(".bias") and hf_name.split(".")[-2] not in self.biases):
                raise ExportError(f"GGUF export: llama.cpp's {self.arch_name} layout has no place for '{hf_name}'")
            kind, name = found
            layer = _layer(hf_name)
            out.append(Tensor(name, kind, layer, tuple(tensor.shape), self._loader(tensor, kind, name, config)))
        return out + list(self.extra_tensors(config))

    def _loader(self, tensor: Any, kind: gguf.MODEL_TENSOR, name: str, config: Any) -> Callable[[], np.ndarray]:
        def load() -> np.ndarray:
            import torch

            values = tensor.detach().to(device="cpu", dtype=torch.float32).numpy()
            return np.ascontiguousarray(self.transform(values, kind, name, config))

        return load

    def transform(self, values: np.ndarray, kind: gguf.MODEL_TENSOR, name: str, config: Any) -> np.ndarray:
        """transformers' values -> llama.cpp's (the default: unchanged)."""
        return values

    def untransform(self, values: np.ndarray, kind: gguf.MODEL_TENSOR, config: Any) -> np.ndarray:
        """llama.cpp's layout of a matrix (or an update to one) -> transformers'; the inverse of ``transform``."""
        return values

    def extra_tensors(self, config: Any) -> Iterator[Tensor]:
        """Tensors llama.cpp needs that transformers computes instead (RoPE frequency factors)."""
        return iter(())

    def reader_config(self, config: Any) -> Any:
        """The config transformers' GGUF reader should build the model from when it reads the file back."""
        return config


# --------------------------------------------------------------------------- shared helpers


def rope_parameters(config: Any, layer_type: str = "full_attention") -> dict[str, Any]:
    """The RoPE settings of ``layer_type`` layers: transformers 5 keeps them per layer type for some families."""
    params = dict(getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None) or {})
    if layer_type in params or "full_attention" in params:
        params = dict(params.get(layer_type) or params.get("full_attention") or {})
    params.setdefault("rope_theta", getattr(config, "rope_theta", 10000.0))
    if "partial_rotary_factor" not in params and getattr(config, "partial_rotary_factor", None) is not None:
        params["partial_rotary_factor"] = config.partial_rotary_factor
    params["rope_type"] = params.get("rope_type", params.get("type")) or "default"
    return params


def head_dimension(config: Any) -> int:
    return getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads


def is_tied(model: Any) -> bool:
    """Whether the output layer is the embedding matrix (then llama.cpp reuses token_embd)."""
    import torch

    embed, head = model.get_input_embeddings(), model.get_output_embeddings()
    if head is None or embed.weight.data_ptr() == head.weight.data_ptr():
        return True
    # A config that says "tied" over two different matrices: keep output.weight, or the file would be wrong.
    return bool(getattr(model.config, "tie_word_embeddings", False) and torch.equal(embed.weight, head.weight))


def layer_types(config: Any) -> list[str]:
    return list(getattr(config, "layer_types", None) or ["full_attention"] * config.num_hidden_layers)


def check_window_pattern(config: Any, every: int) -> None:
    """llama.cpp makes every ``every``-th layer full attention and the others sliding; so must the model."""
    expected = [
        "full_attention" if (i + 1) % every == 0 else "sliding_attention" for i in range(config.num_hidden_layers)
    ]
    if layer_types(config) != expected:
        raise ExportError(f"GGUF export: llama.cpp's {config.model_type} graph slides the window on all but every "
                          f"{every}th layer; this model's layer_types differ")  # fmt: skip


def _output_name(model: Any) -> str | None:
    head = model.get_output_embeddings()
    return next((f"{name}.weight" for name, module in model.named_modules() if module is head), None)


def _layer(hf_name: str) -> int | None:
    parts = hf_name.split(".")
    for i, part in enumerate(parts[:-1]):
        if part == "layers" and parts[i + 1].isdigit():
            return int(parts[i + 1])
    return None
