"""The ``lmtune`` command: one plain function per verb.

Every problem the user can fix (config, data, model name) ends as one line on
stderr — ``lmtune: error: ...`` — with exit status 2 and no traceback
(``--debug`` shows it).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import warnings
from pathlib import Path
from typing import Any

from lmtune.errors import LmtuneError
from lmtune.launch.agent import report_error
from lmtune.launch.command import add_launch_arguments

DEMO_DATA = "data/demo"


def cmd_train(args: argparse.Namespace) -> int | None:
    from lmtune.launch.command import launch_of, worker_argv
    from lmtune.launch.torchrun import launch_workers
    from lmtune.pipeline import finetune
    from lmtune.preflight import load_run_config
    from lmtune.stages import run_stages

    cfg = load_run_config(args.config, args.set or [])
    if (launch := launch_of(args)).needed:
        _check_before_launch(cfg, args, world_size=launch.nproc * launch.nnodes)
        return launch_workers(launch, worker_argv(args))  # the workers' exit status
    if cfg.stages:
        if args.resume:
            raise LmtuneError("--resume: staged runs start again from the first stage (use --overwrite)")
        run_stages(cfg, overwrite=args.overwrite)
    else:
        finetune(cfg, overwrite=args.overwrite, resume=args.resume, memory_budget=_budget(args))


def _check_before_launch(cfg: Any, args: argparse.Namespace, world_size: int) -> None:
    """Everything checked in this process before N workers start: a mistake is one line, nothing started."""
    from lmtune.models import resolve
    from lmtune.preflight import preflight, refuse_distributed_config

    refuse_distributed_config(cfg)
    preflight(cfg, overwrite=args.overwrite, resume=args.resume, world_size=world_size)
    resolve(cfg.model.name)  # the embedded GGUF model is converted once, here, not by N workers at once


def cmd_plan(args: argparse.Namespace) -> None:
    from lmtune.plan.command import plan_run
    from lmtune.preflight import load_run_config

    plan_run(load_run_config(args.config, args.set or []), memory_budget=_budget(args))


def _budget(args: argparse.Namespace) -> int | None:
    from lmtune.plan.command import parse_size

    return parse_size(args.memory_budget) if args.memory_budget else None


def cmd_eval(args: argparse.Namespace) -> None:
    from lmtune.evaluate.review import print_review_scores, print_review_sheet, review_from_run

    if args.score_review:
        return print_review_scores(Path(args.score_review))
    if args.human_review and not args.data:
        return review_from_run(Path(args.model), Path(args.human_review))
    if not args.data:
        raise LmtuneError("eval: --data FILE is required (except with --score-review, or --human-review on a run)")
    from lmtune.config import METRICS
    from lmtune.data.formats import read_examples
    from lmtune.evaluate.run import evaluate_model, metric_settings
    from lmtune.files import atomic_write_json, atomic_write_jsonl

    metrics = [m.strip() for m in args.metrics.split(",") if m.strip()] if args.metrics else list(METRICS)
    if unknown := [m for m in metrics if m not in METRICS]:
        raise LmtuneError(f"--metrics: unknown metric {unknown[0]!r} (choose from {', '.join(METRICS)})")
    data = read_examples(args.data, args.format)
    model, tokenizer, encoder = _model_and_encoder(args)
    result, predictions = evaluate_model(
        model, tokenizer, encoder, data.examples, metrics, args.max_samples, args.max_new_tokens, args.batch_size
    )
    result["metric_settings"] = metric_settings()
    print(json.dumps({k: v for k, v in result.items() if k != "metric_settings"}, indent=2))
    if args.human_review:
        base = _baseline_predictions(args, data.examples, metrics)
        print_review_sheet(base, predictions, Path(args.human_review))
    if args.output:
        out = Path(args.output)
        out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(out, result)
        if predictions:
            atomic_write_jsonl(out.with_name(out.stem + ".predictions.jsonl"), predictions)


def _baseline_predictions(args: argparse.Namespace, examples: list, metrics: list[str]) -> list[dict]:
    """Answers of the model the reviewed one is compared with: ``--baseline``, else the run's base model."""
    from lmtune.config import read_yaml
    from lmtune.evaluate.run import evaluate_model

    baseline = args.baseline
    run_config = Path(args.model) / "config.yaml"
    if baseline is None and run_config.is_file():
        baseline = (read_yaml(run_config).get("model") or {}).get("name")
    if baseline is None:
        raise LmtuneError("--human-review: name the model to compare with: --baseline MODEL")
    args = argparse.Namespace(**{**vars(args), "model": baseline})
    model, tokenizer, encoder = _model_and_encoder(args)
    wanted = [m for m in metrics if m != "perplexity"] or ["bleu"]
    _, predictions = evaluate_model(
        model, tokenizer, encoder, examples, wanted, args.max_samples, args.max_new_tokens, args.batch_size
    )
    return predictions


def cmd_compare(args: argparse.Namespace) -> None:
    from lmtune.report import compare_runs

    print(compare_runs([Path(f) for f in args.runs], Path(args.output) if args.output else None))
    if args.output:
        print(f"written: {Path(args.output) / 'compare.md'}, {Path(args.output) / 'compare_loss.png'}")


def cmd_report(args: argparse.Namespace) -> None:
    from lmtune.report import write_reports

    run = Path(args.run)
    if not (run / "metrics.json").is_file():
        raise LmtuneError(f"{run}: not a finished run folder (no metrics.json)")
    for path in write_reports(run).values():
        print(f"written: {path}")


def cmd_generate(args: argparse.Namespace) -> None:
    from lmtune.evaluate.generate import generate

    model, tokenizer, encoder = _model_and_encoder(args)
    (answer,) = generate(model, tokenizer, [encoder.question_ids(args.prompt)], args.max_new_tokens, 1)
    print(answer.text)


def cmd_export(args: argparse.Namespace) -> None:
    from lmtune.shipping.export import export

    result = export(
        Path(args.run),
        Path(args.output),
        args.format,
        args.quant,
        overwrite=args.overwrite,
        accept_degraded=args.accept_degraded,
        adapter_only=args.adapter_only,
    )
    print(json.dumps(result, indent=2))


def cmd_chat(args: argparse.Namespace) -> None:
    from lmtune.shipping.chat import chat_loop

    chat_loop(
        args.model,
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        top_p=args.top_p,
        compare=args.compare,
        system_prompt=args.system_prompt,
    )


def cmd_serve(args: argparse.Namespace) -> None:
    from lmtune.shipping.serve import serve

    serve(args.model, host=args.host, port=args.port)


def cmd_data_check(args: argparse.Namespace) -> None:
    from lmtune.config import DataConfig, load_config
    from lmtune.data.check import check_data

    if args.config:
        cfg = load_config(args.config, args.set or [])
        data_cfg, seed, model = cfg.data, cfg.seed, cfg.model.name
    elif args.file:
        data_cfg, seed, model = DataConfig(train=args.file, format=args.format), 42, args.model
    else:
        raise LmtuneError("data check: give a FILE or --config CONFIG.yaml")
    check_data(data_cfg, seed, model, Path(args.output))


def cmd_data_demo(args: argparse.Namespace) -> None:
    from lmtune.data.demo import write_demo_data, write_preference_demo
    from lmtune.data.general import write_general_data

    paths = write_demo_data(args.folder, args.train_rows, args.eval_rows, args.seed) + write_general_data(args.folder)
    paths += write_preference_demo(args.folder)  # configs/demo_dpo.yaml
    print("wrote " + ", ".join(map(str, paths)))


def _model_and_encoder(args: argparse.Namespace) -> tuple[Any, Any, Any]:
    """Model + tokenizer + the prompt layout it was trained with (from a run folder's config.yaml)."""
    from lmtune.config import ModelConfig, read_yaml
    from lmtune.data.encode import Encoder
    from lmtune.models import load_model

    data_cfg: dict[str, Any] = {}
    run_config = Path(args.model) / "config.yaml"
    if run_config.is_file():
        data_cfg = read_yaml(run_config).get("data", {}) or {}
    model, tokenizer, _ = load_model(ModelConfig(name=args.model))
    encoder = Encoder(
        tokenizer,
        template=args.template or data_cfg.get("template", "auto"),
        system_prompt=args.system_prompt if args.system_prompt is not None else data_cfg.get("system_prompt"),
        max_length=data_cfg.get("max_length", 2048),
    )
    return model, tokenizer, encoder


# --------------------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    from lmtune import __version__
    from lmtune.config import DATA_FORMATS, EMBEDDED_MODEL

    p = argparse.ArgumentParser(prog="lmtune", description="Fine-tune a causal language model and measure the gain.")
    p.add_argument("--version", action="version", version=f"lmtune {__version__}")
    p.add_argument("--debug", action="store_true", help="show full tracebacks and library logs")
    verbs = p.add_subparsers(dest="verb", required=True, metavar="COMMAND")

    t = verbs.add_parser("train", help="fine-tune, evaluate before and after, write the run folder")
    t.add_argument("config", help="YAML run config (see configs/demo.yaml)")
    t.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="override a config key, e.g. training.max_steps=20 (repeatable)",
    )
    t.add_argument("--overwrite", action="store_true", help="replace the run already in training.output_dir")
    t.add_argument(
        "--resume",
        action="store_true",
        help="continue the unfinished run in training.output_dir from its latest checkpoint (also done "
        "without this flag when the config, data and model are unchanged); fails if there is none",
    )
    budget_help = "memory the run may use, e.g. 6GB (default: what the machine has free); picks batch size auto"
    t.add_argument("--memory-budget", metavar="SIZE", help=budget_help)
    add_launch_arguments(t)
    t.set_defaults(func=cmd_train)

    pl = verbs.add_parser("plan", help="predict a run's peak memory and training time from a few probe steps")
    pl.add_argument("config", help="YAML run config")
    pl.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config key (repeatable)")
    pl.add_argument("--memory-budget", metavar="SIZE", help=budget_help)
    pl.set_defaults(func=cmd_plan)

    def model_options(sp: argparse.ArgumentParser) -> None:
        sp.add_argument(
            "--model",
            default=EMBEDDED_MODEL,
            help=f"run folder, HF folder, .gguf file or hub id (default {EMBEDDED_MODEL})",
        )
        sp.add_argument("--max-new-tokens", type=int, default=128)
        sp.add_argument(
            "--template",
            choices=("auto", "chat", "plain"),
            default=None,
            help="prompt layout (default: the run's, else auto)",
        )
        sp.add_argument("--system-prompt", default=None, help="system message for the chat layout")

    e = verbs.add_parser("eval", help="evaluate a model or run folder on a dataset")
    model_options(e)
    e.add_argument("--data", help="JSONL / JSON / CSV file")
    e.add_argument("--format", choices=DATA_FORMATS, default="auto")
    e.add_argument("--metrics", help="comma-separated, e.g. perplexity,bleu,rouge,chrf (default: all)")
    e.add_argument("--max-samples", type=int, default=200, help="rows generated for (BLEU/ROUGE)")
    e.add_argument("--batch-size", type=int, default=16)
    e.add_argument("--output", help="write metrics here (JSON) and predictions next to it")
    e.add_argument(
        "--human-review",
        metavar="SHEET.csv",
        help="write a blind side-by-side sheet: a run's base vs fine-tuned answers (or, with --data, "
        "the model's answers vs --baseline's)",
    )
    e.add_argument("--baseline", help="with --human-review and --data: the model to compare with (default: run's base)")
    e.add_argument("--score-review", metavar="SHEET.csv", help="win/tie/loss rates from a filled-in review sheet")
    e.set_defaults(func=cmd_eval)

    cmp = verbs.add_parser("compare", help="several runs side by side: one table, overlaid loss curves")
    cmp.add_argument("runs", nargs="+", metavar="RUN", help="run folders")
    cmp.add_argument("--output", help="folder for compare.md and compare_loss.png")
    cmp.set_defaults(func=cmd_compare)

    r = verbs.add_parser("report", help="write report.md and report.html of a run folder again")
    r.add_argument("run", help="run folder")
    r.set_defaults(func=cmd_report)

    g = verbs.add_parser("generate", help="one answer from a model or run folder")
    model_options(g)
    g.add_argument("--prompt", required=True)
    g.set_defaults(func=cmd_generate)

    from lmtune.shipping.gate import GATE_HELP

    x = verbs.add_parser(
        "export",
        help="a run as a plain HF folder (adapters merged), a GGUF file or an int8 copy",
        description="Export a run, checked against the run's own model before anything is written. " + GATE_HELP,
    )
    x.add_argument("run", metavar="RUN", help="run folder (or a model folder or .gguf file lmtune can load)")
    x.add_argument("--output", required=True, help="folder to write (created; must be empty or an earlier export)")
    x.add_argument("--format", choices=("hf", "gguf"), default="hf")
    x.add_argument(
        "--quant",
        default=None,
        help="hf: int8 (torchao weight-only); gguf: f32, f16, bf16, q8_0, q6_k, q5_k_m, q4_k_m or q4_0 "
        "(default: f32 / none)",
    )
    x.add_argument(
        "--adapter-only",
        action="store_true",
        help="gguf: the run's LoRA as a llama.cpp adapter GGUF next to a GGUF of its base (llama-cli --lora, "
        "Ollama's ADAPTER), not merged",
    )
    x.add_argument(
        "--overwrite", action="store_true", help="replace an earlier export in --output (its own files, nothing else)"
    )
    x.add_argument(
        "--accept-degraded",
        action="store_true",
        help="write the export even when its check fails (a quantisation that changes the answers); "
        "export.json records that it was accepted degraded",
    )
    x.set_defaults(func=cmd_export)

    ch = verbs.add_parser("chat", help="chat in the terminal with a run, an exported folder or a GGUF file")
    ch.add_argument(
        "model", metavar="MODEL", nargs="?", default=EMBEDDED_MODEL, help="run folder, HF folder, .gguf file or hub id"
    )
    ch.add_argument("--max-new-tokens", type=int, default=256)
    ch.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    ch.add_argument("--top-p", type=float, default=1.0)
    ch.add_argument("--system-prompt", default=None, help="system message (default: the run's, else the template's)")
    ch.add_argument("--compare", action="store_true", help="answer with the base and the fine-tuned model side by side")
    ch.set_defaults(func=cmd_chat)

    sv = verbs.add_parser("serve", help="an OpenAI-compatible HTTP server for a run or model")
    sv.add_argument("model", metavar="MODEL", help="run folder (merged into RUN/export first), HF folder or .gguf file")
    sv.add_argument("--host", default="127.0.0.1")
    sv.add_argument("--port", type=int, default=8000)
    sv.set_defaults(func=cmd_serve)

    d = verbs.add_parser("data", help="check a dataset, or write the demo data")
    dv = d.add_subparsers(dest="data_verb", required=True, metavar="ACTION")
    c = dv.add_parser("check", help="validate, clean and split a dataset; print and write its data report")
    c.add_argument("file", nargs="?", help="a data file or folder (or use --config)")
    c.add_argument("--config", help="check the data section of a run config instead")
    c.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config key (with --config)")
    c.add_argument("--format", choices=DATA_FORMATS, default="auto")
    c.add_argument("--model", default=EMBEDDED_MODEL, help="tokenizer used for token counts (with FILE)")
    c.add_argument("--output", default="data_report.json", help="where to write the report (JSON)")
    c.set_defaults(func=cmd_data_check)
    m = dv.add_parser("demo", help="write the generated demo task (weather record -> one sentence)")
    m.add_argument("folder", nargs="?", default=DEMO_DATA)
    m.add_argument("--train-rows", type=int, default=480)
    m.add_argument("--eval-rows", type=int, default=60)
    m.add_argument("--seed", type=int, default=0)
    m.set_defaults(func=cmd_data_demo)

    from lmtune.ui.command import add_parser as add_ui_parser

    add_ui_parser(verbs)  # lmtune ui: its arguments and function live in lmtune/ui/command.py

    from lmtune.sweep.command import add_parser as add_sweep

    add_sweep(verbs)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _quiet_libraries(args.debug, import_now=not getattr(args, "import_late", False))
    try:
        code = args.func(args)  # a verb that starts other processes returns their exit status
    except LmtuneError as e:
        if args.debug:
            raise
        report_error(f"lmtune: error: {e}")  # under torchrun: printed once, by rank 0 or the launcher
        return e.exit_code
    except KeyboardInterrupt:
        print("lmtune: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into `head` and the like
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    return code if isinstance(code, int) else 0


def _quiet_libraries(debug: bool, import_now: bool = True) -> None:
    logging.basicConfig(level=logging.DEBUG if debug else logging.INFO, format="%(message)s")
    if not debug:
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        os.environ.setdefault("TQDM_DISABLE", "1")  # transformers' GGUF loader draws a bare tqdm bar
        if import_now:  # lmtune ui starts in a second; the variables above quiet transformers when it comes
            from transformers.utils import logging as hf_logging

            hf_logging.disable_progress_bar()  # e.g. GGUF conversion; lmtune logs its own line instead
        # torchao (imported by peft when installed) warns about CUDA kernels a CPU machine cannot load
        quiet = ("transformers", "peft", "accelerate", "datasets", "httpx", "urllib3", "absl", "torchao", "gguf")
        for name in (*quiet, "torch.utils._pytree"):
            logging.getLogger(name).setLevel(logging.ERROR)
        # Deprecation notices from inside the libraries are for their maintainers, not our users.
        warnings.filterwarnings("ignore", category=FutureWarning)
        warnings.filterwarnings("ignore", message=".*pin_memory.*")


if __name__ == "__main__":
    sys.exit(main())
