#!/usr/bin/env python3
"""Teacher against its distilled students: greedy generation speed, all in one process, timed in turns.

A distill run times its teacher and its student once, at its end; this bench loads the teacher and every
student given and times them together with more repeats (``lmtune.evaluate.latency``: the same left-padded batch
of held-out prompts, the same number of new tokens each, the models in turns, the median), so the ratios of
several students share one measurement.  Prints the CPU and its flags; writes ``bench/results/distill_speed.md``
and ``.json``.

    .venv/bin/python bench/distill_speed.py runs/demo runs/demo-distill runs/demo-distill-18
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from speed import cpu_model  # bench/ is on the path when a bench runs as a script

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("teacher", help="the teacher: the run folder or model the students were distilled from")
    parser.add_argument("students", nargs="+", help="distill run folders")
    parser.add_argument("--prompts", type=int, default=8, help="held-out prompts in the batch")
    parser.add_argument("--new-tokens", type=int, default=48)
    parser.add_argument("--repeats", type=int, default=7)
    a = parser.parse_args(argv)

    import torch

    from lmtune.config import ModelConfig, load_config
    from lmtune.data.encode import Encoder
    from lmtune.data.formats import read_examples
    from lmtune.evaluate.latency import generation_speed
    from lmtune.methods import count_parameters
    from lmtune.models import load_model

    torch.manual_seed(0)
    cfg = load_config(Path(a.students[0]) / "config.yaml")
    models, layers = {}, {}
    for name in (a.teacher, *a.students):
        model, tokenizer, _ = load_model(ModelConfig(name=name, dtype="float32"))
        models[name] = (model.merge_and_unload() if hasattr(model, "merge_and_unload") else model).eval()
        layers[name] = models[name].config.num_hidden_layers
    d = cfg.data
    encoder = Encoder(tokenizer, d.template, d.system_prompt, d.max_length, d.train_on_prompt)
    held_out = read_examples(Path(d.eval)).examples[: a.prompts]
    prompts = [encoder.prompt_ids(ex) for ex in held_out]
    speed = generation_speed(models, prompts, tokenizer.pad_token_id, a.new_tokens, repeats=a.repeats)
    base = speed[a.teacher]["tokens_per_s"]
    rows = [{"model": name, "layers": layers[name], "params": count_parameters(models[name])[1], **speed[name],
             "speedup": speed[name]["tokens_per_s"] / base} for name in models]  # fmt: skip
    result = {"cpu": cpu_model(), "torch_threads": torch.get_num_threads(), "prompts": len(prompts),
              "new_tokens": a.new_tokens, "repeats": a.repeats, "dtype": "float32", "rows": rows}  # fmt: skip
    lines = [
        f"CPU: {result['cpu']}; {result['torch_threads']} torch threads; float32 weights; greedy, a batch of "
        f"{len(prompts)} held-out prompts x {a.new_tokens} new tokens, the models in turns, median of {a.repeats}",
        "",
        "| Model | Layers | Parameters | Tokens/s | First token (ms) | Speed-up |",
        "| --- | --- | --- | --- | --- | --- |",
        *(f"| {r['model']} | {r['layers']} | {r['params']:,} | {r['tokens_per_s']:.1f} | {1000 * r['ttft_s']:.0f} | "
          f"{r['speedup']:.2f}x |" for r in rows),
    ]  # fmt: skip
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "distill_speed.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    (RESULTS / "distill_speed.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
