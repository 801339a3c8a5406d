"""The speed levers of ``lmtune.speed`` and the fused loss: each exact (or equal in distribution) to the plain path.

Each lever has its own switch; a short run with it on logs the losses of the same run with it off,
within a tolerance that says what the lever changes: nothing but float rounding (fused loss, attention
kernel), the random dropout masks (fast dropout), or bfloat16 arithmetic (mixed precision).
"""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
import torch
from helpers import tiny_run_raw
from test_speed import examples, grads, load, with_lora

from lmtune.config import validate_config
from lmtune.data.collate import PackCollator
from lmtune.loss import causal_lm_loss, fusable_head, loss_parts
from lmtune.pipeline import finetune
from lmtune.speed.attention import EAGER_MAX_LENGTH, attention_for
from lmtune.speed.dropout import LEVELS, fast_dropout_class, use_fast_dropout
from lmtune.speed.head import contiguous_head_input
from lmtune.speed.norm import use_fused_norm

# --------------------------------------------------------------------------- fused loss


@pytest.mark.parametrize("lora", [False, True], ids=["full-tied-head", "lora"])
def test_fused_loss_equals_the_checkpointed_chunks_and_their_gradients(tiny_llama_dir, lora):
    model = load(tiny_llama_dir)
    model = with_lora(model) if lora else model
    parts = loss_parts(model)
    assert fusable_head(parts[1])
    batch = PackCollator()(examples(model.config.vocab_size))
    for items in (None, torch.tensor(40)):
        expected = causal_lm_loss(*parts, batch, items, chunk_size=7)
        expected.backward()
        expected_grads = grads(model)
        got = causal_lm_loss(*parts, batch, items, chunk_size=7, fused=True)
        (2 * got).backward()  # backward scales the kept gradients by the incoming one
        got_grads = grads(model)
        torch.testing.assert_close(got, expected, rtol=1e-6, atol=0)
        assert set(got_grads) == set(expected_grads)
        if not lora:
            assert "lm_head.weight" in got_grads or "model.embed_tokens.weight" in got_grads  # the head trains
        for name, g in expected_grads.items():
            torch.testing.assert_close(got_grads[name], 2 * g, rtol=1e-5, atol=1e-6, msg=name)


def test_fused_loss_without_gradients_is_the_plain_chunked_loss(tiny_llama_dir):
    model = load(tiny_llama_dir)
    parts = loss_parts(model)
    batch = PackCollator()(examples(model.config.vocab_size))
    with torch.no_grad():
        assert causal_lm_loss(*parts, batch, fused=True) == causal_lm_loss(*parts, batch)


def test_heads_with_a_bias_or_an_adapter_keep_the_checkpointed_path():
    assert fusable_head(torch.nn.Linear(4, 8, bias=False))
    assert not fusable_head(torch.nn.Linear(4, 8, bias=True))
    assert not fusable_head(torch.nn.Sequential(torch.nn.Linear(4, 8, bias=False)))


# --------------------------------------------------------------------------- fast dropout


def test_fast_dropout_keeps_one_minus_p_and_scales_the_kept_to_keep_the_mean():
    drop = fast_dropout_class()(0.05).train()
    x = torch.ones(1000, 1000)
    torch.manual_seed(0)
    y = drop(x)
    kept = y != 0
    p = round(0.05 * LEVELS) / LEVELS
    sigma = (p * (1 - p) / x.numel()) ** 0.5
    assert abs((1 - kept.float().mean().item()) - p) < 5 * sigma  # the drop rate is p, to 2**-15
    torch.testing.assert_close(y[kept], torch.full_like(y[kept], 1 / (1 - p)))  # kept ones scaled exactly
    assert abs(y.mean().item() - 1) < 5 * sigma / (1 - p)  # expected output = input, as nn.Dropout
    torch.manual_seed(0)
    assert torch.equal(drop(x), y)  # seeded: the same masks again
    rows = kept.float().mean(dim=1)
    assert rows.std() < 0.01  # no position-dependent bias from the 64-bit words' layout
    assert drop.eval()(x) is x


def test_fast_dropout_gradient_is_the_mask_times_the_scale():
    drop = fast_dropout_class()(0.25).train()
    x = torch.randn(64, 33, requires_grad=True)  # an element count not a multiple of four
    y = drop(x)
    y.sum().backward()
    torch.testing.assert_close(x.grad, (y != 0).float() * LEVELS / (LEVELS - round(0.25 * LEVELS)))


def test_use_fast_dropout_replaces_the_adapters_dropout_only(tiny_llama_dir):
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(
        load(tiny_llama_dir), LoraConfig(r=4, lora_dropout=0.1, target_modules=["q_proj", "v_proj", "down_proj"])
    )
    layers = model.config.num_hidden_layers
    assert use_fast_dropout(model) == 3 * layers
    fast = fast_dropout_class()
    drops = [m.lora_dropout["default"] for m in model.modules() if hasattr(m, "lora_dropout")]
    assert len(drops) == 3 * layers and all(type(d) is fast and d.p == 0.1 for d in drops)
    no_dropout = get_peft_model(load(tiny_llama_dir), LoraConfig(r=4, lora_dropout=0.0, target_modules=["q_proj"]))
    assert use_fast_dropout(no_dropout) == 0  # PEFT's Identity stays


# --------------------------------------------------------------------------- fused RMSNorm


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_fused_norm_gives_the_modules_output_and_gradients(dtype):
    from transformers.models.llama.modeling_llama import LlamaRMSNorm

    torch.manual_seed(0)
    plain = LlamaRMSNorm(64, eps=1e-5).to(dtype)
    plain.weight.data.normal_()
    fused = copy.deepcopy(plain)
    assert use_fused_norm(torch.nn.Sequential(fused)) == 1
    x = torch.randn(3, 5, 64, dtype=dtype, requires_grad=True)
    x2 = x.detach().clone().requires_grad_()
    g = torch.randn(3, 5, 64, dtype=dtype)
    plain(x).backward(g)
    y = fused(x2)
    y.backward(g)
    assert torch.equal(y, plain(x))
    tol = 1e-6 if dtype == torch.float32 else 1e-2
    torch.testing.assert_close(x2.grad, x.grad, rtol=tol, atol=tol)
    torch.testing.assert_close(fused.weight.grad, plain.weight.grad, rtol=tol, atol=tol)


def test_fused_norm_leaves_norms_with_another_formula():
    from transformers.models.gemma.modeling_gemma import GemmaRMSNorm

    norm = GemmaRMSNorm(64)  # x * (1 + weight): a different module, not patched
    assert use_fused_norm(torch.nn.Sequential(norm)) == 0


# --------------------------------------------------------------------------- attention choice


def test_auto_attention_is_eager_only_for_short_rows_on_a_cpu():
    assert attention_for("auto", EAGER_MAX_LENGTH, on_cpu=True) == "eager"
    assert attention_for("auto", EAGER_MAX_LENGTH + 1, on_cpu=True) is None  # the library's SDPA
    assert attention_for("auto", 128, on_cpu=False) is None
    assert attention_for("sdpa", 128, on_cpu=True) == "sdpa"


# --------------------------------------------------------------------------- contiguous head input


def test_head_gets_a_contiguous_input_and_gives_the_same_logits():
    head = torch.nn.Linear(16, 64, bias=False).to(torch.bfloat16)
    model = type("Tiny", (), {"get_output_embeddings": lambda self: head})()
    hidden = torch.randn(4, 5, 16, dtype=torch.bfloat16)
    last = hidden[:, -1:, :]  # generate's logits_to_keep=1 view
    assert not last.is_contiguous()
    expected = head(last.contiguous())
    contiguous_head_input(model)
    contiguous_head_input(model)  # a second call adds nothing
    seen = []
    head.register_forward_pre_hook(lambda m, args: seen.append(args[0].is_contiguous()))  # runs after ours
    assert torch.equal(head(last), expected)
    assert seen == [True] and len(head._forward_pre_hooks) == 2


def test_generation_is_unchanged_by_the_contiguous_head(tiny_llama_dir):
    from lmtune.config import ModelConfig
    from lmtune.evaluate.generate import generate
    from lmtune.models import load_model

    model, tokenizer, _ = load_model(ModelConfig(name=str(tiny_llama_dir), dtype="bfloat16"))
    prompts = [[1, 5, 9, 13], [1, 7], [1, 2, 3]]
    patched = generate(model, tokenizer, prompts, max_new_tokens=6, batch_size=3)
    model.get_output_embeddings()._forward_pre_hooks.clear()
    assert generate(model, tokenizer, prompts, max_new_tokens=6, batch_size=3) == patched


# --------------------------------------------------------------------------- short runs, each lever on vs off

LEVERS = {
    # lever: (settings when on, settings when off, absolute tolerance on every logged loss)
    "fused_loss": ({"training": {"fused_loss": True}}, {"training": {"fused_loss": False}}, 1e-4),
    "fused_norm": ({"training": {"fused_norm": True}}, {"training": {"fused_norm": False}}, 1e-4),
    "attention": ({"model": {"attn_implementation": "eager"}}, {"model": {"attn_implementation": "sdpa"}}, 1e-4),
    # different random masks: the losses agree as two dropout seeds do (measured: 3.8e-4 apart at most)
    "fast_dropout": ({"training": {"fast_dropout": True}}, {"training": {"fast_dropout": False}}, 5e-3),
    # bfloat16 autocast against float32 adapter arithmetic, both on bfloat16 base weights (measured: 1.3e-4)
    "bf16": ({"training": {"bf16": True}}, {"training": {"bf16": False}}, 5e-3),
    "trim_memory": ({"training": {"trim_memory": True}}, {"training": {"trim_memory": False}}, 1e-6),
}


def short_run(tmp_path: Any, tiny_llama_dir: Any, task_files: Any, name: str, settings: dict) -> tuple[list, dict]:
    out = tmp_path / name
    raw = tiny_run_raw(tiny_llama_dir, *task_files, out, method="lora")
    raw["lora"]["dropout"] = 0.1
    raw["training"].update(max_steps=4, eval_strategy="steps", eval_steps=2, report_to="none")
    raw["eval"].update(base=False, metrics=["perplexity"])
    if "bf16" in settings.get("training", {}):
        raw["model"]["dtype"] = "bfloat16"  # mixed precision is compared on the base weights it is used with
    for section, values in settings.items():
        raw[section].update(values)
    metrics = finetune(validate_config(raw), echo=lambda *a: None)
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    return [(row["step"], row[key]) for row in log for key in ("loss", "eval_loss") if key in row], metrics["run"]


@pytest.mark.parametrize("lever", sorted(LEVERS))
def test_short_run_logs_the_same_losses_with_each_lever_on_and_off(tmp_path, tiny_llama_dir, task_files, lever):
    on, off, tol = LEVERS[lever]
    losses_on, run_on = short_run(tmp_path, tiny_llama_dir, task_files, "on", on)
    losses_off, run_off = short_run(tmp_path, tiny_llama_dir, task_files, "off", off)
    assert [s for s, _ in losses_on] == [s for s, _ in losses_off] and len(losses_on) == 6
    for (_, a), (_, b) in zip(losses_on, losses_off, strict=True):
        assert a == pytest.approx(b, abs=tol)
    facts = {
        "fused_loss": lambda r: r["fused_loss"],
        "attention": lambda r: r["attention"] == "eager",
        "fast_dropout": lambda r: r["fast_dropout_modules"] > 0,
        "fused_norm": lambda r: r["fused_norm_modules"] > 0,
        "bf16": lambda r: r["bf16"],
        "trim_memory": lambda r: r["memory_trim_checks"] > 0,
    }[lever]
    assert facts(run_on) and not facts(run_off)  # the switch really switched it


def test_memory_is_trimmed_only_once_it_grew_past_the_first_steps(monkeypatch):
    """Trimming after every step costs a re-fault of every page handed back; it runs only after creep."""
    from lmtune.speed import allocator, resident

    trimmed = []
    monkeypatch.setattr(allocator, "release_free_memory", lambda: trimmed.append(True) or True)
    sizes = iter([1000, 1050, 1099, 1101, 1000, 1200])
    monkeypatch.setattr(resident, "rss_bytes", lambda: next(sizes))
    callback = allocator.trim_callback(growth=0.10)
    for _ in range(6):
        callback.on_step_end(None, None, None)
    assert callback.checks == 6 and callback.trims == 2 and len(trimmed) == 2  # 1101 and 1200 are > 1000 * 1.1
