"""The objectives' registry: one module each, and every config key an objective does not read refused at load.

The (objective, key) pairs come from the registry itself (``lmtune.objectives.unused_keys``), so a new
objective or a new unused key is tested without a line here, except its value in ``ON`` (and the test that
``ON`` covers every key fails until it is given one).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from lmtune.cli import main
from lmtune.config import validate_config
from lmtune.objectives import OBJECTIVES, Built, Objective, Task, objective_of, unused_keys

# a value for every key or section that turns its feature on
ON: dict[str, Any] = {
    "training.packing": True, "training.chunked_loss": True, "training.fused_loss": True,
    "training.fused_norm": True, "training.fast_dropout": True, "training.plan": True,
    "continual": {"reference": "general-fit", "replay_fraction": 0.1},
    "privacy": {"target_epsilon": 8.0},
    "eval.generate_every": 1, "eval.generate_samples": 4, "eval.stride": 128, "eval.reference": "general",
    "eval.forgetting_threshold": 10.0, "eval.metrics": ["bleu"], "eval.max_new_tokens": 16,
    "eval.max_samples": 8, "eval.checks": ["lmtune.data.demo:numbers_right"], "eval.reward_model": "judge",
    "data.train_on_prompt": True,
    "dpo": {"beta": 0.2}, "kto": {"beta": 0.2}, "orpo": {"beta": 0.2}, "simpo": {"beta": 1.0},
    "reward": {"center_rewards_coefficient": 0.01}, "grpo": {"num_generations": 4}, "distill": {"temperature": 3.0},
    "lora": {"r": 4}, "freeze": {"last_n_layers": 1}, "adalora": {"init_r": 8}, "ia3": {"target_modules": ["q_proj"]},
    "prompt_tuning": {"num_virtual_tokens": 4}, "p_tuning": {"num_virtual_tokens": 4},
    "prefix_tuning": {"num_virtual_tokens": 4},
}  # fmt: skip


def base_raw(objective: str) -> dict[str, Any]:
    method = "full" if objective == "distill" else "lora"  # a distilled student trains its own weights
    raw: dict[str, Any] = {"objective": objective, "method": method, "data": {"train": "train.jsonl"}}
    if objective == "grpo":
        raw["grpo"] = {"reward_functions": ["format"]}
    return raw


def pairs() -> list[tuple[str, str]]:
    return [(name, key) for name in OBJECTIVES for key in unused_keys(validate_config(base_raw(name)))]


def test_every_objective_is_a_module_of_its_own_in_the_registry() -> None:
    import lmtune.objectives as package

    folder = Path(package.__file__).parent
    for name, objective in OBJECTIVES.items():
        assert objective.name == name and (folder / f"{name}.py").is_file()
        assert objective.trainer.__module__ == f"lmtune.objectives.{name}"


def test_the_on_values_cover_every_unused_key_the_registry_names() -> None:
    assert {key for _, key in pairs()} <= set(ON), "give the new key a value in ON"


@pytest.mark.parametrize(("objective", "key"), pairs())
def test_a_key_the_objective_does_not_read_stops_the_run_at_load(tmp_path, capsys, objective, key) -> None:
    raw = base_raw(objective)
    raw["training"] = {"output_dir": str(tmp_path / "run"), "eval_strategy": "steps"}  # as generate_every needs
    section, _, name = key.partition(".")
    if name:
        raw.setdefault(section, {})[name] = ON[key]
    else:
        raw[section] = {**raw.get(section, {}), **ON[key]}
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(raw))
    assert main(["train", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert key in err and (objective in err or f"method {raw['method']}" in err), err
    assert not (tmp_path / "run").exists()


def test_switching_an_absent_feature_off_is_not_an_error() -> None:
    raw = base_raw("dpo") | {"continual": {"replay_fraction": 0}, "eval": {"reference": None, "generate_every": None}}
    raw["training"] = {"packing": False, "plan": False}
    cfg = validate_config(raw)
    from lmtune.objectives import check_keys

    check_keys(cfg)  # nothing asked for: no error


def test_a_runs_config_yaml_holds_only_the_keys_its_objective_reads() -> None:
    from lmtune.config import dump_config
    from lmtune.objectives import dump_exclusions

    cfg = validate_config(base_raw("dpo"))
    dumped = yaml.safe_load(dump_config(cfg, exclude=dump_exclusions(cfg)))
    assert "continual" not in dumped and "kto" not in dumped and "packing" not in dumped["training"]
    assert dumped["dpo"]["beta"] == 0.1 and "lora" in dumped
    again = validate_config(dumped)  # the saved config trains again as it is
    from lmtune.objectives import check_keys

    check_keys(again)


def test_a_new_objective_is_its_own_module_plus_one_registry_line(monkeypatch, tmp_path, tiny_llama_dir) -> None:
    """A toy objective (supervised answers, without the prompt in the loss kept by lmtune's step) registered
    by name runs through the one run: preflight, load, method, trainer, save, measures, report."""
    from helpers import EVAL_ROWS, TRAIN_ROWS, tiny_run_raw, write_jsonl
    from transformers import Trainer

    import lmtune.config.objectives as config_objectives
    import lmtune.config.run as config_run
    from lmtune.data.collate import PadCollator
    from lmtune.objectives import sft
    from lmtune.pipeline import finetune
    from lmtune.train import guarded, training_arguments

    seen: dict[str, Any] = {}

    def trainer(model: Any, tokenizer: Any, task: Task, cfg: Any, callbacks: list, echo: Any) -> Built:
        seen["trainer"] = True
        collate = PadCollator(tokenizer.pad_token_id)
        toy = guarded(Trainer, None)(model=model, args=training_arguments(cfg), train_dataset=task.train,
                                     data_collator=collate, callbacks=callbacks)  # fmt: skip
        return Built(toy)

    toy = Objective(name="toy", prepare=sft.prepare, trainer=trainer, measures=sft.measures, unused=("training.plan",))
    names = (*config_objectives.OBJECTIVES, "toy")
    monkeypatch.setattr(config_run, "OBJECTIVES", names)  # the config's list of names ...
    monkeypatch.setitem(OBJECTIVES, "toy", toy)  # ... and the one registry line
    raw = tiny_run_raw(tiny_llama_dir, write_jsonl(tmp_path / "t.jsonl", TRAIN_ROWS),
                       write_jsonl(tmp_path / "e.jsonl", EVAL_ROWS), tmp_path / "run")  # fmt: skip
    raw.update(objective="toy")
    raw["eval"].update(metrics=["perplexity"], reference=None)
    cfg = validate_config(raw)
    assert objective_of(cfg) is toy
    metrics = finetune(cfg, echo=lambda *_: None)
    assert seen["trainer"] and metrics["run"]["objective"] == "toy" and metrics["run"]["steps"] == 3
    assert metrics["finetuned"]["perplexity"] < metrics["base"]["perplexity"]
    assert (tmp_path / "run" / "adapter_model.safetensors").is_file()
