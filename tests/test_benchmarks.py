"""lm-eval benchmarks: local task YAMLs scored on the tiny model, checked against log-likelihoods computed here.

The tasks read a small JSONL through ``datasets``' json builder, so nothing needs the hub; the hub tasks are
only checked for failing fast, offline, in one line.
"""

from __future__ import annotations

import json
import math
import statistics
import time
from pathlib import Path
from typing import Any

import pytest
import torch

from lmtune.errors import ConfigError
from lmtune.evaluate.benchmarks import HubUnreachable, compare_benchmarks, load_benchmarks, run_benchmarks

pytest.importorskip("lm_eval")

DOCS = [
    {"question": f"What is {i} plus {i}?", "choices": [str(2 * i), str(2 * i + 1), "blue"], "answer": i % 3}
    for i in range(8)
]
TEXT = 'doc_to_text: "Question: {{question}}\\nAnswer:"'
TASKS = {
    # process_docs's !function tag: the YAML reader must tolerate lm-eval's tags
    "mc": f"""output_type: multiple_choice
process_docs: !function helpers_for_yaml.keep
{TEXT}
doc_to_choice: "{{{{choices}}}}"
doc_to_target: answer
metric_list: [{{metric: acc, aggregation: mean, higher_is_better: true}}]
""",
    "ll": f"""output_type: loglikelihood
{TEXT}
doc_to_target: "{{{{' ' + choices[answer]}}}}"
metric_list: [{{metric: perplexity, aggregation: perplexity, higher_is_better: false}}]
""",
    "gen": f"""output_type: generate_until
{TEXT}
doc_to_target: "{{{{choices[answer]}}}}"
generation_kwargs: {{until: ["\\n"], max_gen_toks: 8, do_sample: false}}
metric_list: [{{metric: exact_match, aggregation: mean, higher_is_better: true}}]
filter_list:
  - {{name: strict-match, filter: [{{function: regex, regex_pattern: "(\\\\d+)"}}, {{function: take_first}}]}}
""",
}


@pytest.fixture
def task_dir(tmp_path: Path) -> Path:
    """docs.jsonl and the task YAMLs tiny_mc, tiny_ll and tiny_gen (json builder, datasets cache in tmp_path)."""
    (tmp_path / "docs.jsonl").write_text("".join(json.dumps(d) + "\n" for d in DOCS), encoding="utf-8")
    (tmp_path / "helpers_for_yaml.py").write_text("def keep(dataset):\n    return dataset\n", encoding="utf-8")
    for name, body in TASKS.items():
        head = (
            f"task: tiny_{name}\ndataset_path: json\n"
            f"dataset_kwargs: {{data_files: {{test: '{tmp_path / 'docs.jsonl'}'}}, cache_dir: '{tmp_path / 'hf'}'}}\n"
            "test_split: test\n"
        )
        (tmp_path / f"{name}.yaml").write_text(head + body, encoding="utf-8")
    return tmp_path


def _loglikelihood(model: Any, tokenizer: Any, context: str, continuation: str) -> float:
    """Sum of log p(continuation token | all before), tokenised as lm-eval does: the whole text, then split."""
    whole, ctx = tokenizer.encode(context + continuation), tokenizer.encode(context)
    cont = whole[len(ctx) :]
    with torch.no_grad():
        logp = model(torch.tensor([(ctx + cont)[:-1]])).logits.float().log_softmax(-1)[0]  # (T, vocab)
    return sum(logp[len(ctx) - 1 + i, token].item() for i, token in enumerate(cont))


def _own_scores(model: Any, tokenizer: Any, n: int) -> tuple[float, float, list[list[float]]]:
    """(acc of argmax summed log-likelihood, perplexity of the right answers, every choice's log-likelihood)."""
    lls = [[_loglikelihood(model, tokenizer, f"Question: {d['question']}\nAnswer:", f" {c}") for c in d["choices"]]
           for d in DOCS[:n]]  # fmt: skip
    right = [max(range(len(row)), key=row.__getitem__) == d["answer"] for row, d in zip(lls, DOCS, strict=False)]
    nll = [-row[d["answer"]] for row, d in zip(lls, DOCS, strict=False)]
    return sum(right) / n, math.exp(statistics.mean(nll)), lls


def test_local_tasks_are_lm_evals_scores_of_this_model(task_dir, tiny_llama, tokenizer, monkeypatch):
    monkeypatch.chdir(task_dir)  # entries are relative to the current directory
    benchmarks = load_benchmarks(["mc.yaml", "ll.yaml", "gen.yaml"])
    assert benchmarks.names == ["tiny_mc", "tiny_ll", "tiny_gen"]
    tiny_llama.train()
    scores = run_benchmarks(tiny_llama, tokenizer, benchmarks, limit=4, batch_size=4)
    assert tiny_llama.training and all(m.training for m in tiny_llama.modules())  # put back as it was
    tiny_llama.eval()

    mc, ll, gen = scores["tiny_mc"], scores["tiny_ll"], scores["tiny_gen"]
    assert [s["kind"] for s in (mc, ll, gen)] == ["multiple_choice", "loglikelihood", "generate_until"]
    assert [s["samples"] for s in (mc, ll, gen)] == [4, 4, 4]
    assert set(gen["metrics"]) == {"exact_match (strict-match)"}  # the filter's name kept, "none" dropped
    assert 0 <= gen["metrics"]["exact_match (strict-match)"] <= 1
    assert isinstance(gen["stderr"]["exact_match (strict-match)"], float)

    acc, ppl, lls = _own_scores(tiny_llama, tokenizer, 4)
    assert len({round(x, 4) for row in lls for x in row}) == 12  # no ties: argmax is well defined
    assert mc["metrics"] == {"acc": pytest.approx(acc)}
    right = [max(range(3), key=row.__getitem__) == d["answer"] for row, d in zip(lls, DOCS, strict=False)]
    assert mc["stderr"]["acc"] == pytest.approx(statistics.stdev(right) / 2)  # closed form: sample sd / sqrt(n)
    assert ll["metrics"] == {"perplexity": pytest.approx(ppl, rel=1e-4)}
    assert ll["stderr"]["perplexity"] > 0  # bootstrapped (BOOTSTRAP_ITERS), in this process


def test_peft_model_scores_with_and_without_its_adapter(task_dir, tiny_llama, tokenizer):
    from peft import LoraConfig, get_peft_model

    benchmarks = load_benchmarks([str(task_dir / f"{name}.yaml") for name in ("mc", "ll", "gen")])
    base = run_benchmarks(tiny_llama, tokenizer, benchmarks, limit=4, batch_size=2)
    peft_model = get_peft_model(tiny_llama, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    torch.manual_seed(0)
    for name, param in peft_model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(param, std=1.0)  # LoRA starts as a no-op (B = 0): make it change outputs
    peft_model.eval()

    with peft_model.disable_adapter():
        inside = run_benchmarks(peft_model, tokenizer, benchmarks, limit=4, batch_size=2)
        _, base_ppl, base_lls = _own_scores(peft_model, tokenizer, 4)
    outside = run_benchmarks(peft_model, tokenizer, benchmarks, limit=4, batch_size=2)
    acc, ppl, lls = _own_scores(peft_model, tokenizer, 4)

    assert inside == base  # the adapter switched off is the base model
    assert lls != base_lls and ppl != pytest.approx(base_ppl, rel=1e-3)
    assert outside["tiny_ll"]["metrics"]["perplexity"] == pytest.approx(ppl, rel=1e-4)  # lm-eval used the adapter
    assert outside["tiny_ll"]["metrics"] != inside["tiny_ll"]["metrics"]
    assert outside["tiny_mc"]["metrics"] == {"acc": pytest.approx(acc)}


def test_what_cannot_load_fails_at_once_in_one_line(task_dir, tmp_path, monkeypatch):
    import datasets.config
    import huggingface_hub.constants

    # hermetic: an empty datasets cache, and what HF_HUB_OFFLINE=1 set at import undone: the hub probe
    # (conftest: unreachable) must switch the offline mode on, and no connection may be opened
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "empty-cache"))
    for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.setattr(datasets.config, name, False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr("socket.socket.connect", lambda *a: pytest.fail(f"network used: {a}"))

    start = time.perf_counter()  # includes indexing lm-eval's ~230 task folders (about 6 s on 2 CPU cores)
    with pytest.raises(HubUnreachable) as hub:
        load_benchmarks(["arc_easy"])
    assert time.perf_counter() - start < 60
    assert str(hub.value).startswith("eval.benchmarks: arc_easy: its dataset allenai/ai2_arc is on the Hugging Face")
    assert "offline" in str(hub.value) and "\n" not in str(hub.value)
    assert datasets.config.HF_HUB_OFFLINE is False and huggingface_hub.constants.HF_HUB_OFFLINE is False  # restored

    kept = load_benchmarks(["arc_easy", str(task_dir / "mc.yaml")], offline="skip")
    assert kept.names == ["tiny_mc"] and "offline" in kept.skipped["arc_easy"]

    with pytest.raises(ConfigError, match=r"^eval.benchmarks: unknown lm-eval task 'arc_esy' \(did you mean 'arc_e"):
        load_benchmarks(["arc_esy"])
    with pytest.raises(ConfigError, match=r"^eval.benchmarks: nowhere/task\.yaml: no such task YAML file$"):
        load_benchmarks(["nowhere/task.yaml"])
    (tmp_path / "bare.yaml").write_text("dataset_path: json\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"bare\.yaml: has no 'task:' name"):
        load_benchmarks([str(tmp_path / "bare.yaml")])
    missing = tmp_path / "missing.jsonl"  # (no data_files at all would make datasets search the whole cwd)
    bad_yaml = f"task: tiny_bad\ndataset_path: json\ndataset_kwargs: {{data_files: '{missing}'}}\n"
    (tmp_path / "bad.yaml").write_text(bad_yaml, encoding="utf-8")
    with pytest.raises(ConfigError, match=r"^eval.benchmarks: tiny_bad: cannot load \(") as bad:
        load_benchmarks([str(tmp_path / "bad.yaml")])
    assert "missing.jsonl" in str(bad.value) and "\n" not in str(bad.value)


def test_compare_benchmarks_is_tuned_minus_base_per_metric():
    base = {"arc": {"metrics": {"acc": 0.5, "acc_norm": 0.25}, "stderr": {"acc": 0.05, "acc_norm": None}},
            "gone": {"metrics": {"acc": 1.0}, "stderr": {"acc": 0.0}}}  # fmt: skip
    tuned = {"arc": {"metrics": {"acc": 0.75, "acc_norm": 0.125}, "stderr": {"acc": 0.04, "acc_norm": 0.01}}}
    assert compare_benchmarks(base, tuned) == {
        "arc": {
            "acc": {"base": 0.5, "finetuned": 0.75, "change": 0.25, "base_stderr": 0.05, "finetuned_stderr": 0.04},
            "acc_norm": {
                "base": 0.25,
                "finetuned": 0.125,
                "change": -0.125,
                "base_stderr": None,
                "finetuned_stderr": 0.01,
            },
        }
    }


def test_a_run_scores_base_and_tuned_on_local_tasks(tmp_path: Path, task_dir: Path, tiny_llama_dir: Path) -> None:
    """eval.benchmarks in a run: both models' scores with standard errors in metrics.json, the printed table,
    report.md and report.html; the tuned scores differ from the base ones only through training."""
    import yaml
    from helpers import EVAL_ROWS, TRAIN_ROWS, lmtune, tiny_run_raw, write_jsonl

    train, held_out = write_jsonl(tmp_path / "train.jsonl", TRAIN_ROWS), write_jsonl(tmp_path / "eval.jsonl", EVAL_ROWS)
    raw = tiny_run_raw(tiny_llama_dir, train, held_out, tmp_path / "run")
    raw["eval"].update({"benchmarks": [str(task_dir / "mc.yaml"), str(task_dir / "gen.yaml")], "benchmark_limit": 4})
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(raw), encoding="utf-8")
    done = lmtune("train", str(config))
    assert done.returncode == 0, done.stderr[-3000:]

    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    b = metrics["benchmarks"]
    for model in ("base", "finetuned"):
        mc, gen = b[model]["tiny_mc"], b[model]["tiny_gen"]
        assert mc["samples"] == gen["samples"] == 4 and mc["kind"] == "multiple_choice"
        acc, se = mc["metrics"]["acc"], mc["stderr"]["acc"]
        assert acc in (0.0, 0.25, 0.5, 0.75, 1.0)  # 4 documents
        assert se == pytest.approx(statistics.stdev([1.0] * round(4 * acc) + [0.0] * round(4 * (1 - acc))) / 2)
    change = b["change"]["tiny_mc"]["acc"]
    assert change["change"] == pytest.approx(change["finetuned"] - change["base"])
    assert b["settings"]["limit"] == 4 and b["time_s"]["base"] > 0 and b["time_s"]["finetuned"] > 0
    printed = done.stdout[done.stdout.index("what tuning cost:") :]
    row = next(line for line in printed.splitlines() if line.startswith("tiny_mc: acc"))
    assert f"{change['base']:.4f} ± {change['base_stderr']:.4f}" in row and f"{change['change']:+.4f}" in row
    for report in ("report.md", "report.html"):
        text = (tmp_path / "run" / report).read_text()
        assert "What tuning cost" in text and f"{change['finetuned']:.4f} ± {change['finetuned_stderr']:.4f}" in text


def test_a_hub_task_offline_stops_the_run_before_it_starts(tmp_path: Path, tiny_llama_dir: Path) -> None:
    import yaml
    from helpers import EVAL_ROWS, TRAIN_ROWS, lmtune, tiny_run_raw, write_jsonl

    train, held_out = write_jsonl(tmp_path / "train.jsonl", TRAIN_ROWS), write_jsonl(tmp_path / "eval.jsonl", EVAL_ROWS)
    raw = tiny_run_raw(tiny_llama_dir, train, held_out, tmp_path / "run")
    raw["eval"].update({"benchmarks": ["arc_easy"], "benchmark_limit": 10})
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(raw), encoding="utf-8")
    start = time.perf_counter()
    done = lmtune("train", str(config), timeout=120)
    assert done.returncode == 2 and time.perf_counter() - start < 60
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert lines[0].startswith("lmtune: error: eval.benchmarks: arc_easy: ") and "offline" in lines[0]
    assert not (tmp_path / "run").exists()


def test_offline_skip_leaves_hub_tasks_out_and_says_so(tmp_path: Path, task_dir: Path, tiny_llama_dir: Path) -> None:
    """benchmarks_offline: skip (the demo's): the hub task is left out with a line and a record; the local
    task is still scored on both models."""
    from helpers import EVAL_ROWS, TRAIN_ROWS, tiny_run_raw, write_jsonl

    from lmtune.config import validate_config
    from lmtune.pipeline import finetune

    train, held_out = write_jsonl(tmp_path / "train.jsonl", TRAIN_ROWS), write_jsonl(tmp_path / "eval.jsonl", EVAL_ROWS)
    raw = tiny_run_raw(tiny_llama_dir, train, held_out, tmp_path / "run")
    raw["eval"].update({"benchmarks": ["arc_easy", str(task_dir / "mc.yaml")], "benchmark_limit": 4,
                        "benchmarks_offline": "skip"})  # fmt: skip
    lines: list[str] = []
    metrics = finetune(validate_config(raw), echo=lines.append)
    b = metrics["benchmarks"]
    assert list(b["skipped"]) == ["arc_easy"] and "offline" in b["skipped"]["arc_easy"]
    assert list(b["base"]) == list(b["finetuned"]) == ["tiny_mc"]
    said = [line for line in "\n".join(lines).splitlines() if line.startswith("benchmark arc_easy skipped: ")]
    assert len(said) == 2  # when the run starts, and under the table
