#!/usr/bin/env python3
"""Training speed and memory: lmtune against the seed recipe and the best peer, side by side, in one run.

For each dataset the seed recipe (``../shared/bench/seed_recipe.py``: HF Trainer, pad to
max_length, float32), the best peer (``bench/trl_peer.py``: TRL ``SFTTrainer`` with bf16 autocast
where the CPU has fast bfloat16, packing, SDPA; LoRA runs only) and ``lmtune train`` run as separate
processes on the same model (the embedded SmolLM2-135M-Instruct, the same cached Hugging Face copy),
the same examples, epochs, batch size, learning rate, LoRA settings and seed.  All train on the same
text, every token (``prompt + "\\n" + completion`` as ``text`` rows, so TRL's completion-only loss has
no prompt to mask).  The saved models are then scored by one function here, on the same held-out
texts, so the eval losses compare like for like.

Measured per run: train wall time, real (non-padding) tokens per second, peak resident memory of
the process (``wait4``), eval loss; and the achieved FLOP/s of training against a matmul peak
measured in this process.  Also: lmtune's training time at two data sizes 4x apart, and lmtune's
batched generation against a one-prompt-at-a-time ``model.generate`` loop.

    .venv/bin/python bench/speed.py            # writes bench/results/speed.{md,json}
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
SEED_RECIPE = SHARED / "bench" / "seed_recipe.py"
TRL_PEER = ROOT / "bench" / "trl_peer.py"
# the goals of issue 30, on CPU: LoRA >= 4x the seed and >= 3x TRL in real tokens/s at equal or lower held-out
# loss, peak RSS <= 0.6x the seed's; full fine-tuning >= 2.5x the seed
GOALS = {"lora_vs_seed": 4.0, "lora_vs_trl": 3.0, "rss_vs_seed": 0.6, "full_vs_seed": 2.5}
RESULTS = ROOT / "bench" / "results"
LORA = {"r": 16, "alpha": 32, "dropout": 0.0, "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"]}
LMTUNE = "import sys; from lmtune.cli import main; sys.exit(main(sys.argv[1:]))"


# --------------------------------------------------------------------------- data


def demo_pairs(n_train: int, n_eval: int) -> tuple[list, list]:
    from lmtune.data.demo import write_demo_data

    folder = Path(tempfile.mkdtemp(prefix="speed_demo_"))
    write_demo_data(folder, n_train, n_eval, 0)
    read = lambda name: [(r["prompt"], r["completion"]) for r in map(json.loads, (folder / name).open())]  # noqa: E731
    return read("train.jsonl"), read("eval.jsonl")


def e2e_pairs(n_train: int, n_eval: int) -> tuple[list, list]:
    with (SHARED / "data" / "e2e" / "devset.csv").open(encoding="utf-8") as f:
        rows = [(r["mr"], r["ref"]) for r in csv.DictReader(f)]
    # held-out rows have inputs never seen in training
    inputs = sorted({mr for mr, _ in rows})
    held = set(inputs[:: max(len(inputs) // 40, 1)])
    train = [r for r in rows if r[0] not in held]
    random.Random(0).shuffle(train)  # the file is sorted by input: any prefix would be one kind of row
    return train[:n_train], [r for r in rows if r[0] in held][:n_eval]


def code_alpaca_pairs(n_train: int, n_eval: int) -> tuple[list, list]:
    rows = json.loads((SHARED / "data" / "alpaca" / "code_alpaca_2k.json").read_text(encoding="utf-8"))
    pairs = [(r["instruction"] + (f"\n{r['input']}" if r["input"] else ""), r["output"]) for r in rows]
    return pairs[:n_train], pairs[-n_eval:]


DATASETS = {"demo": demo_pairs, "e2e": e2e_pairs, "code_alpaca": code_alpaca_pairs}


def write_files(folder: Path, train: list, held_out: list) -> dict[str, Path]:
    """The same examples twice: prompt/completion rows for the seed, text rows for lmtune."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for split, pairs in (("train", train), ("eval", held_out)):
        seed, text = folder / f"{split}.seed.jsonl", folder / f"{split}.text.jsonl"
        seed.write_text("".join(json.dumps({"prompt": p, "completion": c}) + "\n" for p, c in pairs))
        text.write_text("".join(json.dumps({"text": f"{p}\n{c}"}) + "\n" for p, c in pairs))
        paths[f"{split}_seed"], paths[f"{split}_text"] = seed, text
    return paths


# --------------------------------------------------------------------------- runs


def cpu_model() -> str | None:
    """The CPU's name and its bfloat16 / vector flags: they decide lmtune's default dtype and the speed."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return None
    name = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")), "")
    flags = set(info.split())
    shown = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f in flags]
    return f"{name} ({', '.join(shown) or 'no AVX2'})"


def run_measured(cmd: list[str], cwd: Path) -> tuple[str, float]:
    """(stdout, peak RSS in MB) of one child process, from its own rusage."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(cmd, cwd=cwd, stdout=out, stderr=err, text=True)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0), err.seek(0)
        stdout, stderr = out.read(), err.read()
    if proc.returncode:
        raise SystemExit(f"failed: {' '.join(cmd[:4])} ...\n{stderr[-3000:]}")
    return stdout, usage.ru_maxrss / 1024


def run_seed(model_dir: Path, files: dict, method: str, a: argparse.Namespace, out: Path) -> dict[str, Any]:
    cmd = [sys.executable, str(SEED_RECIPE), "--model", str(model_dir), "--method", method,
           "--train", str(files["train_seed"]), "--eval", str(files["eval_seed"]),
           "--max-length", str(a.max_length), "--batch", str(a.batch), "--epochs", "1", "--lr", str(a.lr),
           "--lora-r", str(LORA["r"]), "--lora-alpha", str(LORA["alpha"]),
           "--lora-targets", ",".join(LORA["target_modules"]), "--seed", "42", "--save", str(out)]  # fmt: skip
    stdout, peak = run_measured(cmd, ROOT)
    r = json.loads(stdout.strip().splitlines()[-1])
    return {"train_s": r["train_s"], "real_tokens": r["real_tokens"], "processed_tokens": r["padded_tokens"],
            "peak_rss_mb": peak, "own_eval_loss": r["eval_loss"], "saved": out}  # fmt: skip


def run_trl(model_dir: Path, files: dict, a: argparse.Namespace, out: Path) -> dict[str, Any]:
    cmd = [sys.executable, str(TRL_PEER), "--model", str(model_dir), "--train", str(files["train_text"]),
           "--max-length", str(a.max_length), "--batch", str(a.batch), "--epochs", "1", "--lr", str(a.lr),
           "--lora-r", str(LORA["r"]), "--lora-alpha", str(LORA["alpha"]),
           "--lora-targets", ",".join(LORA["target_modules"]), "--packing", "--seed", "42",
           "--save", str(out)]  # fmt: skip
    stdout, peak = run_measured(cmd, ROOT)
    r = json.loads(next(x for x in stdout.splitlines() if x.startswith("RESULT "))[len("RESULT ") :])
    return {"train_s": r["train_s"], "real_tokens": r["real_tokens"], "processed_tokens": r["real_tokens"],
            "peak_rss_mb": peak, "saved": out, "dtype": "bfloat16" if r["bf16"] else "float32",
            "recipe": r["recipe"]}  # fmt: skip


def run_lmtune(files: dict, method: str, a: argparse.Namespace, out: Path, extra: list[str] = ()) -> dict[str, Any]:
    from lmtune.methods import SECTIONS

    lora_family = SECTIONS.get(method) == "lora"
    sets = [
        f"method={method}", *([f"lora={json.dumps(LORA)}"] if lora_family else []), "seed=42",
        f"data.train={files['train_text']}", f"data.eval={files['eval_text']}", "data.format=text",
        f"data.max_length={a.max_length}", "data.overlong=truncate", "data.dedup=false", "data.cache=false",
        f"training.output_dir={out}", f"training.per_device_train_batch_size={a.batch}",
        "training.num_train_epochs=1", f"training.learning_rate={a.lr}", "training.lr_scheduler_type=linear",
        "training.warmup_ratio=0", "training.logging_steps=10", "training.save_strategy=no",
        "training.eval_strategy=no", "training.report_to=none", "eval.base=false", "eval.metrics=[perplexity]",
        "eval.reference=null", "eval.safety=false",
        *extra,
    ]  # fmt: skip
    import yaml

    # the demo's config, less the method sections this method does not read (an unused section is an error)
    config = yaml.safe_load((ROOT / "configs" / "demo.yaml").read_text())
    for section in set(SECTIONS.values()) - {SECTIONS.get(method)}:
        config.pop(section, None)
    path = out.parent / f"{out.name}.yaml"
    path.write_text(yaml.safe_dump(config))
    cmd = [sys.executable, "-c", LMTUNE, "train", str(path), "--overwrite"]
    for s in sets:
        cmd += ["--set", s]
    _, peak = run_measured(cmd, ROOT)
    m = json.loads((out / "metrics.json").read_text())
    tokens = m["run"]["train_tokens_per_epoch"]
    return {"train_s": m["train_time_s"], "real_tokens": tokens, "processed_tokens": tokens,
            "peak_rss_mb": peak, "saved": out, "dtype": m["run"]["dtype"]}  # fmt: skip


# --------------------------------------------------------------------------- measures


def eval_loss(model_dir: Path, saved: Path, texts: list[str], max_length: int) -> float:
    """Token-weighted mean NLL over every token of the held-out texts (the seed's tokenisation), for any saved run."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if (saved / "adapter_config.json").is_file():
        from peft import PeftModel

        model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(model_dir), saved)
    else:
        model = AutoModelForCausalLM.from_pretrained(saved)
    tok = AutoTokenizer.from_pretrained(model_dir)
    model.eval()
    nll, count = 0.0, 0
    with torch.inference_mode():
        for text in texts:
            ids = torch.tensor([tok(text, truncation=True, max_length=max_length)["input_ids"]])
            out = model(input_ids=ids, labels=ids)
            n = ids.shape[1] - 1
            nll, count = nll + out.loss.item() * n, count + n
    return nll / count


def matmul_peak(dtype_name: str, size: int = 2048, repeats: int = 10, budget_s: float = 5.0) -> float:
    """FLOP/s of a square matmul on this machine, in this process (best of ``repeats``, within ``budget_s``).

    The budget matters on CPUs without bfloat16 instructions: there one 2048² bfloat16 matmul
    took 55 s (AMD EPYC, AVX2 only), and ten of them would add ten minutes to the benchmark.
    """
    import torch

    dtype = getattr(torch, dtype_name)
    x, y = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    torch.mm(x[:256, :256], y[:256, :256])  # warm-up: thread pool and kernel choice
    best, spent = math.inf, 0.0
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(x, y)
        took = time.perf_counter() - start
        best, spent = min(best, took), spent + took
        if spent > budget_s:
            break
    return 2 * size**3 / best


def training_flops(model_dir: Path, tokens: int, mean_len: float, full: bool) -> float:
    """6·N per token for full fine-tuning, 4·N with a frozen base (no weight gradients), plus attention.

    Attention scores and weighted sums cost 2·2·L·d·(context) per token forward, the context
    averaging half the row under the causal mask, and three times that with the backward pass.
    """
    from transformers import AutoConfig

    c = AutoConfig.from_pretrained(model_dir)
    n = _parameter_count(c)
    attention = 3 * 4 * c.num_hidden_layers * c.hidden_size * (mean_len / 2)
    return tokens * ((6 if full else 4) * n + attention)


def _parameter_count(config: Any) -> int:
    import torch
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    return sum(p.numel() for p in model.parameters())


def generation_speed(model_dir: Path, prompts: list[str], max_new_tokens: int) -> dict[str, Any]:
    """lmtune's batched greedy generation vs a plain one-prompt-at-a-time ``model.generate`` loop."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from lmtune.data.encode import Encoder
    from lmtune.evaluate.generate import generate

    tok = AutoTokenizer.from_pretrained(model_dir)
    tok.pad_token = tok.pad_token or tok.eos_token
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    encoder = Encoder(tok, "chat", None, 512)
    ids = [encoder.question_ids(p) for p in prompts]
    start = time.perf_counter()
    batched = [g.text for g in generate(model, tok, ids, max_new_tokens, batch_size=len(ids))]
    batched_s = time.perf_counter() - start
    start = time.perf_counter()
    single = []
    with torch.inference_mode():
        for row in ids:
            x = torch.tensor([row])
            y = model.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=max_new_tokens, do_sample=False,
                               pad_token_id=tok.pad_token_id)  # fmt: skip
            single.append(tok.decode(y[0, len(row) :], skip_special_tokens=True).strip())
    single_s = time.perf_counter() - start
    same = sum(a == b for a, b in zip(batched, single, strict=True))
    return {"prompts": len(prompts), "batched_s": batched_s, "one_at_a_time_s": single_s,
            "speedup": single_s / batched_s, "identical_outputs": same}  # fmt: skip


# --------------------------------------------------------------------------- main


def compare(name: str, method: str, rows: int, a: argparse.Namespace, model_dir: Path, work: Path) -> dict:
    train, held_out = DATASETS[name](rows, a.eval_rows)
    files = write_files(work / name, train, held_out)
    print(f"[{name}/{method}] {len(train)} train rows: seed recipe ...", flush=True)
    seed = run_seed(model_dir, files, method, a, work / f"{name}-{method}-seed")
    peer = None
    if method == "lora" and not a.no_trl:
        print(f"[{name}/{method}] TRL SFTTrainer ...", flush=True)
        peer = run_trl(model_dir, files, a, work / f"{name}-{method}-trl")
    print(f"[{name}/{method}] lmtune ...", flush=True)
    ours = run_lmtune(files, method, a, work / f"{name}-{method}-lmtune", a.lmtune_set)
    texts = [f"{p}\n{c}" for p, c in held_out]
    for r in (seed, peer, ours) if peer else (seed, ours):
        r["eval_loss"] = eval_loss(model_dir, r.pop("saved"), texts, a.max_length)
        r["real_tokens_per_s"] = r["real_tokens"] / r["train_s"]
        mean_len = r["real_tokens"] / len(train)
        r["train_flops"] = training_flops(model_dir, r["processed_tokens"], mean_len, method == "full")
        r["achieved_gflops"] = r["train_flops"] / r["train_s"] / 1e9
    return {"dataset": name, "method": method, "rows": len(train), "seed": seed, **({"trl": peer} if peer else {}),
            "lmtune": ours}  # fmt: skip


def scaling(a: argparse.Namespace, work: Path) -> dict:
    runs = {}
    for rows in (a.scaling_rows // 4, a.scaling_rows):
        train, held_out = e2e_pairs(rows, 8)
        files = write_files(work / f"scaling-{rows}", train, held_out)
        print(f"[scaling] lmtune on {rows} rows ...", flush=True)
        runs[rows] = run_lmtune(files, "lora", a, work / f"scaling-{rows}-lmtune", a.lmtune_set)
    small, large = sorted(runs)
    s, b = runs[small], runs[large]
    return {"rows": [small, large], "train_s": [s["train_s"], b["train_s"]], "ratio": b["train_s"] / s["train_s"],
            "tokens": [s["real_tokens"], b["real_tokens"]]}  # fmt: skip


def markdown(results: dict) -> str:
    peak = results["matmul_peak_gflops"]
    lines = [
        f"Machine: {results['machine']}. Matmul peak in the same process ({results['matmul_size']}²): "
        f"float32 {peak['float32']:.3g} GFLOP/s, bfloat16 {peak['bfloat16']:.3g} GFLOP/s.",
        "",
        "| data | method | rows | recipe | train s | real tok/s | peak RSS MB | eval loss | GFLOP/s (util.) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for c in results["comparisons"]:
        for who in [w for w in ("seed", "trl", "lmtune") if w in c]:
            r = c[who]
            dtype = r.get("dtype", "float32")  # the seed recipe trains in float32
            util = 100 * r["achieved_gflops"] / peak[dtype]
            lines.append(
                f"| {c['dataset']} | {c['method']} | {c['rows']} | {who} ({dtype}) | {r['train_s']:.1f} | "
                f"{r['real_tokens_per_s']:.0f} | {r['peak_rss_mb']:.0f} | {r['eval_loss']:.4f} | "
                f"{r['achieved_gflops']:.0f} ({util:.0f}%) |"
            )
        s, o = c["seed"], c["lmtune"]
        lines.append(
            f"| {c['dataset']} | {c['method']} | | **lmtune / seed** | {o['train_s'] / s['train_s']:.2f}x | "
            f"**{o['real_tokens_per_s'] / s['real_tokens_per_s']:.2f}x** | "
            f"**{o['peak_rss_mb'] / s['peak_rss_mb']:.2f}x** | "
            f"{100 * (o['eval_loss'] / s['eval_loss'] - 1):+.2f}% | |"
        )
        if "trl" in c:
            t = c["trl"]
            lines.append(
                f"| {c['dataset']} | {c['method']} | | **lmtune / TRL** | {o['train_s'] / t['train_s']:.2f}x | "
                f"**{o['real_tokens_per_s'] / t['real_tokens_per_s']:.2f}x** | "
                f"**{o['peak_rss_mb'] / t['peak_rss_mb']:.2f}x** | "
                f"{100 * (o['eval_loss'] / t['eval_loss'] - 1):+.2f}% | |"
            )
    lines += ["", *goal_lines(results["comparisons"])]
    sc = results.get("scaling")
    if sc:
        lines += ["", f"Scaling: lmtune LoRA on {sc['rows'][0]} and {sc['rows'][1]} E2E rows took "
                  f"{sc['train_s'][0]:.1f} s and {sc['train_s'][1]:.1f} s: "
                  f"{sc['ratio']:.2f}x for 4x the data "
                  f"({sc['tokens'][1] / sc['tokens'][0]:.2f}x the tokens)."]  # fmt: skip
    g = results.get("generation")
    if g:
        lines += ["", f"Generation: {g['prompts']} prompts, greedy, {results['generation_tokens']} new tokens at most: "
                  f"batched {g['batched_s']:.1f} s vs one at a time {g['one_at_a_time_s']:.1f} s "
                  f"(**{g['speedup']:.1f}x**), {g['identical_outputs']}/{g['prompts']} identical outputs."]  # fmt: skip
    return "\n".join(lines) + "\n"


def goal_lines(comparisons: list[dict]) -> list[str]:
    """Each ratio against the goals (met / missed, by how much)."""

    def verdict(value: float, goal: float, higher_is_better: bool = True) -> str:
        met = value >= goal if higher_is_better else value <= goal
        return f"{value:.2f}x ({'met' if met else 'MISSED'}: goal {'>=' if higher_is_better else '<='} {goal}x)"

    lines = ["Goals:"]
    for c in comparisons:
        s, o = c["seed"], c["lmtune"]
        speed = o["real_tokens_per_s"] / s["real_tokens_per_s"]
        where = f"- {c['dataset']} {c['method']}:"
        if c["method"] == "full":
            lines.append(f"{where} tokens/s vs seed {verdict(speed, GOALS['full_vs_seed'])}")
            continue
        rss = o["peak_rss_mb"] / s["peak_rss_mb"]
        parts = [f"tokens/s vs seed {verdict(speed, GOALS['lora_vs_seed'])}",
                 f"peak RSS vs seed {verdict(rss, GOALS['rss_vs_seed'], higher_is_better=False)}"]  # fmt: skip
        if "trl" in c:
            t = c["trl"]
            # equal: within 0.1%, the run-to-run spread of these losses
            loss = "equal or lower (met)" if o["eval_loss"] <= t["eval_loss"] * 1.001 else "higher (MISSED)"
            versus_trl = o["real_tokens_per_s"] / t["real_tokens_per_s"]
            parts += [f"tokens/s vs TRL {verdict(versus_trl, GOALS['lora_vs_trl'])}",
                      f"held-out loss vs TRL {o['eval_loss']:.4f} vs {t['eval_loss']:.4f}, {loss}"]  # fmt: skip
        lines.append(f"{where} " + "; ".join(parts))
    return lines


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--datasets", default="e2e,demo,code_alpaca")
    p.add_argument("--rows", type=int, default=512, help="training rows per dataset (LoRA)")
    p.add_argument("--full-rows", type=int, default=256, help="training rows for the full fine-tuning pair (E2E)")
    p.add_argument("--eval-rows", type=int, default=64)
    p.add_argument("--scaling-rows", type=int, default=512, help="lmtune alone at this size and a quarter of it")
    p.add_argument("--generation-prompts", type=int, default=64)
    p.add_argument("--generation-tokens", type=int, default=48)
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--lr", type=float, default=2e-4)
    p.add_argument("--no-trl", action="store_true", help="leave out the TRL peer")
    p.add_argument("--lmtune-set", action="append", default=[], metavar="KEY=VALUE", help="extra lmtune settings")
    p.add_argument("--output", default=str(RESULTS / "speed"))
    a = p.parse_args()

    import platform

    import torch

    from lmtune.models import resolve

    model_dir = Path(resolve("smollm2-135m-instruct"))
    work = Path(tempfile.mkdtemp(prefix="lmtune_speed_"))
    results: dict[str, Any] = {
        "machine": f"{os.cpu_count()} CPU cores, {cpu_model() or platform.machine()}, torch "
        f"{torch.__version__}, {torch.get_num_threads()} threads",
        "matmul_size": 2048,
        "matmul_peak_gflops": {d: matmul_peak(d) / 1e9 for d in ("float32", "bfloat16")},
        "generation_tokens": a.generation_tokens,
        "args": vars(a),
        "comparisons": [],
    }
    out = Path(a.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    for name, method, rows in [*((n, "lora", a.rows) for n in a.datasets.split(",")),
                               *([("e2e", "full", a.full_rows)] if a.full_rows else [])]:  # fmt: skip
        results["comparisons"].append(compare(name, method, rows, a, model_dir, work))
        # written after each comparison: what was measured stays if a later one fails
        out.with_suffix(".json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    if a.scaling_rows:
        results["scaling"] = scaling(a, work)
    if a.generation_prompts:
        _, held_out = demo_pairs(8, a.generation_prompts)
        results["generation"] = generation_speed(model_dir, [q for q, _ in held_out], a.generation_tokens)
    out.with_suffix(".json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    table = markdown(results)
    out.with_suffix(".md").write_text(table)
    print(table)


if __name__ == "__main__":
    main()
