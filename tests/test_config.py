"""Run configs: loading, --set overrides, and one-line errors that name the key."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from helpers import REPO_ROOT

from lmtune.config import RunConfig, dump_config, load_config, validate_config
from lmtune.errors import ConfigError
from lmtune.train import training_arguments

VALID = """\
seed: 7
model:
  name: smollm2-135m-instruct
method: lora
lora:
  r: 8
  alpha: 16
  target_modules: all-linear
data:
  train: data/train.jsonl
  eval: data/eval.jsonl
  max_length: 128
  system_prompt: Be brief.
training:
  output_dir: runs/x
  learning_rate: 1.0e-3
  lr_scheduler_type: cosine
  warmup_ratio: 0.1
  max_steps: 50
eval:
  metrics: [perplexity, bleu]
  max_samples: 10
"""


@pytest.fixture
def config_file(tmp_path: Path):
    def write(text: str = VALID) -> Path:
        path = tmp_path / "run.yaml"
        path.write_text(text, encoding="utf-8")
        return path

    return write


def config_error(path: Path | None, overrides: list[str] = ()) -> str:
    with pytest.raises(ConfigError) as e:
        load_config(path, list(overrides))
    message = str(e.value)
    assert "\n" not in message, message  # one line
    assert e.value.exit_code == 2
    return message


def test_valid_yaml(config_file):
    cfg = load_config(config_file())
    assert isinstance(cfg, RunConfig)
    assert cfg.seed == 7
    assert cfg.method == "lora"
    assert (cfg.lora.r, cfg.lora.alpha, cfg.lora.target_modules) == (8, 16, "all-linear")
    assert cfg.lora.dropout == 0.05  # default filled in
    assert (cfg.data.train, cfg.data.eval, cfg.data.max_length) == ("data/train.jsonl", "data/eval.jsonl", 128)
    assert cfg.data.system_prompt == "Be brief."
    assert cfg.training.learning_rate == 1e-3
    assert cfg.training.lr_scheduler_type == "cosine"
    assert cfg.training.max_steps == 50
    assert cfg.eval.metrics == ["perplexity", "bleu"]
    assert cfg.eval.max_samples == 10


def test_demo_config_is_valid():
    cfg = load_config(REPO_ROOT / "configs" / "demo.yaml")
    assert cfg.model.name == "smollm2-135m-instruct"
    assert cfg.method == "lora"


def test_demo_distill_config_is_valid_and_reads_every_key_it_sets():
    from lmtune.objectives import check_keys

    cfg = load_config(REPO_ROOT / "configs" / "demo_distill.yaml")
    assert (cfg.model.name, cfg.objective, cfg.method, cfg.distill.drop_layers) == ("runs/demo", "distill", "full", 12)
    check_keys(cfg)


def test_dumped_config_loads_back_the_same(config_file, tmp_path):
    cfg = load_config(config_file(), ["training.dataloader_num_workers=0"])
    dumped = tmp_path / "dumped.yaml"
    dumped.write_text(dump_config(cfg), encoding="utf-8")
    assert load_config(dumped) == cfg


def test_set_overrides(config_file):
    cfg = load_config(
        config_file(),
        [
            "training.max_steps=20",
            "lora.target_modules=[q_proj,v_proj]",
            "data.train=x.jsonl",
            "eval.base=false",
            "model.dtype=bfloat16",
            "training.output_dir=runs/other",
        ],
    )
    assert cfg.training.max_steps == 20
    assert cfg.lora.target_modules == ["q_proj", "v_proj"]
    assert cfg.data.train == "x.jsonl"
    assert cfg.eval.base is False
    assert cfg.model.dtype == "bfloat16"
    assert cfg.training.output_dir == "runs/other"
    # untouched keys keep the file's values
    assert cfg.training.learning_rate == 1e-3 and cfg.data.eval == "data/eval.jsonl"


def test_set_without_a_file_and_new_sections():
    cfg = load_config(None, ["data.train=a.jsonl", "lora.r=4", "method=full"])
    assert (cfg.data.train, cfg.lora.r, cfg.method) == ("a.jsonl", 4, "full")


def test_set_errors(config_file):
    message = config_error(config_file(), ["training.max_steps"])
    assert "expected KEY=VALUE" in message
    message = config_error(config_file(), ["seed.deeper=1"])
    assert "'seed' is not a section" in message
    # an override is validated like the file
    assert "training.max_steps" in config_error(config_file(), ["training.max_steps=0"])


def test_unknown_top_level_key_suggests_the_closest(config_file):
    path = config_file(VALID.replace("training:", "trainig:"))
    message = config_error(path)
    assert message.startswith(f"{path}: ")
    assert "trainig: unknown key (did you mean 'training'?)" in message


def test_unknown_section_key_suggests_the_closest(config_file):
    message = config_error(config_file(), ["data.max_lenght=64"])
    assert "data.max_lenght: unknown key (did you mean 'max_length'?)" in message
    message = config_error(config_file(), ["lora.rank=4"])
    assert "lora.rank: unknown key" in message


def test_unknown_training_key_suggests_the_closest(config_file):
    message = config_error(config_file(VALID.replace("learning_rate:", "learning_rat:")))
    assert "training.learning_rat: unknown key (did you mean 'learning_rate'?)" in message


def test_any_training_arguments_field_passes_through(config_file, tmp_path):
    cfg = load_config(
        config_file(),
        [
            "training.dataloader_num_workers=0",
            "training.dataloader_drop_last=true",
            "training.eval_accumulation_steps=3",
            f"training.output_dir={tmp_path / 'out'}",
        ],
    )
    assert cfg.training.model_extra == {
        "dataloader_num_workers": 0,
        "dataloader_drop_last": True,
        "eval_accumulation_steps": 3,
    }
    args = training_arguments(cfg)
    assert args.dataloader_num_workers == 0
    assert args.dataloader_drop_last is True
    assert args.eval_accumulation_steps == 3
    # and the validated fields arrive under their own names
    assert args.learning_rate == 1e-3
    assert args.max_steps == 50
    assert args.output_dir == str(tmp_path / "out")
    assert args.seed == 7
    # warmup_ratio (gone from Transformers 5) travels as a fractional warmup_steps
    assert args.warmup_steps == pytest.approx(0.1)
    assert not hasattr(args, "warmup_ratio") or not getattr(args, "warmup_ratio", 0)


@pytest.mark.parametrize(
    ("override", "key", "words"),
    [
        ("training.learning_rate=abc", "training.learning_rate", "valid number"),
        ("training.max_steps=0", "training.max_steps", "positive number of steps"),
        ("training.max_steps=-5", "training.max_steps", "positive number of steps"),
        ("training.lr_scheduler_type=cosin", "training.lr_scheduler_type", "(did you mean 'cosine'?)"),
        ("method=lorra", "method", "(did you mean 'lora'?)"),
        ("lora.r=0", "lora.r", "greater than 0"),
        ("lora.dropout=1.5", "lora.dropout", "less than 1"),
        ("data.format=jsonl", "data.format", "'prompt_completion'"),
        ("data.template=chatml", "data.template", "'plain'"),
        ("eval.metrics=[perplexity,meteor]", "eval.metrics.1", "'token_f1'"),
        ("model.dtype=float64", "model.dtype", "'bfloat16'"),
        ("seed=many", "seed", "valid integer"),
        ("training.eval_strategy=sometimes", "training.eval_strategy", "'epoch'"),
    ],
)
def test_bad_values_name_the_key(config_file, override, key, words):
    message = config_error(config_file(), [override])
    assert f"{key}: " in message
    assert words in message
    value = override.partition("=")[2]
    if key != "eval.metrics.1":
        assert repr(yaml.safe_load(value)) in message  # what was found is shown


def test_scheduler_error_lists_the_choices(config_file):
    message = config_error(config_file(), ["training.lr_scheduler_type=cosin"])
    assert "must be one of" in message and "linear" in message and "constant" in message


def test_unknown_method_lists_the_choices(config_file):
    from lmtune.methods import METHODS

    message = config_error(config_file(), ["method=lorra"])
    assert {"full", "lora"} <= set(METHODS)
    assert f"method: must be one of {', '.join(METHODS)} (did you mean 'lora'?)" in message


def test_the_config_knows_every_method_by_name():
    """The config checks names without importing lmtune.methods (a layer above it): the two lists agree."""
    from lmtune.config.objectives import OBJECTIVE_METHODS
    from lmtune.config.sections import METHOD_NAMES
    from lmtune.methods import METHODS

    assert tuple(METHODS) == METHOD_NAMES
    assert {m for allowed in OBJECTIVE_METHODS.values() for m in allowed} <= set(METHOD_NAMES)


def test_missing_data_train(config_file):
    message = config_error(config_file(VALID.replace("  train: data/train.jsonl\n", "")))
    assert "data.train: required key is missing" in message
    message = config_error(None, ["seed=1"])
    assert "data: required key is missing" in message


def test_invalid_yaml_names_the_line(config_file):
    broken = VALID.replace("  max_steps: 50", "  max_steps: [50")
    path = config_file(broken)
    message = config_error(path)
    line = re.search(rf"{re.escape(str(path))}:(\d+): not valid YAML", message)
    assert line, message
    # the parser notices the unclosed bracket at or after the line that opened it
    opened = broken.splitlines().index("  max_steps: [50") + 1
    assert int(line.group(1)) >= opened

    path = config_file("data:\n  train: a.jsonl\n\tbad: tab\n")
    assert re.search(rf"{re.escape(str(path))}:3: not valid YAML", config_error(path))


def test_yaml_that_is_not_a_mapping(config_file):
    assert "expected a mapping" in config_error(config_file("- a\n- b\n"))


def test_missing_config_file(tmp_path):
    assert f"{tmp_path / 'nope.yaml'}: no such config file" in config_error(tmp_path / "nope.yaml")


def test_empty_file_needs_data(config_file):
    assert "data: required key is missing" in config_error(config_file(""))


def test_warmup_ratio_and_steps_together(config_file):
    message = config_error(config_file(), ["training.warmup_steps=10"])
    assert "training: give warmup_ratio or warmup_steps, not both" in message


def test_bf16_and_fp16_together(config_file):
    assert "not both" in config_error(config_file(), ["training.bf16=true", "training.fp16=true"])


def test_several_problems_in_one_line(config_file):
    message = config_error(config_file(), ["lora.r=0", "trainig.max_steps=3"])
    assert "lora.r:" in message and "trainig: unknown key" in message
    assert message.count("; ") >= 1


def test_validate_config_from_a_dict():
    cfg = validate_config({"data": {"train": "t.jsonl"}, "lora": {"target_modules": None}})
    assert cfg.lora.target_modules is None
    assert cfg.method == "lora" and cfg.model.name == "smollm2-135m-instruct"
    with pytest.raises(ConfigError, match=r"^somewhere: data\.val_fraction"):
        validate_config({"data": {"train": "t.jsonl", "val_fraction": 1.0}}, "somewhere")
