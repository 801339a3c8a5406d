"""The ``privacy`` section: differentially private training (DP-SGD with Opacus; ``lmtune.privacy``)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from lmtune.config.sections import _Section

PRIVATE_METHODS = ("lora", "qlora")
"""Methods whose trainable layers are plain linear adapters: Opacus computes their per-example gradients
exactly. DoRA's magnitude layer takes the adapters as call arguments, which Opacus's functorch fallback
cannot replay per example; AdaLoRA's SVD triplets, IA3's scaling vectors and the prompt encoders have no
per-example rule either; full and freeze would need a per-example copy of every trained weight."""


class PrivacyConfig(_Section):
    """DP-SGD: each example's gradient is clipped to ``max_grad_norm``, Gaussian noise is added to their sum.

    The guarantee is (epsilon, delta)-differential privacy for one training example (one row of the
    training data) over the whole run, against anyone who sees the trained weights.
    """

    target_epsilon: float | None = Field(None, gt=0)
    """The epsilon to spend over the run; the noise multiplier is chosen to reach it (give this or
    ``noise_multiplier``)."""
    noise_multiplier: float | None = Field(None, ge=0)
    """Standard deviation of the noise, in units of ``max_grad_norm`` (give this or ``target_epsilon``)."""
    delta: float | None = Field(None, gt=0, lt=1)
    """Probability the epsilon bound may fail. Default: 1/N of the training rows, rounded down to a power of ten."""
    max_grad_norm: float = Field(1.0, gt=0)
    """Per-example clipping bound (L2 norm over all trainable weights)."""
    accountant: Literal["prv", "rdp"] = "prv"
    """How epsilon is computed: ``prv`` (privacy random variables; tight) or ``rdp`` (Rényi DP; looser)."""
    poisson_sampling: bool = True
    """Draw each batch by including every row with probability batch/N (what the accounting assumes);
    false uses fixed-size shuffled batches, for which the reported epsilon is only an approximation."""

    @model_validator(mode="after")
    def _one_noise_setting(self) -> PrivacyConfig:
        if (self.target_epsilon is None) == (self.noise_multiplier is None):
            raise ValueError("give exactly one of target_epsilon and noise_multiplier")
        return self


def privacy_problem(cfg: Any) -> str | None:
    """Why ``cfg`` cannot train privately (None when it can); each reason names the key to change."""
    t = cfg.training
    if cfg.objective != "sft":
        return f"privacy: objective {cfg.objective} does not use it; private training is for objective sft (one example, one answer)"  # noqa: E501
    if cfg.method not in PRIVATE_METHODS:
        return f"method: {cfg.method}: private training uses {', '.join(PRIVATE_METHODS)} (per-example gradients)"
    if t.packing:
        return "training.packing: packing mixes examples in one row, so per-row gradients would not be per example; set training.packing: false"  # noqa: E501
    if t.per_device_train_batch_size == "auto":
        return "training.per_device_train_batch_size: give a number with privacy (the expected batch of the sampler)"
    if getattr(t, "gradient_checkpointing", False):
        return "training.gradient_checkpointing: the recomputed forward would record each example twice; turn it off"
    if cfg.continual.ewc_weight:
        return "continual.ewc_weight: the EWC penalty is not a per-example loss; set it to 0 with privacy"
    if cfg.stages:
        return "stages: private training runs one stage; train the stages as separate runs"
    return None
