"""``lmtune export --format gguf`` of runs, opened by the real llama.cpp: merged files, adapters, Mistral."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import llamacpp
import pytest
import torch

from lmtune.shipping.export import export

pytestmark = pytest.mark.skipif(llamacpp.missing() is not None, reason=str(llamacpp.missing()))

QUIET = {"echo": lambda *_: None}


def lmtune(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lmtune", *args], capture_output=True, text=True, timeout=600)


def check_ids(run: Path, tokenizer: Any) -> list[list[int]]:
    """The run's held-out prompts laid out as in training, as the export's own check lays them out."""
    from lmtune.config import read_yaml
    from lmtune.shipping.check import check_prompts, prompt_ids

    return prompt_ids(tokenizer, read_yaml(run / "config.yaml"), check_prompts(run))


def test_adapter_gguf_with_its_base_answers_as_the_merged_gguf(lora_run: Path, tmp_path: Path, tokenizer) -> None:
    merged = export(lora_run, tmp_path / "merged", "gguf", **QUIET)
    proc = lmtune("export", str(lora_run), "--output", str(tmp_path / "lora"), "--format", "gguf", "--adapter-only")
    assert proc.returncode == 0, proc.stderr
    record = json.loads((tmp_path / "lora" / "export.json").read_text())
    assert record["check"]["passed"] and record["check"]["nmse"] < 1e-5 and record["greedy_match"] == 1.0
    base, adapter = tmp_path / "lora" / record["file"], tmp_path / "lora" / record["adapter_file"]
    assert record["adapted_matrices"] == 4 and record["lora_alpha"] == 8.0  # q_proj, v_proj on 2 layers
    assert adapter.stat().st_size < base.stat().st_size / 20
    modelfile = (tmp_path / "lora" / "Modelfile").read_text()
    assert f"FROM ./{base.name}\nADAPTER ./{adapter.name}\n" in modelfile
    ids = check_ids(lora_run, tokenizer)
    ask = {"logprobs": ids[:1], "greedy": [{"tokens": x, "max_tokens": 24} for x in ids]}
    with_adapter = llamacpp.ask(base, lora=[adapter], **ask)
    whole = llamacpp.ask(tmp_path / "merged" / merged["file"], **ask)
    without = llamacpp.ask(base, **ask)
    assert with_adapter["greedy"] == whole["greedy"]
    assert llamacpp.nmse(whole["logprobs"][0], with_adapter["logprobs"][0]) < 1e-6
    assert llamacpp.nmse(whole["logprobs"][0], without["logprobs"][0]) > 1e-4  # the adapter is what changed them


def test_adapter_only_refusals_are_one_line(lora_run: Path, tiny_llama_dir: Path, tmp_path: Path) -> None:
    cases = [
        ((str(lora_run), "--adapter-only"), "--adapter-only goes with --format gguf"),
        ((str(tiny_llama_dir), "--format", "gguf", "--adapter-only"), "holds a whole model"),
    ]
    for args, words in cases:
        out = tmp_path / "out"
        proc = lmtune("export", args[0], "--output", str(out), *args[1:])
        assert proc.returncode == 2 and words in proc.stderr, proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1 and not out.exists()


@pytest.mark.parametrize("tied", [False, True])
def test_a_mistral_model_named_mistral_exports_and_runs_in_llama_cpp(tmp_path: Path, tied: bool) -> None:
    """A user's report: an untied Mistral stopped the export's own check with a traceback from transformers' reader
    ("Unknown gguf model_type: mistral"), which takes general.name "mistral" for an architecture it cannot map."""
    from gguf_cases import CASES, PROMPT, tiny_model, tokenizer_for

    case = CASES["mistral"]
    tokenizer = tokenizer_for(case, tmp_path / "tokenizer")
    model = tiny_model(case, tokenizer)
    if tied:
        model.lm_head.weight = model.model.embed_tokens.weight
        model.config.tie_word_embeddings = True
    folder = tmp_path / "mistral"
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    result = export(folder, tmp_path / "out", "gguf", **QUIET)
    assert result["check"]["passed"] and result["check"]["nmse"] < 1e-5
    ids = tokenizer.encode(PROMPT)
    answer = llamacpp.ask(tmp_path / "out" / result["file"], logprobs=[ids])
    with torch.no_grad():
        reference = llamacpp.log_softmax(model(torch.tensor([ids])).logits[0].numpy())
    assert llamacpp.nmse(reference, answer["logprobs"][0]) < 1e-2
