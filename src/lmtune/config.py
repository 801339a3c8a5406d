"""One YAML file describes a run: YAML -> validated, typed `RunConfig`.

Every section is a pydantic model that forbids unknown keys, so a typo fails
loudly with the closest valid key instead of silently taking a default.  Keys
under ``training`` keep the names of ``transformers.TrainingArguments``; any
other TrainingArguments field is accepted and passed through unchanged.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
from functools import cache
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from lmtune.errors import ConfigError

EMBEDDED_MODEL = "smollm2-135m-instruct"
METRICS = ("perplexity", "bleu", "rouge", "chrf", "exact_match", "token_f1", "accuracy", "macro_f1")
"""Every metric ``eval.metrics`` may name; accuracy / macro-F1 are reported only for label-like answers."""
DATA_FORMATS = ("auto", "text", "prompt_completion", "input_output", "alpaca", "messages", "sharegpt", "cot")


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


class DataSource(_Section):
    """One dataset: a file, a folder of files, or a hub dataset, with its place in a mixture."""

    path: str
    """JSONL / JSON / CSV / Parquet file, a folder of them, or a hub dataset id (``tatsu-lab/alpaca``)."""
    task: str | None = None
    """Task name; evaluation reports metrics per task. Defaults to the file's stem."""
    weight: float | None = Field(None, gt=0)
    """Share of training examples drawn from this source (weights are normalised); null keeps every row once."""
    format: Literal[DATA_FORMATS] | None = None  # type: ignore[valid-type]
    """Shape of this source's rows; null takes ``data.format``."""
    columns: dict[str, str] | None = None
    """Field names to map for this source; null takes ``data.columns``."""
    split: str | None = None
    """Hub datasets: the split (null takes ``data.split``)."""
    subset: str | None = None
    """Hub datasets: the configuration name (null takes ``data.subset``)."""


Sources = str | DataSource | list[str | DataSource]


class DataConfig(_Section):
    """Where the task data is, how it is cleaned and split, and how it becomes examples."""

    train: Sources
    """A file, folder or hub id, or a list of sources (``{path, task, weight}``) for a mixture."""
    eval: Sources | None = None
    """Held-out data; without it ``val_fraction`` of ``train`` is split off (seeded)."""
    format: Literal[DATA_FORMATS] = "auto"  # type: ignore[valid-type]
    columns: dict[str, str] = Field(default_factory=dict)
    """Map the fields lmtune expects to yours, e.g. ``{prompt: question, completion: answer}``."""
    split: str = "train"
    """Hub datasets: which split to read."""
    subset: str | None = None
    """Hub datasets: the configuration (subset) name."""
    val_fraction: float = Field(0.1, ge=0, lt=1)
    test_fraction: float = Field(0.0, ge=0, lt=1)
    """Share split off as a test set (written to ``test.jsonl`` in the run folder, not trained on)."""
    split_by: Literal["prompt", "row"] = "prompt"
    """``prompt``: rows sharing a prompt stay on one side of every split (fractions count prompts), and
    held-out rows sharing a prompt become one example with all their answers as references; ``row``:
    rows are split one by one and every held-out row is its own example."""
    stratify: Literal["auto", "yes", "no"] = "auto"
    """Stratify the split by answer; ``auto`` does when the task is classification-like (few distinct answers)."""
    max_length: int = Field(512, gt=0)
    """Tokens per example (prompt + answer)."""
    overlong: Literal["drop", "truncate"] = "drop"
    """What to do with examples longer than ``max_length``: drop them, or cut them at the end."""
    normalize: bool = True
    """Unicode NFC, line endings to ``\\n``, strip ends, drop invisible control characters."""
    dedup: bool = True
    """Drop exact duplicates (normalised prompt + answer)."""
    near_dedup: bool = False
    """Drop near-duplicates (MinHash/LSH over word 5-grams); off by default: templated data can look alike."""
    near_dedup_threshold: float = Field(0.85, gt=0, le=1)
    """Estimated Jaccard similarity above which two rows count as near-duplicates."""
    decontaminate: bool = True
    """Drop held-out rows whose prompt also appears in the training data."""
    cache: bool = True
    """Cache tokenised data under ``$LMTUNE_CACHE/datasets`` (keyed by data, tokenizer and this section)."""
    train_on_prompt: bool = False
    """Train on prompt tokens too (by default only answer tokens carry labels)."""
    template: Literal["auto", "chat", "plain"] = "auto"
    """``chat`` uses the tokenizer's chat template, ``plain`` the documented
    ``### Instruction / ### Response`` layout; ``auto`` takes chat when the tokenizer has one."""
    system_prompt: str | None = None
    """System message put before every prompt in the chat layout (the template's default when null)."""

    @model_validator(mode="after")
    def _fractions_leave_training_data(self) -> DataConfig:
        if self.val_fraction + self.test_fraction >= 0.9:
            raise ValueError("val_fraction + test_fraction must leave at least 10% for training")
        return self

    def sources(self, which: str = "train") -> list[DataSource]:
        """``train`` / ``eval`` as a list of sources, each with its defaults filled in."""
        given = getattr(self, which)
        items = [] if given is None else given if isinstance(given, list) else [given]
        out = []
        for item in items:
            src = DataSource(path=item) if isinstance(item, str) else item
            out.append(
                src.model_copy(
                    update={
                        "format": src.format or self.format,
                        "columns": src.columns if src.columns is not None else self.columns,
                        "split": src.split or self.split,
                        "subset": src.subset or self.subset,
                    }
                )
            )
        return out


class TrainingConfig(BaseModel):
    """``transformers.TrainingArguments`` by their own names.

    The fields below are validated here; any other TrainingArguments field is
    passed through as given.  ``warmup_ratio`` (removed from Transformers 5) is
    accepted and passed on as a fractional ``warmup_steps``.
    """

    model_config = ConfigDict(extra="allow", validate_assignment=True)

    output_dir: str = "runs/lmtune"
    per_device_train_batch_size: int = Field(8, gt=0)
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
    bf16: bool = False
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

    @field_validator("eval_strategy", "save_strategy", mode="before")
    @classmethod
    def _yaml_no_is_false(cls, v: Any) -> Any:
        return "no" if v is False else v  # YAML 1.1 reads a bare `no` as false

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
            raise ValueError(f"must be one of {', '.join(names)}{_did_you_mean(v, names)}")
        return v

    @model_validator(mode="after")
    def _one_warmup(self) -> TrainingConfig:
        if self.warmup_ratio and self.warmup_steps:
            raise ValueError("give warmup_ratio or warmup_steps, not both")
        if self.bf16 and self.fp16:
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
                raise _UnknownKey(key, sorted(valid))
        return self


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
    generate_every: int | None = Field(None, gt=0)
    """During training, also compute the generation metrics every N evaluations (needs ``training.eval_strategy``)."""
    generate_samples: int = Field(16, gt=0)
    """Held-out rows generated for at each of those in-training evaluations."""
    report_samples: int = Field(8, ge=0)
    """Prompts shown with base answer, fine-tuned answer and reference in the reports."""


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
    stages: list[dict[str, Any]] | None = None
    """Staged fine-tuning: each item overrides sections of this config (``name``, ``data``, ``training``,
    ``method``, ...) for one stage; each stage starts from the previous stage's weights (adapters merged)."""

    def stage_configs(self) -> list[tuple[str, RunConfig]]:
        """(name, config) of every stage, each a full config with its overrides applied."""
        base = self.model_dump(mode="json", exclude={"stages"})
        out = []
        for i, stage in enumerate(self.stages or []):
            stage = dict(stage)
            name = str(stage.pop("name", f"stage{i + 1}"))
            if not _plain_name(name):  # the stage folder goes inside output_dir, never elsewhere
                raise ConfigError(f"stages[{i}].name: {name!r}: use a plain name (letters, digits, '-', '_', '.')")
            merged = _deep_merge(base, stage)
            merged["training"]["output_dir"] = str(Path(self.training.output_dir) / f"{i + 1}-{name}")
            out.append((name, validate_config(merged, f"stages[{i}] ({name})")))
        return out

    @field_validator("method")
    @classmethod
    def _known_method(cls, v: str) -> str:
        from lmtune.methods import METHODS

        if v not in METHODS:
            raise ValueError(f"must be one of {', '.join(METHODS)}{_did_you_mean(v, list(METHODS))}")
        return v

    @model_validator(mode="after")
    def _generation_during_training_needs_evaluations(self) -> RunConfig:
        if self.eval.generate_every and self.training.eval_strategy == "no":
            raise ValueError("eval.generate_every needs training.eval_strategy: steps or epoch")
        return self


# --------------------------------------------------------------------------- loading


def load_config(path: str | Path | None, overrides: list[str] = ()) -> RunConfig:
    """Read a YAML run config, apply ``--set key.path=value`` overrides, validate.

    Raises:
        ConfigError: one line naming the file and the offending key(s).
    """
    where = str(path) if path else "config"
    raw = read_yaml(Path(path)) if path else {}
    for item in overrides:
        apply_override(raw, item)
    return validate_config(raw, where)


def read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"{path}: no such config file")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = f":{mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}{line}: not valid YAML ({getattr(e, 'problem', e)})") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(
            f"{path}: expected a mapping of sections (model, method, data, ...), found {type(raw).__name__}"
        )
    return raw


def apply_override(raw: dict[str, Any], item: str) -> None:
    """``training.max_steps=20`` -> raw["training"]["max_steps"] = 20 (value parsed as YAML)."""
    key, sep, value = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. --set training.max_steps=20")
    parts = key.strip().split(".")
    node = raw
    for i, part in enumerate(parts[:-1]):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"--set {item!r}: '{'.'.join(parts[: i + 1])}' is not a section")
        node = child
    try:
        node[parts[-1]] = yaml.safe_load(value)
    except yaml.YAMLError:
        node[parts[-1]] = value


def validate_config(raw: dict[str, Any], where: str = "config") -> RunConfig:
    try:
        cfg = RunConfig.model_validate(raw)
    except ValidationError as e:
        problems = [_describe(err) for err in e.errors(include_url=False)]
        raise ConfigError(f"{where}: " + "; ".join(problems)) from None
    if cfg.stages:
        for i, stage in enumerate(cfg.stages):
            if bad := sorted(set(stage) & {"seed", "model", "stages"}):
                raise ConfigError(f"{where}: stages[{i}].{bad[0]}: set it once, outside the stages")
        try:
            cfg.stage_configs()  # every stage is validated now, not when it starts
        except ConfigError as e:
            raise ConfigError(f"{where}: {e}") from None
    return cfg


def _deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def dump_config(cfg: RunConfig) -> str:
    """The resolved config as YAML (every default filled in)."""
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False, allow_unicode=True)


# --------------------------------------------------------------------------- messages


class _UnknownKey(ValueError):
    def __init__(self, key: str, valid: list[str]):
        self.key = key
        super().__init__(f"unknown key{_did_you_mean(key, valid)}")


@cache
def training_argument_names() -> frozenset[str]:
    from transformers import TrainingArguments

    return frozenset(f.name for f in dataclasses.fields(TrainingArguments))


def _plain_name(name: str) -> bool:
    return bool(re.fullmatch(r"[\w.-]+", name)) and name not in (".", "..")


def _did_you_mean(word: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(str(word), choices, n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _describe(err: dict[str, Any]) -> str:
    loc = [str(p) for p in err["loc"]]
    kind, msg = err["type"], err["msg"]
    if kind == "extra_forbidden":
        return f"{'.'.join(loc)}: unknown key{_did_you_mean(loc[-1], _fields_at(loc[:-1]))}"
    if kind == "missing":
        return f"{'.'.join(loc)}: required key is missing"
    if kind == "value_error" and isinstance(unknown := err.get("ctx", {}).get("error"), _UnknownKey):
        return f"{'.'.join(loc)}.{unknown.key}: {unknown}"
    msg = msg.removeprefix("Value error, ")
    found = err.get("input")
    shown = "" if isinstance(found, dict) else f" (found {found!r})"
    text = msg[0].lower() + msg[1:] + shown
    return f"{'.'.join(loc)}: {text}" if loc else text  # whole-config checks name their keys themselves


def _fields_at(loc: list[str]) -> list[str]:
    model: type[BaseModel] = RunConfig
    for part in loc:
        model = model.model_fields[part].annotation  # type: ignore[assignment]
    return list(model.model_fields)
