"""The ``eval`` section: what is measured on the base and the tuned model, and what tuning cost."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from lmtune.config.sections import METRICS, _Section


class EvalConfig(_Section):
    """Evaluation before and after training on the held-out set."""

    metrics: list[Literal[METRICS]] = list(METRICS)  # type: ignore[valid-type]
    max_samples: int | None = Field(200, gt=0)
    """Cap on held-out rows used for generation (BLEU/ROUGE); perplexity uses them all."""
    max_new_tokens: int = Field(128, gt=0)
    batch_size: int = Field(16, gt=0)
    """Prompts generated for at once (greedy decoding, left padding)."""
    base: bool = True
    """Also evaluate the model before fine-tuning, for the side-by-side table."""
    reference: str | None = "general"
    """General-domain data whose perplexity is measured before and after: the forgetting figure. A file,
    or ``general`` (lmtune's built-in general-knowledge questions and answers); null skips it."""
    forgetting_threshold: float = Field(25.0, ge=0)
    """Percent rise of the reference perplexity above which the table and the reports warn and name
    the levers against forgetting."""
    stride: int = Field(256, gt=0)
    """Sliding-window perplexity for ``text`` rows longer than ``data.max_length``: tokens the window
    moves each step (the Transformers documentation's convention; each token is scored once)."""
    reward_model: str | None = None
    """A sequence-classification reward model (hub id or local folder) that scores (prompt, answer) pairs."""
    reward_batch_size: int = Field(8, gt=0)
    checks: list[str] = Field(default_factory=list)
    """``module:function`` checks of a property of each generated answer, with a reward function's
    signature (``f(prompts, completions, **columns) -> [0..1]``): their means go next to the metrics
    (e.g. ``lmtune.data.demo:numbers_right``, the preference demo's)."""
    generate_every: int | None = Field(None, gt=0)
    """During training, also compute the generation metrics every N evaluations (needs ``training.eval_strategy``)."""
    generate_samples: int = Field(16, gt=0)
    """Held-out rows generated for at each of those in-training evaluations."""
    report_samples: int = Field(8, ge=0)
    """Prompts shown with base answer, fine-tuned answer and reference in the reports."""

    # what tuning cost: standard benchmarks (lmtune.evaluate.benchmarks) and the safety probe (lmtune.evaluate.safety)
    benchmarks: list[str] = Field(default_factory=list)
    """lm-evaluation-harness tasks scored on the base and the tuned model: task names (``arc_easy``,
    ``hellaswag``; their data comes from the hub, and is cached after the first run) or local task YAML files."""
    benchmark_limit: int | None = Field(None, gt=0)
    """Documents per task (lm-eval's ``limit``); null: every document. Hub tasks have thousands: set one on a CPU."""
    benchmarks_offline: Literal["fail", "skip"] = "fail"
    """A hub task while the hub cannot be reached: ``fail`` stops the run before it starts (one line);
    ``skip`` leaves it out with a line saying so (the demo, which must run offline)."""
    safety: bool | None = None
    """The safety probe: refusal rates on built-in harmful requests and on harmless look-alikes, base and tuned.
    Null (the default): on for chat models (the tokenizer has a chat template), off for plain base models."""
    safety_judge: str | None = None
    """A sequence-classification model (hub id or local folder) that also judges each answer: refusal or not."""
    safety_judge_label: str | None = None
    """The judge's label that means a refusal; null: the one whose name contains ``refus`` or ``reject``."""
    safety_threshold: float = Field(10.0, ge=0)
    """A drop of the harmful-request refusal rate by more than this many percentage points is a warning."""
    safety_max_new_tokens: int = Field(48, gt=0)
    """Tokens generated per probe answer; the refusal rule reads the answer's opening."""
    safety_limit: int | None = Field(None, gt=0)
    """Prompts taken from each probe set (evenly across its categories); null: all of them."""

    @model_validator(mode="after")
    def _cost_keys_have_their_switch(self) -> EvalConfig:
        """A benchmark or safety key with its feature off would be ignored: an error, not a silent no-op."""
        # keys off their defaults: a resolved config.yaml writes every key with its default, and that is harmless
        fields = type(self).model_fields
        given = {k for k in self.model_fields_set if getattr(self, k) != fields[k].get_default(call_default_factory=1)}
        if not self.benchmarks and (loose := sorted(given & {"benchmark_limit", "benchmarks_offline"})):
            raise ValueError(f"{', '.join(loose)}: used only with eval.benchmarks, which is empty")
        safety_keys = {k for k in type(self).model_fields if k.startswith("safety_")}
        if self.safety is False and (loose := sorted(given & safety_keys)):
            raise ValueError(f"{', '.join(loose)}: used only by the safety probe, which eval.safety: false turns off")
        if self.safety_judge is None and "safety_judge_label" in given:
            raise ValueError("safety_judge_label: used only with eval.safety_judge, which is not set")
        return self
