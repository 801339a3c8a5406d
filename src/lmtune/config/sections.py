"""Sections of the run config that say what is trained: the model and each method's settings."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

EMBEDDED_MODEL = "smollm2-135m-instruct"
METRICS = ("perplexity", "bleu", "rouge", "chrf", "exact_match", "token_f1", "accuracy", "macro_f1")
"""Every metric ``eval.metrics`` may name; accuracy / macro-F1 are reported only for label-like answers."""
DATA_FORMATS = (
    *("auto", "text", "prompt_completion", "input_output", "alpaca", "messages", "sharegpt", "cot"),
    *("preference", "hh_rlhf", "kto", "prompt_only"),  # read by lmtune.data.preference
)
METHOD_NAMES = (
    *("full", "freeze", "lora", "dora", "qlora", "adalora", "ia3"),
    *("prompt_tuning", "p_tuning", "prefix_tuning", "p_tuning_v2"),
)
"""Every ``method:`` name; ``lmtune.methods.METHODS`` maps each to what it does (tests keep the two equal)."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ModelConfig(_Section):
    """Which foundation model to start from."""

    name: str = EMBEDDED_MODEL
    """Hub id (e.g. ``gpt2``), a local Hugging Face folder, a ``.gguf`` file, or the embedded default."""
    revision: str | None = None
    """Hub revision (branch, tag or commit) for hub ids."""
    trust_remote_code: bool = False
    """Run modelling code shipped with a hub model. Off unless you trust its authors (a warning says when on)."""
    allow_pickle: bool = False
    """Load pickle-based weights (``.bin`` / ``.pt``), which can run code when unpickled. Off: safetensors only."""
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    """Weights' dtype. ``auto``: bfloat16 for methods that freeze the base (LoRA family, IA3, prompts) on
    hardware with fast bfloat16 matmuls (CUDA with bf16, CPUs with AVX512-BF16 / AMX), else float32.
    Trainable adapter weights stay float32 (PEFT's default); full / freeze train float32 weights.
    Mixed precision is ``training.bf16`` / ``fp16``."""
    attn_implementation: str = "auto"
    """Attention kernel (``eager``, ``sdpa``, ``flash_attention_2``, ``flex_attention``, ...). ``auto``: eager
    when training on a CPU and no training example is longer than 256 tokens (faster there on short rows),
    else the library's default (SDPA). See ``lmtune.speed.attention``."""


class LoraConfig(_Section):
    """LoRA settings (PEFT ``LoraConfig``), used by ``lora``, ``dora`` and ``qlora``."""

    r: int = Field(16, gt=0)
    alpha: float = Field(32, gt=0)
    dropout: float = Field(0.05, ge=0, lt=1)
    target_modules: list[str] | Literal["all-linear"] | None = "all-linear"
    """Module names to adapt; ``all-linear`` adapts every linear layer but the output head; null
    takes PEFT's default for the architecture (e.g. q_proj/v_proj for Llama)."""
    bias: Literal["none", "all", "lora_only"] = "none"


class FreezeConfig(_Section):
    """``method: freeze``: train only the last blocks and/or named modules; the rest stays frozen."""

    last_n_layers: int = Field(2, ge=0)
    """How many of the last transformer blocks are trained."""
    modules: list[str] = Field(default_factory=list)
    """Also train parameters whose name contains one of these (e.g. ``norm``, ``lm_head``)."""


class AdaLoraConfig(_Section):
    """``method: adalora``: LoRA whose rank budget is re-allocated during training (PEFT ``AdaLoraConfig``).

    The total number of steps is wired in from the data and ``training`` section.
    """

    init_r: int = Field(12, gt=0)
    target_r: int = Field(8, gt=0)
    tinit: int | float = Field(0.1, ge=0)
    """Warm-up before pruning: steps, or a fraction of the total below 1."""
    tfinal: int | float = Field(0.2, ge=0)
    """Final fine-tuning steps with the budget fixed: steps, or a fraction below 1."""
    deltaT: int = Field(1, gt=0)  # noqa: N815 - PEFT's name
    """Steps between two budget allocations."""
    beta1: float = Field(0.85, gt=0, lt=1)
    beta2: float = Field(0.85, gt=0, lt=1)
    orth_reg_weight: float = Field(0.5, ge=0)
    alpha: float = Field(32, gt=0)
    dropout: float = Field(0.05, ge=0, lt=1)
    target_modules: list[str] | Literal["all-linear"] | None = "all-linear"


class IA3Config(_Section):
    """``method: ia3``: learned rescaling vectors (PEFT ``IA3Config``); null takes PEFT's defaults."""

    target_modules: list[str] | None = None
    feedforward_modules: list[str] | None = None


class PromptTuningConfig(_Section):
    """``method: prompt_tuning``: soft prompt of virtual token embeddings (PEFT ``PromptTuningConfig``)."""

    num_virtual_tokens: int = Field(20, gt=0)
    init_text: str | None = "Write the answer to the task below."
    """Initialise the soft prompt from this text's token embeddings; null starts from random ones."""


class PTuningConfig(_Section):
    """``method: p_tuning``: virtual tokens produced by a prompt encoder (PEFT ``PromptEncoderConfig``)."""

    num_virtual_tokens: int = Field(20, gt=0)
    encoder_reparameterization_type: Literal["MLP", "LSTM"] = "MLP"
    encoder_hidden_size: int = Field(128, gt=0)


class PrefixTuningConfig(_Section):
    """``method: prefix_tuning`` / ``p_tuning_v2``: trained key/value prefixes on every layer."""

    num_virtual_tokens: int = Field(20, gt=0)
    prefix_projection: bool = True
    """Reparameterise the prefixes through an MLP (Li & Liang 2021). Off, 30 steps of the demo at lr 1e-2
    made held-out perplexity worse (7.9 -> 15.3); on, at lr 3e-3, better (7.9 -> 1.37)."""
    encoder_hidden_size: int = Field(128, gt=0)
