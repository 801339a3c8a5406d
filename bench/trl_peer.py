#!/usr/bin/env python3
"""The best peer: TRL ``SFTTrainer`` with the settings a TRL user would pick for the machine.

bf16 autocast where the hardware multiplies bfloat16 fast (CUDA, or a CPU with AVX512-BF16 / AMX), SDPA
attention, TRL's packing (best-fit decreasing into ``max_length`` rows, padding-free, the sequences kept
apart by their position ids) or dynamic padding, and the same LoRA as the other recipes. Rows are
``{"text"}`` (every token trained, as the seed recipe does) or ``{"prompt", "completion"}`` (TRL's
completion-only loss). Used by ``bench/speed.py`` (CPU) and ``bench/gpu/check.py`` (GPU).

Prints one ``RESULT {json}`` line: train seconds, real (non-padding) tokens trained, tokens/s, and the
peak CUDA memory when on a GPU.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path


def fast_bfloat16() -> bool:
    """lmtune.models.fast_bfloat16's rule, written again: the peer runs on TRL alone, nothing of lmtune's."""
    import torch

    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    try:
        flags = Path("/proc/cpuinfo").read_text().split()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True)
    p.add_argument("--train", required=True, help="JSONL of {text} or {prompt, completion} rows")
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--epochs", type=float, default=1.0)
    p.add_argument("--lr", type=float, default=2e-4)
    p.add_argument("--lora-r", type=int, default=16)
    p.add_argument("--lora-alpha", type=int, default=32)
    p.add_argument("--lora-targets", default="q_proj,k_proj,v_proj,o_proj", help="comma list, or all-linear")
    p.add_argument("--packing", action="store_true", help="TRL's packing (else dynamic padding)")
    p.add_argument("--bf16", choices=["auto", "on", "off"], default="auto", help="autocast (auto: where fast)")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--save", default=None, help="save the adapter here")
    a = p.parse_args()

    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    rows = [json.loads(line) for line in Path(a.train).read_text(encoding="utf-8").splitlines() if line.strip()]
    bf16 = fast_bfloat16() if a.bf16 == "auto" else a.bf16 == "on"
    cuda = torch.cuda.is_available()
    tok = AutoTokenizer.from_pretrained(a.model)
    model = AutoModelForCausalLM.from_pretrained(a.model, dtype=torch.float32, attn_implementation="sdpa")
    targets = a.lora_targets if a.lora_targets == "all-linear" else a.lora_targets.split(",")
    args = SFTConfig(
        output_dir=tempfile.mkdtemp(prefix="trl_peer_"), per_device_train_batch_size=a.batch,
        num_train_epochs=a.epochs, learning_rate=a.lr, lr_scheduler_type="linear", warmup_steps=0,
        max_length=a.max_length, packing=a.packing, bf16=bf16, use_cpu=not cuda, seed=a.seed,
        report_to=[], save_strategy="no", eval_strategy="no", logging_steps=10, disable_tqdm=True,
        dataloader_num_workers=0,
    )  # fmt: skip
    trainer = SFTTrainer(
        model=model, args=args, train_dataset=Dataset.from_list(rows), processing_class=tok,
        peft_config=LoraConfig(r=a.lora_r, lora_alpha=a.lora_alpha, lora_dropout=0.0, target_modules=targets,
                               task_type="CAUSAL_LM"),
    )  # fmt: skip
    data = trainer.train_dataset
    # the tokens the loss can see: packing leaves no padding; completion-only rows count the completions
    if "completion_mask" in data.column_names:
        real = sum(sum(m) for m in data["completion_mask"])
    else:
        real = sum(len(x) for x in data["input_ids"])
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    trainer.train()
    if cuda:
        torch.cuda.synchronize()
    train_s = time.perf_counter() - start
    if a.save:
        trainer.model.save_pretrained(a.save)
        tok.save_pretrained(a.save)
    result = {
        "recipe": f"TRL SFTTrainer{' bf16' if bf16 else ''} sdpa {'packing' if a.packing else 'dynamic padding'}",
        "train_s": round(train_s, 2), "real_tokens": real, "tok_s": round(real / train_s, 1),
        "steps": trainer.state.global_step, "bf16": bf16,
        "final_loss": trainer.state.log_history[-1].get("train_loss"),
    }  # fmt: skip
    if cuda:
        result["peak_gpu_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 3)
    print("RESULT " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
