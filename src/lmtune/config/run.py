"""The ``training`` and ``continual`` sections and the whole ``RunConfig``."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from lmtune.config.data import DataConfig
from lmtune.config.evaluation import EvalConfig
from lmtune.config.messages import UnknownKey, did_you_mean, training_argument_names
from lmtune.config.objectives import (
    OBJECTIVES,
    DistillConfig,
    DpoConfig,
    GrpoConfig,
    KtoConfig,
    OrpoConfig,
    RewardConfig,
    SimpoConfig,
    objective_problem,
)
from lmtune.config.privacy import PrivacyConfig, privacy_problem
from lmtune.config.sections import (
    METHOD_NAMES,
    AdaLoraConfig,
    FreezeConfig,
    IA3Config,
    LoraConfig,
    ModelConfig,
    PrefixTuningConfig,
    PromptTuningConfig,
    PTuningConfig,
    _Section,
)
from lmtune.config.sweep import SweepConfig


class TrainingConfig(BaseModel):
    """``transformers.TrainingArguments`` by their own names.

    The fields below are validated here; any other TrainingArguments field is
    passed through as given.  ``warmup_ratio`` (removed from Transformers 5) is
    accepted and passed on as a fractional ``warmup_steps``.
    """

    model_config = ConfigDict(extra="allow", validate_assignment=True)

    output_dir: str = "runs/lmtune"
    per_device_train_batch_size: int | Literal["auto"] = 8
    """Examples per step on each device. ``auto``: the largest of 8, 4, 2, 1 whose predicted peak memory
    (``lmtune plan``) fits the memory budget (``--memory-budget``, default what the machine has free),
    keeping the global batch at 8 x ``gradient_accumulation_steps`` by raising the accumulation."""
    per_device_eval_batch_size: int = Field(8, gt=0)
    gradient_accumulation_steps: int = Field(1, gt=0)
    num_train_epochs: float = Field(1.0, gt=0)
    max_steps: int = -1
    learning_rate: float = Field(2e-4, gt=0)
    lr_scheduler_type: str = "linear"
    warmup_ratio: float = Field(0.0, ge=0, lt=1)
    warmup_steps: float = Field(0, ge=0)
    weight_decay: float = Field(0.0, ge=0)
    max_grad_norm: float = Field(1.0, ge=0)
    logging_steps: float = Field(10, gt=0)
    eval_strategy: Literal["no", "steps", "epoch"] = "no"
    eval_steps: float | None = Field(None, gt=0)
    save_strategy: Literal["no", "steps", "epoch", "best"] = "steps"
    save_steps: float = Field(500, gt=0)
    save_total_limit: int | None = Field(2, gt=0)
    bf16: bool | Literal["auto"] = "auto"
    """bfloat16 mixed precision (autocast; float32 masters of the trained weights). ``auto``: on for
    supervised runs whose base weights are bfloat16 (``model.dtype: auto`` on fast-bf16 hardware), so the
    adapters compute in bfloat16 too (1.10x the tokens/s measured on CPU, ``bench/speed.py``); else off."""
    fp16: bool = False
    gradient_checkpointing: bool = False
    report_to: str | list[str] = "tensorboard"
    early_stopping_patience: int | None = Field(None, gt=0)
    """Stop after this many evaluations without improvement of ``eval_loss`` (not a TrainingArguments
    field: it configures ``EarlyStoppingCallback``); the best checkpoint is reloaded at the end."""
    early_stopping_threshold: float = Field(0.0, ge=0)
    """How much ``eval_loss`` must drop to count as an improvement."""
    packing: bool = True
    """Train on each batch's examples packed into one row without padding (``position_ids`` restart per
    example, attention kept within it); same examples per step, same loss. Pays when example lengths vary;
    on CPU, with near-uniform lengths, the attention over the whole packed row can make it slower. Turned
    off, with a log line, for prompt-learning methods and for models whose attention cannot keep packed
    examples apart."""
    chunked_loss: bool = True
    """Compute the loss only at labelled positions, the LM head in chunks recomputed in backward, instead
    of keeping (tokens x vocabulary) logits; same loss. Falls back, with a log line, where it cannot apply
    (prompt-learning methods, AdaLoRA, models that change their logits in forward)."""
    plan: bool = True
    """Before training, probe a few steps on the longest and on typical batches and print the predicted peak
    memory and training time (``lmtune plan``); ``per_device_train_batch_size: auto`` needs it."""
    fused_loss: bool = True
    """With ``chunked_loss``: compute each chunk's gradients in the forward, where its logits already are,
    instead of recomputing them in backward (Liger Kernel's fused linear cross-entropy, here on any
    device); same loss and gradients. Applies where the head is a plain bias-free linear layer."""
    fused_norm: bool = True
    """RMSNorm layers keep only their input and one number per row for backward (``lmtune.speed.norm``), not
    two float32 copies of the hidden states; the same arithmetic. Patched only where a probe reproduces
    the module's output exactly."""
    fast_dropout: bool = True
    """Adapter dropout (``lora.dropout``) drawn with a quarter of the random numbers (``lmtune.speed.dropout``):
    same keep rate to 2**-15 and the same expected output; 1.19x the tokens/s with all-linear LoRA on CPU."""
    trim_memory: bool = True
    """After an optimizer step that left resident memory 10% above the first step's, hand the memory the
    allocator holds free back to the operating system (glibc ``malloc_trim``; ``lmtune.speed.allocator``).
    Without it resident memory creeps up through a run as freed blocks of changing sizes stay with the
    process; nothing changes in what is computed."""

    @field_validator("eval_strategy", "save_strategy", mode="before")
    @classmethod
    def _yaml_no_is_false(cls, v: Any) -> Any:
        return "no" if v is False else v  # YAML 1.1 reads a bare `no` as false

    @field_validator("per_device_train_batch_size", mode="before")
    @classmethod
    def _batch_positive_or_auto(cls, v: Any) -> Any:
        if v == "auto":
            return v
        if isinstance(v, bool) or not isinstance(v, int):
            raise ValueError("input should be a whole number of examples, or auto")
        if v <= 0:
            raise ValueError("input should be greater than 0")
        return v

    @field_validator("max_steps")
    @classmethod
    def _steps_positive_or_unset(cls, v: int) -> int:
        if v == 0 or v < -1:
            raise ValueError("must be a positive number of steps, or -1 to train for num_train_epochs")
        return v

    @field_validator("lr_scheduler_type")
    @classmethod
    def _known_scheduler(cls, v: str) -> str:
        from transformers.trainer_utils import SchedulerType

        names = [s.value for s in SchedulerType]
        if v not in names:
            raise ValueError(f"must be one of {', '.join(names)}{did_you_mean(v, names)}")
        return v

    @model_validator(mode="after")
    def _one_warmup(self) -> TrainingConfig:
        if self.warmup_ratio and self.warmup_steps:
            raise ValueError("give warmup_ratio or warmup_steps, not both")
        if self.bf16 is True and self.fp16:
            raise ValueError("give bf16 or fp16, not both")
        if self.early_stopping_patience and self.eval_strategy == "no":
            raise ValueError("early_stopping_patience needs eval_strategy: steps or epoch (it watches eval_loss)")
        return self

    @model_validator(mode="after")
    def _extras_are_training_arguments(self) -> TrainingConfig:
        valid = training_argument_names() | set(type(self).model_fields)
        for key in self.model_extra or {}:
            if key == "seed":
                raise ValueError("training.seed: use the top-level 'seed' key, which seeds everything")
            if key not in valid:
                raise UnknownKey(key, sorted(valid))
        return self


class ContinualConfig(_Section):
    """Regularisers against catastrophic forgetting, both off by default."""

    reference: str | None = None
    """General-domain data the regularisers use: a file, or ``general-fit`` (the built-in set's other
    half); keep it apart from ``eval.reference``."""
    ewc_weight: float = Field(0.0, ge=0)
    """Elastic Weight Consolidation: penalty weight λ of λ/2·Σ F·(θ-θ₀)²; 0 turns it off."""
    ewc_samples: int = Field(32, gt=0)
    """Reference examples used to estimate the (diagonal, empirical) Fisher information."""
    replay_fraction: float = Field(0.0, ge=0, lt=0.9)
    """Share of training rows drawn from the reference data (replay); 0 turns it off."""

    @model_validator(mode="after")
    def _needs_reference(self) -> ContinualConfig:
        if (self.ewc_weight or self.replay_fraction) and not self.reference:
            raise ValueError("ewc_weight / replay_fraction need continual.reference (a general-domain data file)")
        return self


class RunConfig(_Section):
    """A whole run: ``model``, ``method``, ``data``, ``training``, ``eval``, ``seed``."""

    seed: int = 42
    model: ModelConfig = Field(default_factory=ModelConfig)
    objective: str = "sft"
    """What the model learns from: ``sft`` (answers), ``dpo`` / ``kto`` / ``orpo`` / ``simpo`` (preferences),
    ``reward`` (a reward model from preference pairs), ``grpo`` (reward functions) or ``distill`` (a smaller student of
    the model); see config/objectives.py."""
    dpo: DpoConfig = Field(default_factory=DpoConfig)
    kto: KtoConfig = Field(default_factory=KtoConfig)
    orpo: OrpoConfig = Field(default_factory=OrpoConfig)
    simpo: SimpoConfig = Field(default_factory=SimpoConfig)
    reward: RewardConfig = Field(default_factory=RewardConfig)
    grpo: GrpoConfig = Field(default_factory=GrpoConfig)
    distill: DistillConfig = Field(default_factory=DistillConfig)
    method: str = "lora"
    lora: LoraConfig = Field(default_factory=LoraConfig)
    freeze: FreezeConfig = Field(default_factory=FreezeConfig)
    adalora: AdaLoraConfig = Field(default_factory=AdaLoraConfig)
    ia3: IA3Config = Field(default_factory=IA3Config)
    prompt_tuning: PromptTuningConfig = Field(default_factory=PromptTuningConfig)
    p_tuning: PTuningConfig = Field(default_factory=PTuningConfig)
    prefix_tuning: PrefixTuningConfig = Field(default_factory=PrefixTuningConfig)
    data: DataConfig
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    continual: ContinualConfig = Field(default_factory=ContinualConfig)
    privacy: PrivacyConfig | None = None
    """Differentially private training (DP-SGD with Opacus); absent or null: off. See config/privacy.py."""
    stages: list[dict[str, Any]] | None = None
    """Staged fine-tuning: each item overrides sections of this config (``name``, ``data``, ``training``,
    ``method``, ...) for one stage; each stage starts from the previous stage's weights (adapters merged)."""
    sweep: SweepConfig | None = Field(None, exclude=True)
    """Hyper-parameter search (``lmtune sweep``). Left out of dumps: a run's config.yaml and record stay those
    of the run itself."""

    @field_validator("method")
    @classmethod
    def _known_method(cls, v: str) -> str:
        if v not in METHOD_NAMES:
            raise ValueError(f"must be one of {', '.join(METHOD_NAMES)}{did_you_mean(v, list(METHOD_NAMES))}")
        return v

    @field_validator("objective")
    @classmethod
    def _known_objective(cls, v: str) -> str:
        if v not in OBJECTIVES:
            raise ValueError(f"must be one of {', '.join(OBJECTIVES)}{did_you_mean(v, list(OBJECTIVES))}")
        return v

    @model_validator(mode="after")
    def _objective_fits_method(self) -> RunConfig:
        if problem := objective_problem(self.objective, self.method):
            raise ValueError(problem)
        if self.objective != "sft" and self.training.per_device_train_batch_size == "auto":
            raise ValueError(
                f"training.per_device_train_batch_size: auto is for objective sft; give a number for {self.objective}"
            )
        if self.training.per_device_train_batch_size == "auto" and not self.training.plan:
            raise ValueError(
                "training.per_device_train_batch_size: auto is chosen by the plan; set training.plan: true"
            )
        if self.objective == "grpo" and not self.grpo.reward_functions:
            raise ValueError("objective grpo needs grpo.reward_functions (e.g. [number_match, format])")
        if self.objective != "sft" and self.stages:
            raise ValueError(f"objective {self.objective}: stages are for sft runs; run the stages, then this one")
        return self

    @model_validator(mode="after")
    def _privacy_fits_the_run(self) -> RunConfig:
        if self.privacy is not None and (problem := privacy_problem(self)):
            raise ValueError(problem)
        return self

    @model_validator(mode="after")
    def _cost_measures_need_a_language_model(self) -> RunConfig:
        if self.objective == "reward" and (self.eval.safety or self.eval.benchmarks):
            key = "eval.safety" if self.eval.safety else "eval.benchmarks"
            raise ValueError(f"{key}: objective reward trains a scorer, which neither answers nor takes benchmarks")
        return self

    @model_validator(mode="after")
    def _generation_during_training_needs_evaluations(self) -> RunConfig:
        if self.eval.generate_every and self.training.eval_strategy == "no":
            raise ValueError("eval.generate_every needs training.eval_strategy: steps or epoch")
        return self
