"""``lmtune chat``: a real terminal session, prompt layout over turns, --compare, bad input."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pexpect
import pytest

from lmtune.errors import ExportError
from lmtune.shipping.chat import (
    Session,
    Settings,
    Side,
    answer_turn,
    check_settings,
    command,
    load_sides,
    prompt_ids,
    run_base,
    stop_ids,
    stream_answer,
)

# peft calls a transformers API deprecated in v5 when it wraps a model; not ours to fix
pytestmark = pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing` is deprecated:FutureWarning")
GREEDY = Settings(max_new_tokens=8, temperature=0.0, top_p=1.0)
ESCAPES = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")  # what a line editor may add around the prompt


def greedy_answer(model: Any, tokenizer: Any, ids: list[int], max_new_tokens: int = 8) -> str:
    """Plain, non-streamed greedy decoding, decoded the way the chat prints it."""
    import torch

    inputs = torch.tensor([ids])
    with torch.inference_mode():
        out = model.generate(
            input_ids=inputs,
            attention_mask=torch.ones_like(inputs),
            do_sample=False,
            max_new_tokens=max_new_tokens,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
            temperature=None,
            top_p=None,
            top_k=None,
        )
    return tokenizer.decode(out[0, len(ids) :], skip_special_tokens=True)


def text_of(side: Side, ids: list[int]) -> str:
    return side.tokenizer.decode(ids)


@pytest.fixture(scope="module")
def adapter_run(tmp_path_factory: pytest.TempPathFactory, tiny_llama_dir: Path) -> Path:
    """An untrained LoRA run folder on the tiny Llama; random LoRA weights, so its answers differ."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(tiny_llama_dir)
    lora = LoraConfig(r=4, lora_alpha=64, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    run = tmp_path_factory.mktemp("adapter-run")
    get_peft_model(base, lora).save_pretrained(run)
    AutoTokenizer.from_pretrained(tiny_llama_dir).save_pretrained(run)
    assert json.loads((run / "adapter_config.json").read_text())["base_model_name_or_path"] == str(tiny_llama_dir)
    return run


# --------------------------------------------------------------------------- the terminal


def test_terminal_session_streams_the_greedy_answer(tiny_llama_dir: Path) -> None:
    env = {**os.environ, "TERM": "dumb"}
    child = pexpect.spawn(
        sys.executable,
        ["-m", "lmtune", "chat", str(tiny_llama_dir), "--max-new-tokens", "8"],
        env=env,
        encoding="utf-8",
        timeout=30,
    )
    try:
        child.expect_exact("lmtune chat with", timeout=60)
        child.expect_exact("you> ", timeout=60)
        child.sendline("Hello there")
        child.expect_exact("assistant> ")
        child.expect_exact("you> ")
        streamed = ESCAPES.sub("", child.before).replace("\r\n", "\n")
        child.sendline("/reset")
        child.expect_exact("history cleared")
        child.expect_exact("you> ")
        child.sendline("/quit")
        child.expect(pexpect.EOF)
    finally:
        child.close()
    assert child.exitstatus == 0

    (side,) = load_sides(str(tiny_llama_dir))
    expected = greedy_answer(side.model, side.tokenizer, prompt_ids(side, None, "Hello there"))
    assert expected.strip(), "the random model should say something"
    assert streamed == expected + "\n"


def test_ctrl_c_stops_the_answer_and_the_generation(tiny_llama_dir: Path) -> None:
    (side,) = load_sides(str(tiny_llama_dir))
    seen: list[str] = []

    def interrupted(piece: str) -> None:
        seen.append(piece)
        raise KeyboardInterrupt

    ids = prompt_ids(side, None, "Hello")
    assert stream_answer(side, ids, Settings(64, 0.0, 1.0), interrupted) is None
    assert len(seen) == 1
    # the model is free again and answers the same as before
    again: list[str] = []
    assert stream_answer(side, ids, GREEDY, again.append) == greedy_answer(side.model, side.tokenizer, ids)


# --------------------------------------------------------------------------- prompts over turns


def test_second_turn_prompt_holds_the_first_turn(tiny_llama_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    session = Session(load_sides(str(tiny_llama_dir)), system=None)
    answer_turn(session, "What is two plus two?", GREEDY)
    first = capsys.readouterr().out
    (side,) = session.sides
    answer = side.history[1]["content"]
    assert first == f"assistant> {answer}\n"
    assert side.history == [
        {"role": "user", "content": "What is two plus two?"},
        {"role": "assistant", "content": answer},
    ]

    text = text_of(side, prompt_ids(side, session.system, "And three plus three?"))
    expected_tail = (
        f"<|im_start|>user\nWhat is two plus two?<|im_end|>\n<|im_start|>assistant\n{answer}<|im_end|>\n"
        "<|im_start|>user\nAnd three plus three?<|im_end|>\n<|im_start|>assistant\n"
    )
    assert text.endswith(expected_tail)
    assert text.startswith("<|im_start|>system\nYou are a helpful AI assistant")  # the template's default


def test_plain_layout_without_a_chat_template(plain_tokenizer: Any) -> None:
    side = Side("assistant> ", None, plain_tokenizer, "plain")
    side.history = [{"role": "user", "content": "Q1"}, {"role": "assistant", "content": "A1"}]
    text = text_of(side, prompt_ids(side, "Be brief.", "Q2"))
    eos = plain_tokenizer.eos_token
    assert text.endswith(
        f"### Instruction:\nBe brief.\n\nQ1\n\n### Response:\nA1{eos}### Instruction:\nQ2\n\n### Response:\n"
    )


def test_system_command_changes_the_prompt(tokenizer: Any, capsys: pytest.CaptureFixture[str]) -> None:
    side = Side("assistant> ", None, tokenizer, "chat")
    side.history = [{"role": "user", "content": "Q1"}, {"role": "assistant", "content": "A1"}]
    session = Session([side], system=None)
    before = text_of(side, prompt_ids(side, session.system, "Q2"))

    assert command(session, "/system Answer in French.")
    assert "Answer in French." in capsys.readouterr().out
    assert session.system == "Answer in French." and side.history == []
    after = text_of(side, prompt_ids(side, session.system, "Q2"))
    assert after != before
    assert after.startswith("<|im_start|>system\nAnswer in French.<|im_end|>\n<|im_start|>user\nQ2")
    assert "SmolLM" not in after

    # "" means no system message, as in training (an empty turn, since the template adds a default one)
    assert "SmolLM" not in text_of(side, prompt_ids(side, "", "Q2"))


def test_other_commands(tokenizer: Any, capsys: pytest.CaptureFixture[str]) -> None:
    side = Side("assistant> ", None, tokenizer, "chat", history=[{"role": "user", "content": "Q1"}])
    session = Session([side], system=None)
    assert command(session, "/help") and "/reset" in capsys.readouterr().out
    assert command(session, "/nope") and capsys.readouterr().out == "unknown command /nope: /help lists the commands\n"
    assert command(session, "/reset") and capsys.readouterr().out == "history cleared\n" and side.history == []
    assert not command(session, "/quit")


def test_stop_ids_add_the_templates_end_of_turn(tiny_llama_dir: Path) -> None:
    from lmtune.models import load_tokenizer

    tok = load_tokenizer(tiny_llama_dir)
    im_end = tok.convert_tokens_to_ids("<|im_end|>")
    assert stop_ids(Side("", None, tok, "chat")) == [im_end]  # SmolLM2: EOS is the turn end
    tok.eos_token = "<|endoftext|>"  # as in templates whose turn end is not EOS (Llama 3's <|eot_id|>)
    assert stop_ids(Side("", None, tok, "chat")) == [tok.convert_tokens_to_ids("<|endoftext|>"), im_end]
    assert stop_ids(Side("", None, tok, "plain")) == [tok.eos_token_id]


# --------------------------------------------------------------------------- --compare


def test_compare_adapter_run_answers_as_base_then_fine_tuned(
    adapter_run: Path, tiny_llama_dir: Path, tiny_llama: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    base = run_base(str(adapter_run))
    assert base == (str(tiny_llama_dir), True)
    sides = load_sides(str(adapter_run), base)
    assert [s.label for s in sides] == ["base> ", "fine-tuned> "]
    assert sides[0].model is sides[1].model  # the base is not loaded twice

    ids = prompt_ids(sides[0], None, "Hello there")
    session = Session(sides, system=None)
    answer_turn(session, "Hello there", GREEDY)
    out = capsys.readouterr().out
    base_answer, tuned_answer = (s.history[1]["content"] for s in sides)
    assert out == f"base> {base_answer}\nfine-tuned> {tuned_answer}\n"

    assert base_answer == greedy_answer(tiny_llama, sides[0].tokenizer, ids)
    assert tuned_answer == greedy_answer(sides[1].model, sides[1].tokenizer, ids)  # adapter on again
    assert tuned_answer != base_answer
    # each side continues its own conversation
    base_next, tuned_next = (text_of(s, prompt_ids(s, None, "Next")) for s in sides)
    assert base_answer in base_next and tuned_answer not in base_next
    assert tuned_answer in tuned_next and base_answer not in tuned_next


def test_compare_full_fine_tune_loads_the_base_from_config(tmp_path: Path, tiny_llama_dir: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(tiny_llama_dir, run)
    (run / "config.yaml").write_text(f"model:\n  name: {tiny_llama_dir}\n", encoding="utf-8")
    base = run_base(str(run))
    assert base == (str(tiny_llama_dir), False)
    sides = load_sides(str(run), base)
    assert sides[0].model is not sides[1].model and not sides[0].adapter_off


def test_compare_needs_a_run_folder(tiny_llama_dir: Path) -> None:
    with pytest.raises(ExportError, match="--compare: .* is not a run folder"):
        run_base(str(tiny_llama_dir))


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ((0, 0.0, 1.0), "--max-new-tokens: must be at least 1, got 0"),
        ((8, -0.5, 1.0), "--temperature: must be >= 0, got -0.5"),
        ((8, float("nan"), 1.0), "--temperature: must be >= 0, got nan"),
        ((8, 0.7, 0.0), "--top-p: must be in (0, 1], got 0.0"),
    ],
)
def test_settings_are_checked(settings: tuple[int, float, float], message: str) -> None:
    with pytest.raises(ExportError, match=re.escape(message)):
        check_settings(*settings)
    assert check_settings(1, 0.7, 1.0) == Settings(1, 0.7, 1.0)


# --------------------------------------------------------------------------- bad input on the command line


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["{model}", "--compare"],
            "--compare: {model} is not a run folder (no adapter_config.json, nor a config.yaml naming model.name)",
        ),
        (["{model}", "--top-p", "1.5"], "--top-p: must be in (0, 1], got 1.5"),
        (["{missing}"], "MODEL {missing}: no such file or folder"),
    ],
    ids=["compare-plain-folder", "top-p", "missing-path"],
)
def test_bad_input_is_one_line_and_status_2(
    args: list[str], message: str, tiny_llama_dir: Path, tmp_path: Path
) -> None:
    where = {"model": str(tiny_llama_dir), "missing": str(tmp_path / "missing")}
    cmd = [sys.executable, "-m", "lmtune", "chat", *(a.format(**where) for a in args)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [f"lmtune: error: {message.format(**where)}"]
    assert done.stdout == ""
