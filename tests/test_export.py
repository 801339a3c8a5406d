"""``lmtune export``: merged HF folders, int8 copies and GGUF files of tiny runs, each checked against the run."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from lmtune.shipping.export import export
from lmtune.shipping.merge import end_of_turn_ids


def lmtune(*args: str) -> subprocess.CompletedProcess:
    """The command as a user runs it: a new process."""
    return subprocess.run([sys.executable, "-m", "lmtune", *args], capture_output=True, text=True, timeout=600)


@pytest.fixture
def cli(capsys: pytest.CaptureFixture) -> Any:
    """The same command in this process (no second torch import): returns (exit status, stderr)."""
    from lmtune.cli import main

    def run(*args: str) -> subprocess.CompletedProcess:
        capsys.readouterr()
        code = main(list(args))
        err = capsys.readouterr().err
        return subprocess.CompletedProcess(
            args, code, "", "\n".join(x for x in err.splitlines() if x.startswith("lmtune"))
        )

    return run


def adapter_logits(run: Path, ids: torch.Tensor) -> torch.Tensor:
    """The run's model as PEFT loads it (float32 base + adapter), computed here independently of lmtune."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base_path = json.loads((run / "adapter_config.json").read_text())["base_model_name_or_path"]
    base = AutoModelForCausalLM.from_pretrained(base_path, dtype=torch.float32)
    with torch.no_grad():
        return PeftModel.from_pretrained(base, run).eval()(input_ids=ids).logits


def probe(tokenizer: Any) -> torch.Tensor:
    text = tokenizer.apply_chat_template([{"role": "user", "content": "Add 5 and 1."}], tokenize=False)
    return torch.tensor([tokenizer(text + "5 plus 1 is 6.", add_special_tokens=False)["input_ids"]])


def test_hf_export_equals_the_adapter_model_and_stops_like_it(lora_run: Path, tmp_path: Path, tokenizer: Any) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = tmp_path / "hf"
    result = export(lora_run, out, echo=lambda *_: None)
    record = json.loads((out / "export.json").read_text())
    assert record == json.loads(json.dumps(result))
    assert record["format"] == "hf" and record["quant"] is None
    assert record["max_abs_logit_diff"] <= 1e-4 and record["greedy_match"] == 1.0
    assert record["check"]["stored_as"] == "float32" and record["check"]["passed"] is True
    assert record["check"]["nmse"] < 1e-9 and record["check"]["accepted_degraded"] is False
    assert record["size_bytes"] == (out / "model.safetensors").stat().st_size
    assert {"model.safetensors", "tokenizer.json", "chat_template.jinja", "generation_config.json", "README.md"} <= {
        p.name for p in out.iterdir()
    }
    assert not (out / "adapter_config.json").exists() and not list(out.glob(".tmp*"))
    # loaded with plain transformers, no lmtune: the same logits as base + adapter
    merged = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    ids = probe(AutoTokenizer.from_pretrained(out))
    with torch.no_grad():
        diff = (merged(input_ids=ids).logits - adapter_logits(lora_run, ids)).abs().max().item()
    assert diff <= 1e-4
    assert tokenizer.convert_tokens_to_ids("<|im_end|>") in _as_list(merged.generation_config.eos_token_id)
    card = (out / "README.md").read_text()
    assert "lora" in card and "Before and after" in card and "max |Δlogit|" in card


def _as_list(x: Any) -> list[int]:
    return list(x) if isinstance(x, list | tuple) else [x]


def test_end_of_turn_tokens_include_the_template_turn_end_when_eos_differs(tokenizer: Any) -> None:
    assert end_of_turn_ids(tokenizer) == [tokenizer.convert_tokens_to_ids("<|im_end|>")]
    llama3_like = copy.deepcopy(tokenizer)
    llama3_like.eos_token = "<|endoftext|>"  # EOS is not what the template ends a turn with
    ids = end_of_turn_ids(llama3_like)
    assert ids == [llama3_like.convert_tokens_to_ids("<|endoftext|>"), llama3_like.convert_tokens_to_ids("<|im_end|>")]


def _adapter_folder(base_dir: Path, folder: Path, config: Any, tied: bool) -> Path:
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    if tied:
        model.config.tie_word_embeddings = True
        model.lm_head.weight = model.model.embed_tokens.weight
        base_dir = folder.parent / "tied-base"
        model.save_pretrained(base_dir)
        model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    torch.manual_seed(0)
    peft_model = get_peft_model(model, config)
    peft_model.save_pretrained(folder)
    return folder


def test_an_adapter_on_a_tied_head_is_merged_into_an_untied_copy(tiny_llama_dir: Path, tmp_path: Path, tokenizer):
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM

    config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "lm_head"], init_lora_weights=False)
    run = _adapter_folder(tiny_llama_dir, tmp_path / "adapter", config, tied=True)
    tokenizer.save_pretrained(run)
    result = export(run, tmp_path / "out", echo=lambda *_: None)
    assert result["max_abs_logit_diff"] <= 1e-4
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "out", dtype=torch.float32)
    assert merged.config.tie_word_embeddings is False
    assert not torch.equal(merged.lm_head.weight, merged.model.embed_tokens.weight)


def test_int8_copy_reloads_without_lmtune_and_reports_size_and_speed(lora_run: Path, tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM

    out = tmp_path / "int8"
    proc = lmtune("export", str(lora_run), "--output", str(out), "--quant", "int8")
    assert proc.returncode == 0, proc.stderr
    record = json.loads((out / "export.json").read_text())
    assert record["quant"] == "int8" and record["size_bytes"] < record["float_size_bytes"]
    assert record["tokens_per_s"] > 0 and record["float_tokens_per_s"] > 0
    assert record["max_abs_logit_diff"] < 0.5 and 0 <= record["greedy_match"] <= 1
    assert record["check"]["stored_as"] == "int8" and record["check"]["passed"] is True
    config = json.loads((out / "config.json").read_text())
    assert config["quantization_config"]["quant_method"] == "torchao"
    AutoModelForCausalLM.from_pretrained(out)  # plain transformers (with torchao installed)


def test_gguf_export_writes_a_checked_file_and_a_modelfile(lora_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "gguf"
    proc = lmtune("export", str(lora_run), "--output", str(out), "--format", "gguf", "--quant", "q8_0")
    assert proc.returncode == 0, proc.stderr
    record = json.loads((out / "export.json").read_text())
    assert record["format"] == "gguf" and record["quant"] == "q8_0"
    gguf_file = out / record["file"]
    assert gguf_file.stat().st_size == record["size_bytes"]
    assert 0 < record["max_abs_logit_diff"] < 1.0
    assert record["check"]["passed"] is True and 0 < record["check"]["nmse"] <= record["check"]["nmse_max"]
    assert record["files"] == sorted(p.name for p in out.iterdir())
    modelfile = (out / "Modelfile").read_text()
    assert f"FROM ./{gguf_file.name}" in modelfile and 'PARAMETER stop "<|im_end|>"' in modelfile


# --------------------------------------------------------------------------- bad input


def one_line_error(proc: subprocess.CompletedProcess, *words: str) -> None:
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("lmtune: error:"), proc.stderr
    assert "Traceback" not in proc.stderr
    for w in words:
        assert w in lines[0], lines[0]


def test_bad_export_requests_are_one_line_and_write_nothing(lora_run: Path, tmp_path: Path, cli: Any) -> None:
    out = tmp_path / "out"
    one_line_error(lmtune("export", str(tmp_path / "missing"), "--output", str(out)), "no such")
    empty = tmp_path / "empty"
    empty.mkdir()
    one_line_error(cli("export", str(empty), "--output", str(out)), "not a run folder")
    one_line_error(cli("export", str(lora_run), "--output", str(out), "--format", "gguf", "--quant", "q5_k"), "q8_0")
    one_line_error(cli("export", str(lora_run), "--output", str(out), "--quant", "q8_0"), "int8")
    assert not out.exists()
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    one_line_error(cli("export", str(lora_run), "--output", str(mine)), "not an lmtune export")
    assert [p.name for p in mine.iterdir()] == ["notes.txt"] and (mine / "notes.txt").read_text() == "keep me"
    one_line_error(cli("export", str(lora_run), "--output", str(lora_run)), "run folder itself")
    assert not list(tmp_path.glob(".tmp*"))


def test_an_architecture_the_gguf_writer_does_not_handle_is_one_line(tiny_gpt2_dir: Path, tmp_path: Path, cli: Any):
    out = tmp_path / "gguf"
    one_line_error(cli("export", str(tiny_gpt2_dir), "--output", str(out), "--format", "gguf"), "gpt2", "llama")
    assert not out.exists() and not list(tmp_path.glob(".tmp*"))


def test_an_earlier_export_is_replaced_only_with_overwrite(lora_run: Path, tmp_path: Path, cli: Any) -> None:
    out = tmp_path / "hf"
    export(lora_run, out, echo=lambda *_: None)
    one_line_error(cli("export", str(lora_run), "--output", str(out)), "--overwrite")
    before = (out / "export.json").stat().st_mtime_ns
    export(lora_run, out, overwrite=True, echo=lambda *_: None)
    assert (out / "export.json").stat().st_mtime_ns > before


def test_prompt_learning_adapters_cannot_be_merged(tiny_llama_dir: Path, tmp_path: Path, cli: Any) -> None:
    from peft import PromptTuningConfig

    config = PromptTuningConfig(num_virtual_tokens=4, task_type="CAUSAL_LM")
    run = _adapter_folder(tiny_llama_dir, tmp_path / "prompt", config, tied=False)
    out = tmp_path / "out"
    one_line_error(cli("export", str(run), "--output", str(out)), "prompt_tuning", "cannot be merged")
    assert not out.exists()


def test_the_training_system_prompt_becomes_the_template_default(tokenizer: Any) -> None:
    from lmtune.shipping.merge import bake_system_prompt

    tok = copy.deepcopy(tokenizer)
    system = 'Answer "briefly".\n{{ not a tag }}'
    assert bake_system_prompt(tok, {"data": {"system_prompt": system}})
    user = [{"role": "user", "content": "q"}]
    explicit = tokenizer.apply_chat_template([{"role": "system", "content": system}, *user], tokenize=False)
    assert tok.apply_chat_template(user, tokenize=False) == explicit
    other = [{"role": "system", "content": "other"}, *user]
    assert tok.apply_chat_template(other, tokenize=False) == tokenizer.apply_chat_template(other, tokenize=False)
    assert not bake_system_prompt(copy.deepcopy(tokenizer), {"data": {"system_prompt": None}})
