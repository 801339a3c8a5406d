"""Every fine-tuning method end to end on tiny random models: train, save, reload without lmtune.

Each method is run through ``lmtune.pipeline.finetune``; the saved run folder must load back
with plain PEFT / Transformers to the very model that was trained in memory, the
trainable-parameter count shown must be PEFT's (or torch's) own, and training must have
moved exactly the parameters the method says it trains.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import pytest
import torch
from helpers import write_jsonl

from lmtune import build, pipeline, preflight
from lmtune.config import ModelConfig, validate_config
from lmtune.errors import ConfigError
from lmtune.methods import METHODS, PEFT_METHODS, MethodContext, apply_method, count_parameters
from lmtune.methods import SECTIONS as METHOD_SECTIONS
from lmtune.models import load_model

# names of the parameters each PEFT family adds (and nothing else may be trained)
ADAPTER_MARKS = ("lora_", "ia3_", "prompt_encoder")
PROMPT_METHODS = {"prompt_tuning", "p_tuning"}  # virtual tokens are prepended to the input
PREFIX_METHODS = {"prefix_tuning", "p_tuning_v2"}  # key/value prefixes: same output length
NUM_VIRTUAL = 4
TRAINED_METHODS = sorted(set(METHODS) - {"qlora"})

COLORS = ["red", "blue", "green", "black", "white", "pink", "gray", "brown"]
TRAIN_ROWS = [
    *({"prompt": f"What is the color {c} in capitals?", "completion": f"{c.upper()}."} for c in COLORS),
    *({"prompt": f"Spell the word {c} backwards.", "completion": f"{c[::-1]}."} for c in COLORS),
]
EVAL_ROWS = [
    {"prompt": "What is the color teal in capitals?", "completion": "TEAL."},
    {"prompt": "Spell the word teal backwards.", "completion": "laet."},
    {"prompt": "What is the color gold in capitals?", "completion": "GOLD."},
    {"prompt": "Spell the word gold backwards.", "completion": "dlog."},
]


# --------------------------------------------------------------------------- helpers


@pytest.fixture
def data_files(tmp_path: Path) -> tuple[Path, Path]:
    folder = tmp_path / "data"
    folder.mkdir()
    return write_jsonl(folder / "train.jsonl", TRAIN_ROWS), write_jsonl(folder / "eval.jsonl", EVAL_ROWS)


def method_raw(model_dir: Path, data: tuple[Path, Path], out: Path, method: str) -> dict[str, Any]:
    """A run config for ``method``, sized for a few seconds on a tiny model."""
    train, held_out = data
    sections = {
        "lora": {"r": 4, "alpha": 8, "dropout": 0.0, "target_modules": "all-linear"},
        "freeze": {"last_n_layers": 1, "modules": ["norm"]},
        "adalora": {"init_r": 4, "target_r": 2, "tinit": 1, "tfinal": 1, "dropout": 0.0},
        "prompt_tuning": {"num_virtual_tokens": NUM_VIRTUAL},
        "p_tuning": {"num_virtual_tokens": NUM_VIRTUAL, "encoder_hidden_size": 16},
        "prefix_tuning": {"num_virtual_tokens": NUM_VIRTUAL},
    }
    own = METHOD_SECTIONS.get(method)  # a section the method does not read is an error
    return {
        "seed": 0,
        "model": {"name": str(model_dir), "dtype": "float32"},
        "method": method,
        **({own: sections[own]} if own in sections else {}),
        "data": {"train": str(train), "eval": str(held_out), "max_length": 64},
        "training": {
            "output_dir": str(out),
            "max_steps": 4,
            "per_device_train_batch_size": 4,
            "learning_rate": 1e-2,
            "logging_steps": 1,
            "save_strategy": "no",
            "dataloader_num_workers": 0,
        },
        "eval": {"max_samples": 2, "max_new_tokens": 4, "batch_size": 4, "base": False},
    }


def run_finetune(monkeypatch, raw: dict[str, Any]) -> dict[str, Any]:
    """finetune() with a spy on apply_method: the trained model, its trainable weights before
    training, the method context and the echoed lines come back with the metrics."""
    seen: dict[str, Any] = {}
    real_apply = pipeline.apply_method

    def spy(model: Any, cfg: Any, ctx: MethodContext | None = None) -> Any:
        model = real_apply(model, cfg, ctx)
        seen["model"], seen["ctx"] = model, ctx
        seen["initial"] = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
        return model

    monkeypatch.setattr(pipeline, "apply_method", spy)
    lines: list[str] = []
    seen["metrics"] = pipeline.finetune(validate_config(raw), echo=lines.append)
    seen["lines"] = lines
    seen["model"].eval()
    return seen


def shown_count(lines: list[str]) -> tuple[int, int]:
    (line,) = [x for x in lines if x.startswith("method:")]
    found = re.search(r"trainable params: ([\d,]+) / ([\d,]+)", line)
    assert found, line
    return int(found.group(1).replace(",", "")), int(found.group(2).replace(",", ""))


def probe_ids(tokenizer: Any) -> torch.Tensor:
    """Token ids of a probe sentence (both tiny models carry the same real tokenizer)."""
    return torch.tensor([tokenizer("What is the color red in capitals? RED.", add_special_tokens=False)["input_ids"]])


def logits_of(model: Any, ids: torch.Tensor) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return model(input_ids=ids).logits


def close(actual: torch.Tensor, expected: torch.Tensor) -> None:
    torch.testing.assert_close(actual, expected, atol=1e-5, rtol=1e-5)


def check_method_run(monkeypatch, model_dir: Path, tokenizer: Any, raw: dict[str, Any]) -> dict[str, Any]:
    """Train with ``raw``, then check files, reloads, counts and what was trained; returns the spy's record."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    method = raw["method"]
    out = Path(raw["training"]["output_dir"])
    seen = run_finetune(monkeypatch, raw)
    trained, metrics, lines = seen["model"], seen["metrics"], seen["lines"]
    is_peft = method in PEFT_METHODS

    # (a) what the run folder holds
    if is_peft:
        assert (out / "adapter_config.json").is_file()
        assert (out / "adapter_model.safetensors").is_file()
        assert not (out / "model.safetensors").exists()
        adapter = json.loads((out / "adapter_config.json").read_text())
        assert Path(adapter["base_model_name_or_path"]) == model_dir
    else:
        assert (out / "model.safetensors").is_file()
        assert (out / "config.json").is_file()
        assert not (out / "adapter_config.json").exists()

    # (b) plain PEFT / Transformers (no lmtune), lmtune's loader and the in-memory model agree
    ids = probe_ids(tokenizer)
    base_model = AutoModelForCausalLM.from_pretrained(model_dir)
    base_logits = logits_of(base_model, ids)
    if is_peft:
        plain = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(model_dir), out)
    else:
        plain = AutoModelForCausalLM.from_pretrained(out)
    loaded, _, base = load_model(ModelConfig(name=str(out)))
    assert isinstance(loaded, PeftModel) == is_peft
    assert Path(base) == (model_dir if is_peft else out)
    reference = logits_of(trained, ids)
    extra = NUM_VIRTUAL if method in PROMPT_METHODS else 0
    assert reference.shape == (1, ids.shape[1] + extra, base_logits.shape[-1])
    close(logits_of(plain, ids), reference)
    close(logits_of(loaded, ids), reference)
    # ... and the trained model is not the base model (compare the positions of the real tokens)
    assert (reference[:, extra:] - base_logits).abs().max() > 1e-4

    # (c) the count shown and written is PEFT's own (torch's for full/freeze)
    if is_peft:
        expected = trained.get_nb_trainable_parameters()
    else:
        expected = (
            sum(p.numel() for p in trained.parameters() if p.requires_grad),
            sum(p.numel() for p in trained.parameters()),
        )
    assert shown_count(lines) == expected
    assert count_parameters(trained) == expected
    saved = json.loads((out / "metrics.json").read_text())
    assert saved == json.loads(json.dumps(metrics))
    assert saved["run"]["trainable_params"] == expected[0]
    assert saved["run"]["total_params"] == expected[1]
    assert saved["run"]["method"] == method
    assert 0 < expected[0] <= expected[1]

    # (d) training moved trainable weights; PEFT methods train adapter parameters only
    trainable = {n: p for n, p in trained.named_parameters() if p.requires_grad}
    assert set(trainable) == set(seen["initial"])
    assert any(not torch.equal(p.detach(), seen["initial"][n]) for n, p in trainable.items())
    base_state = base_model.state_dict()
    if is_peft:
        assert all(any(mark in n for mark in ADAPTER_MARKS) for n in trainable), sorted(trainable)
        # the base weights are frozen and untouched (wrapped layers keep theirs under ``base_layer``)
        frozen = {
            n: p for n, p in trained.get_base_model().named_parameters() if not any(m in n for m in ADAPTER_MARKS)
        }
        frozen = {n: p for n, p in frozen.items() if ".ranknum." not in n}  # AdaLoRA's rank constant
        assert {n.replace(".base_layer", "") for n in frozen} == {n for n, _ in base_model.named_parameters()}
        for name, p in frozen.items():
            assert not p.requires_grad, name
            assert torch.equal(p.detach(), base_state[name.replace(".base_layer", "")]), name
    else:
        assert any(not torch.equal(p.detach(), base_state[n]) for n, p in trainable.items())
        for name, p in trained.named_parameters():
            if not p.requires_grad:  # freeze: what it does not train keeps the base weights
                assert torch.equal(p.detach(), base_state[name]), name

    # (e) the fine-tuned model was evaluated
    assert math.isfinite(saved["finetuned"]["perplexity"]) and saved["finetuned"]["perplexity"] > 1
    assert saved["run"]["steps"] == raw["training"]["max_steps"]
    return seen


# --------------------------------------------------------------------------- every method, Llama-style


@pytest.mark.parametrize("method", TRAINED_METHODS)
def test_method_round_trip(monkeypatch, tmp_path, tiny_llama_dir, tokenizer, data_files, method):
    raw = method_raw(tiny_llama_dir, data_files, tmp_path / "run", method)
    seen = check_method_run(monkeypatch, tiny_llama_dir, tokenizer, raw)
    trained = seen["model"]
    names = [n for n, p in trained.named_parameters() if p.requires_grad]
    if method in ("lora", "dora"):
        assert all("lora_" in n for n in names)
        assert any("lora_magnitude_vector" in n for n in names) == (method == "dora")
    elif method == "adalora":
        assert {"lora_A", "lora_B", "lora_E"} <= {n.split(".")[-2] for n in names}
        check_adalora_budget(seen, tmp_path / "run")
    elif method == "ia3":
        assert all("ia3_l" in n for n in names)
    elif method in PROMPT_METHODS | PREFIX_METHODS:
        assert all("prompt_encoder" in n for n in names)
    elif method == "freeze":
        assert not any(n.startswith("model.layers.0.") and "norm" not in n for n in names)
    # the method's settings are recorded next to the count
    settings = json.loads((tmp_path / "run" / "metrics.json").read_text())["run"]["method_settings"]
    assert settings["method"] == method


# --------------------------------------------------------------------------- not Llama-only: GPT-2


@pytest.mark.parametrize("method", ["lora", "prefix_tuning"])
def test_gpt2_style_model(monkeypatch, tmp_path, tiny_gpt2_dir, tokenizer, data_files, method):
    raw = method_raw(tiny_gpt2_dir, data_files, tmp_path / "run", method)
    if "lora" in raw:
        raw["lora"]["target_modules"] = None  # PEFT's default for gpt2: c_attn
    seen = check_method_run(monkeypatch, tiny_gpt2_dir, tokenizer, raw)
    names = [n for n, p in seen["model"].named_parameters() if p.requires_grad]
    if method == "lora":
        assert names and all(".attn.c_attn.lora_" in n for n in names)
        adapter = json.loads((tmp_path / "run" / "adapter_config.json").read_text())
        assert adapter["target_modules"] == ["c_attn"]
    else:
        # the prefix embedding and, with prefix_projection (the default), its MLP
        assert "prompt_encoder.default.embedding.weight" in names
        assert all(n.startswith("prompt_encoder.default.") for n in names)


# --------------------------------------------------------------------------- freeze


def freeze_cfg(last_n_layers: int, modules: list[str]) -> Any:
    return validate_config(
        {"method": "freeze", "freeze": {"last_n_layers": last_n_layers, "modules": modules}, "data": {"train": "x"}}
    )


def test_freeze_trains_exactly_the_last_block_and_named_modules(tiny_llama):
    model = apply_method(tiny_llama, freeze_cfg(1, ["norm"]))
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    expected = {n for n, _ in model.named_parameters() if n.startswith("model.layers.1.") or "norm" in n}
    assert trainable == expected
    assert "model.norm.weight" in trainable and "model.layers.0.input_layernorm.weight" in trainable
    assert "model.layers.0.self_attn.q_proj.weight" not in trainable
    assert "model.embed_tokens.weight" not in trainable and "lm_head.weight" not in trainable


def test_freeze_without_modules_trains_only_the_last_block(tiny_gpt2_dir):
    from transformers import AutoModelForCausalLM

    model = apply_method(AutoModelForCausalLM.from_pretrained(tiny_gpt2_dir), freeze_cfg(1, []))
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {n for n, _ in model.named_parameters() if n.startswith("transformer.h.1.")}


def test_freeze_with_nothing_to_train_is_a_config_error(tiny_llama):
    with pytest.raises(ConfigError, match="freeze"):
        apply_method(tiny_llama, freeze_cfg(0, []))
    with pytest.raises(ConfigError, match="freeze"):
        apply_method(tiny_llama, freeze_cfg(0, ["no-such-module"]))


# --------------------------------------------------------------------------- AdaLoRA


def adalora_cfg(**settings: Any) -> Any:
    return validate_config({"method": "adalora", "adalora": settings, "data": {"train": "x"}})


def test_adalora_registers_its_budget_callback(tiny_llama):
    from transformers import TrainerCallback

    ctx = MethodContext(total_steps=10)
    model = apply_method(tiny_llama, adalora_cfg(init_r=4, target_r=2, tinit=0.2, tfinal=0.3), ctx)
    assert len(ctx.callbacks) == 1 and isinstance(ctx.callbacks[0], TrainerCallback)
    config = model.peft_config["default"]
    assert (config.total_step, config.tinit, config.tfinal) == (10, 2, 3)  # fractions of the run's steps


@pytest.mark.parametrize(("tinit", "tfinal", "total"), [(2, 2, 4), (3, 2, 4), (0.5, 0.5, 10), (0, 0, 0)])
def test_adalora_schedule_longer_than_the_run_is_a_config_error(tiny_llama, tinit, tfinal, total):
    ctx = MethodContext(total_steps=total)
    with pytest.raises(ConfigError, match="adalora") as e:
        apply_method(tiny_llama, adalora_cfg(tinit=tinit, tfinal=tfinal), ctx)
    assert "\n" not in str(e.value)
    assert not ctx.callbacks


def test_adalora_schedule_checked_against_the_run_steps(monkeypatch, tmp_path, tiny_llama_dir, data_files):
    raw = method_raw(tiny_llama_dir, data_files, tmp_path / "run", "adalora")
    raw["adalora"].update(tinit=2, tfinal=2)  # 2 + 2 >= max_steps 4
    with pytest.raises(ConfigError, match=r"adalora: .*4 steps"):
        pipeline.finetune(validate_config(raw), echo=lambda _: None)
    assert not (tmp_path / "run" / "metrics.json").exists()


def check_adalora_budget(seen: dict[str, Any], out: Path) -> None:
    """init_r 4 -> target_r 2 over 4 steps (tinit 1, tfinal 1): the budget callback ran and fixed
    the ranks, the kept ranks add up to the target budget, and the saved adapter records them."""
    assert len(seen["ctx"].callbacks) == 1
    pattern = seen["model"].peft_config["default"].rank_pattern
    assert pattern, "update_and_allocate never fixed the rank budget"
    assert all(len(mask) == 4 for mask in pattern.values())  # init_r slots per adapted matrix
    ranks = {name.replace(".default", ""): sum(mask) for name, mask in pattern.items()}
    assert sum(ranks.values()) == 2 * len(pattern)  # target_r per matrix, on average
    assert min(ranks.values()) < 4
    saved = json.loads((out / "adapter_config.json").read_text())
    assert {name: sum(mask) for name, mask in saved["rank_pattern"].items()} == ranks
    # the adapter weights were saved cut to those ranks (PEFT resizes them back on load)
    from safetensors.torch import load_file

    weights = load_file(out / "adapter_model.safetensors")
    for name, rank in ranks.items():
        (key,) = [k for k in weights if k.endswith("." + name)]
        assert weights[key].shape[0] == rank, key


# --------------------------------------------------------------------------- QLoRA without a GPU


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only refusal")
def test_qlora_on_cpu_fails_in_one_line_before_loading(monkeypatch, tmp_path, tiny_llama_dir, data_files, capsys):
    import yaml

    from lmtune.cli import main

    def must_not_run(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("qlora on CPU must fail before data or model loading")

    monkeypatch.setattr(build, "load_model", must_not_run)
    monkeypatch.setattr(preflight, "load_task_data", must_not_run)
    cfg = tmp_path / "run.yaml"
    cfg.write_text(yaml.safe_dump(method_raw(tiny_llama_dir, data_files, tmp_path / "run", "lora")))
    assert main(["train", str(cfg), "--set", "method=qlora"]) == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("lmtune: error:") and "CUDA" in lines[0] and "qlora" in lines[0]
    assert "Traceback" not in err
    assert not (tmp_path / "run").exists()


# --------------------------------------------------------------------------- config sections


def config_error(raw: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as e:
        validate_config(raw)
    message = str(e.value)
    assert "\n" not in message, message
    return message


@pytest.mark.parametrize(
    ("section", "key", "suggestion"),
    [
        ("adalora", "init_rank", "init_r"),
        ("lora", "rank", None),
        ("lora", "lora_alpha", "alpha"),
        ("freeze", "last_n_layer", "last_n_layers"),
        ("ia3", "target_module", "target_modules"),
        ("prompt_tuning", "num_virtual_token", "num_virtual_tokens"),
        ("p_tuning", "encoder_hidden", "encoder_hidden_size"),
        ("prefix_tuning", "prefix_projections", "prefix_projection"),
    ],
)
def test_unknown_key_in_a_method_section(section, key, suggestion):
    message = config_error({"method": "adalora", section: {key: 1}, "data": {"train": "x"}})
    assert f"{section}.{key}: unknown key" in message
    if suggestion:
        assert f"did you mean '{suggestion}'" in message


@pytest.mark.parametrize("method", sorted(METHODS))
def test_every_registered_method_is_a_valid_config(method):
    assert validate_config({"method": method, "data": {"train": "x"}}).method == method


def test_dora_is_accepted_and_reads_the_lora_section():
    cfg = validate_config({"method": "dora", "lora": {"r": 2}, "data": {"train": "x"}})
    assert cfg.method == "dora" and cfg.lora.r == 2


@pytest.mark.parametrize(
    ("typo", "meant"), [("lorra", "lora"), ("adalor", "adalora"), ("prefix-tuning", "prefix_tuning")]
)
def test_misspelt_method_suggests_the_right_one(typo, meant):
    message = config_error({"method": typo, "data": {"train": "x"}})
    assert "method:" in message and f"did you mean '{meant}'" in message


def test_adalora_fractions_and_bad_values():
    assert "adalora.target_r" in config_error({"adalora": {"target_r": 0}, "data": {"train": "x"}})
    assert "freeze.last_n_layers" in config_error({"freeze": {"last_n_layers": -1}, "data": {"train": "x"}})
    assert "p_tuning.encoder_reparameterization_type" in config_error(
        {"p_tuning": {"encoder_reparameterization_type": "GRU"}, "data": {"train": "x"}}
    )
