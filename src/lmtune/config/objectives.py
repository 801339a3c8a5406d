"""``objective:`` and its sections: what the model learns from (answers, preference pairs, rewards).

Each section holds the options of the TRL trainer that implements the objective, under TRL's own
names, with the defaults of the objective's paper:

==========  ====================================  =============================================
objective   trainer (TRL 1.x)                     paper defaults
==========  ====================================  =============================================
``sft``     transformers ``Trainer`` (lmtune's)    supervised answers (the default)
``dpo``     ``DPOTrainer``                         beta 0.1, sigmoid loss (Rafailov et al. 2023)
``kto``     ``KTOTrainer``                         beta 0.1, weights 1.0 / 1.0 (Ethayarajh et al. 2024)
``orpo``    ``experimental.orpo.ORPOTrainer``      beta (lambda) 0.1 (Hong et al. 2024)
``simpo``   ``experimental.cpo.CPOTrainer``        beta 2.0, gamma 1.0, no SFT term (Meng et al. 2024)
``reward``  ``RewardTrainer``                      one-score sequence classifier, Bradley-Terry loss
``grpo``    ``GRPOTrainer``                        8 generations, beta 0.04, grpo loss (Shao et al. 2024)
``distill`` ``experimental.gkd.GKDTrainer``        a third of the layers dropped, T 2, forward KL + answers
==========  ====================================  =============================================
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from lmtune.config.sections import _Section

OBJECTIVES = ("sft", "dpo", "kto", "orpo", "simpo", "reward", "grpo", "distill")
PREFERENCE_OBJECTIVES = ("dpo", "kto", "orpo", "simpo", "reward")
BUILTIN_REWARDS = ("number_match", "format", "length")

# Methods each non-sft objective trains with.  Prompt-learning adapters feed virtual tokens or cached keys
# that TRL's trainers do not pass through their reference and generation passes; AdaLoRA needs its budget
# callback inside the training loop, which lmtune only wires into its own (sft) Trainer.
OBJECTIVE_METHODS = {
    "dpo": ("full", "freeze", "lora", "dora", "qlora", "ia3"),
    "kto": ("full", "freeze", "lora", "dora", "qlora", "ia3"),
    "orpo": ("full", "freeze", "lora", "dora", "qlora", "ia3"),
    "simpo": ("full", "freeze", "lora", "dora", "qlora", "ia3"),
    "grpo": ("full", "freeze", "lora", "dora", "qlora", "ia3"),
    "reward": ("full", "lora", "dora"),  # a sequence-classification head: full, or LoRA with the head trained
    # the student is a new, smaller model: an adapter on it would name a base (the teacher) it no longer fits
    "distill": ("full",),
}


def objective_problem(objective: str, method: str) -> str | None:
    """Why ``method`` cannot train ``objective`` (None when it can)."""
    allowed = OBJECTIVE_METHODS.get(objective)
    if allowed is None or method in allowed:
        return None
    return f"objective {objective} trains with method {', '.join(allowed)}; not {method}"


class DpoConfig(_Section):
    beta: float = Field(0.1, gt=0)
    loss_type: str | list[str] = "sigmoid"
    """TRL's DPO loss: sigmoid (DPO), ipo, hinge, robust, bco_pair, exo_pair, nca_pair, apo_zero, ...; a list
    combines several, e.g. ``[sigmoid, sft]``: DPO plus the chosen answers' NLL (RPO, Pang et al. 2024)."""
    loss_weights: list[float] | None = None
    """One weight per ``loss_type`` entry (TRL's ``loss_weights``); None weighs them equally."""
    label_smoothing: float = Field(0.0, ge=0, lt=0.5)
    """Conservative DPO / robust DPO: the assumed share of flipped preference labels."""

    @model_validator(mode="after")
    def _one_weight_per_loss(self) -> DpoConfig:
        losses = [self.loss_type] if isinstance(self.loss_type, str) else self.loss_type
        if self.loss_weights is not None and len(self.loss_weights) != len(losses):
            raise ValueError(f"loss_weights: {len(self.loss_weights)} weights for {len(losses)} loss_type entries")
        return self


class KtoConfig(_Section):
    beta: float = Field(0.1, gt=0)
    desirable_weight: float = Field(1.0, gt=0)
    undesirable_weight: float = Field(1.0, gt=0)


class OrpoConfig(_Section):
    beta: float = Field(0.1, gt=0)
    """The weight of the odds-ratio term (the paper's lambda)."""


class SimpoConfig(_Section):
    beta: float = Field(2.0, gt=0)
    gamma: float = Field(1.0, ge=0)
    """Target reward margin (TRL's ``simpo_gamma``)."""
    cpo_alpha: float = Field(0.0, ge=0)
    """Weight of an added SFT (NLL) term on the chosen answers; 0 is plain SimPO."""


class RewardConfig(_Section):
    center_rewards_coefficient: float | None = Field(None, ge=0)
    """Pull the mean score towards 0 (Eisenstein et al. 2023); None turns it off."""


class GrpoConfig(_Section):
    num_generations: int = Field(8, ge=2)
    max_completion_length: int = Field(256, gt=0)
    beta: float = Field(0.04, ge=0)
    loss_type: Literal["grpo", "dr_grpo", "dapo", "bnpo"] = "grpo"
    temperature: float = Field(1.0, gt=0)
    reward_functions: list[str] = Field(default_factory=list)
    """Built-ins (``number_match``, ``format``, ``length``) or ``module:function`` of your own."""
    format_pattern: str = r"(?s).*####\s*-?[\d,.]+\s*$"
    """The regex the ``format`` reward checks the whole answer against."""
    target_length: int = Field(200, gt=0)
    """``length`` reward: 1 at or under this many characters, falling to 0 at twice as many."""
    use_vllm: bool | None = None
    """Generate with vLLM (TRL's colocate mode); None: when vLLM is installed and a CUDA GPU is present."""

    @field_validator("reward_functions")
    @classmethod
    def _known_rewards(cls, v: list[str]) -> list[str]:
        for name in v:
            if name not in BUILTIN_REWARDS and ":" not in name:
                raise ValueError(f"{name!r}: use a built-in ({', '.join(BUILTIN_REWARDS)}) or module:function")
        return v


class DistillConfig(_Section):
    """The student: ``model.name`` (the teacher: a model or a run folder, its adapter merged) without whole decoder
    layers, trained to match the teacher's next-token distributions on the task's answers."""

    drop_layers: int | list[int] | None = None
    """How many layers to drop (the ones that change their input least on the task's training rows, never the
    first or the last), or which (0-based indices); None: a third of them, rounded down (30 -> 20)."""
    score_rows: int = Field(64, gt=0)
    """Training rows the layer scores are measured on."""
    temperature: float = Field(2.0, gt=0)
    """Softens both distributions in the distillation loss, which is scaled by its square (Hinton et al. 2015)."""
    beta: float = Field(0.0, ge=0, le=1)
    """The divergence (TRL's generalized Jensen-Shannon): 0 forward KL (classic distillation), 0.5 JSD, 1 reverse KL."""
    answer_weight: float = Field(0.5, ge=0, le=1)
    """Weight of the usual answer loss (cross-entropy on the task's answers); the distillation loss gets 1 minus it."""
    on_policy: float = Field(0.0, ge=0, le=1)
    """Share of steps on answers the student samples itself (TRL's ``lmbda``, Agarwal et al. 2024); 0: the task's."""
    max_new_tokens: int = Field(64, gt=0)
    """Length of the student's own answers in on-policy steps."""
    speed_prompts: int = Field(8, gt=0)
    """Held-out prompts in the batch whose greedy generation times teacher and student."""
    speed_new_tokens: int = Field(48, gt=0)
    """Tokens each prompt generates in that timing (the end of the answer ignored, so both make as many)."""
    speed_repeats: int = Field(3, gt=0)
    """Timings of each model, in turns; the median is kept."""

    @field_validator("drop_layers")
    @classmethod
    def _some_layers(cls, v: int | list[int] | None) -> int | list[int] | None:
        if isinstance(v, int) and v < 1 or isinstance(v, list) and (not v or min(v) < 0 or len(set(v)) < len(v)):
            raise ValueError("give a number of layers (1 or more) or a list of distinct 0-based layer indices")
        return v
