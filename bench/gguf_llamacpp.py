#!/usr/bin/env python3
"""GGUF exports measured in the real llama.cpp (node-llama-cpp 3.21.1's CPU binaries), as users run them.

Two parts, both written to ``bench/results/``:

* ``--families``: for every family lmtune writes, a random model of that family (256 wide, 4 layers, so the
  k-quant blocks apply) with a tokenizer of its kind, exported at every ``--quant``; llama.cpp's tokenisation of
  the test texts against transformers', its log-probabilities over a prompt against transformers' float32 model
  (NMSE, as llama.cpp's ``check-nmse.py``), its greedy tokens against transformers' (16 tokens), and file sizes.
* ``--demo RUN``: ``lmtune export`` of a run (the demo) as an HF folder and as GGUF at several quants; 10 held-out
  prompts answered by the HF export with plain transformers and by each GGUF in llama.cpp's chat (the file's own
  chat template, rendered by llama.cpp, with the run's system prompt): how many stop by themselves, how many
  give the HF export's text, and the file sizes.

    .venv/bin/python bench/gguf_llamacpp.py --families
    .venv/bin/python bench/gguf_llamacpp.py --demo runs/demo --work /tmp/gguf-demo
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
sys.path[:0] = [str(ROOT / "tools" / "llamacpp"), str(ROOT / "tests")]

import llamacpp  # noqa: E402
from speed import cpu_model  # noqa: E402

QUANTS = ("f32", "f16", "bf16", "q8_0", "q6_k", "q5_k_m", "q4_k_m", "q4_0")
DEMO_QUANTS = ("f16", "q8_0", "q6_k", "q5_k_m", "q4_k_m", "q4_0")
GREEDY_TOKENS = 16
DEMO_PROMPTS = 10
DEMO_NEW_TOKENS = 128


# --------------------------------------------------------------------------- families


def families(work: Path) -> list[dict[str, Any]]:
    import torch
    from gguf_cases import CASES, PROMPT, TEXTS, tiny_model, tokenizer_for

    from lmtune.shipping.gguf import write_gguf

    rows = []
    for family, case in sorted(CASES.items()):
        folder = work / family
        tokenizer = tokenizer_for(case, folder / "tokenizer")
        model = tiny_model(case, tokenizer, hidden=256, intermediate=512)
        prompt = tokenizer.encode(PROMPT)
        with torch.no_grad():
            reference = llamacpp.log_softmax(model(torch.tensor([prompt])).logits[0].float().numpy())
            greedy = model.generate(
                torch.tensor([prompt]), attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
                max_new_tokens=GREEDY_TOKENS, do_sample=False, eos_token_id=None, pad_token_id=0,
            )[0, len(prompt):].tolist()  # fmt: skip
        expected = [tokenizer.encode(text, add_special_tokens=False) for text in TEXTS]
        for quant in QUANTS:
            path = folder / f"{family}-{quant}.gguf"
            write_gguf(model, tokenizer, path, quant=quant)
            answer = llamacpp.ask(
                path, tokenize=[{"text": t} for t in TEXTS], logprobs=[prompt],
                greedy=[{"tokens": prompt, "max_tokens": GREEDY_TOKENS}],
            )  # fmt: skip
            ours = answer["greedy"][0]["tokens"]
            same = next((i for i, (a, b) in enumerate(zip(ours, greedy, strict=False)) if a != b), len(ours))
            rows.append({
                "family": family, "quant": quant, "bytes": path.stat().st_size,
                "tokenisation_equal": answer["tokens"] == expected,
                "nmse": llamacpp.nmse(reference, answer["logprobs"][0]),
                "greedy_equal_tokens": f"{same}/{len(ours)}",
                "greedy_identical": greedy[: len(ours)] == ours,
            })  # fmt: skip
            print(json.dumps(rows[-1]), flush=True)
    return rows


def families_table(rows: list[dict[str, Any]]) -> str:
    lines = ["| family | " + " | ".join(QUANTS) + " |", "| --- |" + " --- |" * len(QUANTS)]
    for family in sorted({r["family"] for r in rows}):
        cells = []
        for quant in QUANTS:
            r = next(x for x in rows if x["family"] == family and x["quant"] == quant)
            tok = "" if r["tokenisation_equal"] else " tok≠"
            cells.append(f"{r['nmse']:.1e} · {r['greedy_equal_tokens']}{tok}")
        lines.append(f"| {family} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


# --------------------------------------------------------------------------- the demo run


def demo(run: Path, work: Path) -> dict[str, Any]:
    from lmtune.config import read_yaml
    from lmtune.shipping.check import check_prompts
    from lmtune.shipping.export import export

    system = (read_yaml(run / "config.yaml").get("data") or {}).get("system_prompt")
    prompts = check_prompts(run, limit=DEMO_PROMPTS)
    result: dict[str, Any] = {"run": str(run), "system_prompt": system, "prompts": prompts, "exports": {}}
    start = time.perf_counter()
    export(run, work / "hf", "hf", None, overwrite=True, echo=lambda *_: None)
    hf = hf_answers(work / "hf", prompts)
    result["hf"] = {"seconds": round(time.perf_counter() - start, 1), "answers": hf}
    for quant in DEMO_QUANTS:
        start = time.perf_counter()
        # Every type is measured, also those whose export check fails (q4_0 of the demo run does): the
        # check's verdict is recorded below with the answers llama.cpp gives.
        record = export(run, work / quant, "gguf", quant, overwrite=True, echo=lambda *_: None, accept_degraded=True)
        seconds = time.perf_counter() - start
        path = work / quant / record["file"]
        turns = [{"system": system, "user": p, "max_tokens": DEMO_NEW_TOKENS} for p in prompts]
        answers = llamacpp.ask(path, context=1024, chat=turns)["chat"]
        same = sum(a["text"].strip() == h["text"] for a, h in zip(answers, hf, strict=True))
        result["exports"][quant] = {
            "bytes": path.stat().st_size, "export_seconds": round(seconds, 1),
            "stopped": sum(a["stopped"] for a in answers), "same_as_hf": same, "answers": answers,
            "export_check": {k: record.get(k) for k in ("greedy_match", "max_abs_logit_diff", "check")},
        }  # fmt: skip
        print(quant, json.dumps({k: v for k, v in result["exports"][quant].items() if k != "answers"}), flush=True)
    result["exports"]["q8_0 + LoRA adapter"] = adapter_demo(run, work, system, prompts, hf, result["exports"]["q8_0"])
    return result


def adapter_demo(run: Path, work: Path, system: str | None, prompts: list[str], hf: list, merged: dict) -> dict:
    """``--adapter-only``: the base at q8_0 with the adapter GGUF on top, against the merged q8_0 file."""
    from lmtune.shipping.export import export

    record = export(run, work / "lora", "gguf", "q8_0", overwrite=True, echo=lambda *_: None, accept_degraded=True,
                    adapter_only=True)  # fmt: skip
    turns = [{"system": system, "user": p, "max_tokens": DEMO_NEW_TOKENS} for p in prompts]
    answers = llamacpp.ask(work / "lora" / record["file"], lora=[work / "lora" / record["adapter_file"]],
                           context=1024, chat=turns)["chat"]  # fmt: skip
    return {
        "bytes": (work / "lora" / record["file"]).stat().st_size + record["adapter_size_bytes"],
        "stopped": sum(a["stopped"] for a in answers),
        "same_as_hf": sum(a["text"].strip() == h["text"] for a, h in zip(answers, hf, strict=True)),
        "same_as_merged": sum(a["text"] == m["text"] for a, m in zip(answers, merged["answers"], strict=True)),
        "answers": answers, "export_check": record["check"],
    }  # fmt: skip


def hf_answers(folder: Path, prompts: list[str]) -> list[dict[str, Any]]:
    """Greedy answers of the HF export with nothing but transformers and the folder's own settings."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    stops = model.generation_config.eos_token_id
    stops = set(stops if isinstance(stops, list) else [stops])
    out = []
    for prompt in prompts:
        ids = tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], add_generation_prompt=True, return_tensors="pt", return_dict=True
        )
        with torch.no_grad():
            new = model.generate(**ids, max_new_tokens=DEMO_NEW_TOKENS, do_sample=False)[0, ids["input_ids"].shape[1] :]
        tokens = new.tolist()
        out.append({"text": tokenizer.decode(tokens, skip_special_tokens=True).strip(),
                    "stopped": bool(tokens) and tokens[-1] in stops})  # fmt: skip
    return out


def demo_table(result: dict[str, Any]) -> str:
    hf = result["hf"]["answers"]
    q8 = result["exports"].get("q8_0", {}).get("bytes")
    lines = [
        "| export | size (MB) | vs q8_0 | stop by themselves | same text as the HF export |",
        "| --- | --- | --- | --- | --- |",
        f"| HF folder (transformers) | - | - | {sum(a['stopped'] for a in hf)}/{len(hf)} | - |",
    ]
    for quant, r in result["exports"].items():
        ratio = f"{r['bytes'] / q8:.0%}" if q8 else "-"
        merged = f" ({r['same_as_merged']}/{len(hf)} as the merged q8_0)" if "same_as_merged" in r else ""
        lines.append(f"| GGUF {quant} (llama.cpp chat) | {r['bytes'] / 1e6:.1f} | {ratio} | {r['stopped']}/{len(hf)} | "
                     f"{r['same_as_hf']}/{len(hf)}{merged} |")  # fmt: skip
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--families", action="store_true", help="every family at every quant (tiny models)")
    parser.add_argument("--demo", type=Path, help="a finished run folder (e.g. runs/demo) to export and ask")
    parser.add_argument("--work", type=Path, default=Path("/tmp/lmtune-bench-gguf"), help="scratch folder")
    args = parser.parse_args()
    if reason := llamacpp.missing():
        sys.exit(f"bench/gguf_llamacpp.py: {reason}")
    RESULTS.mkdir(parents=True, exist_ok=True)
    header = f"Machine: {cpu_model()}; llama.cpp from node-llama-cpp 3.21.1 ({time.strftime('%Y-%m-%d')})\n\n"
    if args.families:
        rows = families(args.work / "families")
        (RESULTS / "gguf_families.json").write_text(json.dumps(rows, indent=1) + "\n")
        table = families_table(rows)
        legend = (
            "NMSE of llama.cpp's log-probabilities against transformers' float32 model · greedy tokens equal "
            "before the first difference"
        )
        (RESULTS / "gguf_families.md").write_text(header + legend + "\n\n" + table + "\n")
        print(table)
    if args.demo:
        result = demo(args.demo, args.work / "demo")
        (RESULTS / "gguf_demo.json").write_text(json.dumps(result, indent=1, ensure_ascii=False) + "\n")
        table = demo_table(result)
        (RESULTS / "gguf_demo.md").write_text(header + table + "\n")
        print(table)


if __name__ == "__main__":
    main()
