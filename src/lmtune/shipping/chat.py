"""``lmtune chat``: a streaming terminal chat with a run, an exported folder or a GGUF file.

Each answer is printed token by token while ``model.generate`` runs in a thread. The
conversation is laid out the way lmtune trained it: the tokenizer's chat template, or
lmtune's plain ``### Instruction:`` layout where there is none (or the run used it).
With ``--compare`` the run's base model answers first, each side with its own history;
an adapter run answers as its base with the adapter switched off, so the base is loaded once.
"""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lmtune.errors import ExportError

HELP = (
    "/reset          forget the conversation\n"
    "/system TEXT    set the system message (and forget the conversation)\n"
    "/help           this list\n"
    "/quit           leave (also Ctrl-D; Ctrl-C stops an answer, or leaves at the prompt)"
)


@dataclass(frozen=True)
class Settings:
    max_new_tokens: int
    temperature: float
    top_p: float


@dataclass
class Side:
    """One model answering: what it prints first, how it lays out prompts, its own history."""

    label: str
    model: Any
    tokenizer: Any
    layout: str  # "chat" or "plain"
    adapter_off: bool = False  # answer as the base model of a PEFT run
    history: list[dict[str, str]] = field(default_factory=list)


@dataclass
class Session:
    sides: list[Side]
    system: str | None  # None: the template's default; "": no system message


# --------------------------------------------------------------------------- checks and loading


def check_settings(max_new_tokens: int, temperature: float, top_p: float) -> Settings:
    """The generation flags, refused one at a time before any model is loaded."""
    if not max_new_tokens >= 1:
        raise ExportError(f"--max-new-tokens: must be at least 1, got {max_new_tokens}")
    if not temperature >= 0:  # written this way so NaN is refused too
        raise ExportError(f"--temperature: must be >= 0, got {temperature}")
    if not 0 < top_p <= 1:
        raise ExportError(f"--top-p: must be in (0, 1], got {top_p}")
    return Settings(max_new_tokens, temperature, top_p)


def run_config(target: str) -> dict[str, Any]:
    """The ``config.yaml`` of a run folder, or {} for anything else."""
    from lmtune.config import read_yaml

    path = Path(target).expanduser() / "config.yaml"
    return read_yaml(path) if path.is_file() else {}


def run_base(target: str) -> tuple[str, bool]:
    """(base model, whether the run is a PEFT adapter) of a run folder; ExportError for anything else."""
    folder = Path(target).expanduser()
    if (folder / "adapter_config.json").is_file():
        base = json.loads((folder / "adapter_config.json").read_text(encoding="utf-8")).get("base_model_name_or_path")
        if base:
            return str(base), True
    base = (run_config(target).get("model") or {}).get("name")
    if not base:
        raise ExportError(
            f"--compare: {target} is not a run folder (no adapter_config.json, nor a config.yaml naming model.name)"
        )
    return str(base), False


def load_side(name: str, label: str, wanted_layout: str = "auto", argument: str = "MODEL") -> Side:
    """``name`` loaded to answer; ``argument`` is what error messages call it (see `lmtune.models.named`)."""
    from lmtune.config import ModelConfig
    from lmtune.models import load_model

    model, tokenizer, _ = load_model(ModelConfig(name=name), argument=argument)
    layout = "chat" if wanted_layout != "plain" and getattr(tokenizer, "chat_template", None) else "plain"
    return Side(label, model.eval(), tokenizer, layout)


def load_sides(target: str, base: tuple[str, bool] | None = None) -> list[Side]:
    """The model(s) to chat with: the target alone, or (with ``base`` from `run_base`) base first."""
    wanted = (run_config(target).get("data") or {}).get("template", "auto")
    tuned = load_side(target, "assistant> ", wanted)
    if base is None:
        return [tuned]
    tuned.label = "fine-tuned> "
    name, adapter = base
    if adapter:
        return [Side("base> ", tuned.model, tuned.tokenizer, tuned.layout, adapter_off=True), tuned]
    return [load_side(name, "base> ", wanted, argument=f"{target}/config.yaml model.name"), tuned]


# --------------------------------------------------------------------------- prompts


def prompt_ids(side: Side, system: str | None, message: str) -> list[int]:
    """Token ids that ask ``side`` to answer ``message`` after its history.

    Laid out by `lmtune.data.encode.Encoder`, the code that lays out training rows and
    ``lmtune generate``'s prompt: the same template, system-message rules and plain layout.
    """
    from lmtune.data.encode import Encoder
    from lmtune.data.formats import Example

    turns = (*side.history, {"role": "user", "content": message}, {"role": "assistant", "content": "-"})
    if side.layout == "plain" and system:  # the plain layout takes a system turn as part of the instruction
        turns = ({"role": "system", "content": system}, *turns)
    encoder = Encoder(side.tokenizer, side.layout, system, max_length=side.tokenizer.model_max_length)
    return encoder.prompt_ids(Example(messages=turns))


def stop_ids(side: Side) -> list[int]:
    """End-of-sequence plus the template's end-of-turn token (e.g. ``<|eot_id|>``) where they differ."""
    from lmtune.shipping.merge import end_of_turn_ids

    if side.layout != "chat":
        return [side.tokenizer.eos_token_id]
    return end_of_turn_ids(side.tokenizer)


def generation_kwargs(side: Side, settings: Settings) -> dict[str, Any]:
    greedy = settings.temperature == 0
    # Knobs left unset are passed as None, so the model's generation_config neither warns
    # (greedy) nor adds a top_k the user did not ask for (sampling).
    return {
        "max_new_tokens": settings.max_new_tokens,
        "do_sample": not greedy,
        "temperature": None if greedy else settings.temperature,
        "top_p": None if greedy else settings.top_p,
        "top_k": None,
        "eos_token_id": stop_ids(side),
        "pad_token_id": side.tokenizer.pad_token_id,
    }


# --------------------------------------------------------------------------- answering


def stream_answer(side: Side, ids: list[int], settings: Settings, write: Callable[[str], Any]) -> str | None:
    """Generate in a thread, passing text to ``write`` as it comes; None when Ctrl-C stopped it."""
    import torch
    from transformers import StoppingCriteria, TextIteratorStreamer

    stop = threading.Event()

    class StopOnEvent(StoppingCriteria):
        def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
            return torch.full((input_ids.shape[0],), stop.is_set(), dtype=torch.bool, device=input_ids.device)

    streamer = TextIteratorStreamer(side.tokenizer, skip_prompt=True, skip_special_tokens=True)
    inputs = torch.tensor([ids], device=side.model.device)
    failed: list[BaseException] = []

    kwargs = generation_kwargs(side, settings) | {"streamer": streamer, "stopping_criteria": [StopOnEvent()]}

    def work() -> None:
        try:
            with torch.inference_mode(), side.model.disable_adapter() if side.adapter_off else nullcontext():
                side.model.generate(input_ids=inputs, attention_mask=torch.ones_like(inputs), **kwargs)
        except BaseException as e:  # noqa: BLE001 - re-raised in the main thread
            failed.append(e)
            streamer.end()  # the main thread waits on the streamer: release it

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    pieces: list[str] = []
    try:
        for piece in streamer:
            write(piece)
            pieces.append(piece)
    except KeyboardInterrupt:
        stop.set()
        thread.join()
        return None
    thread.join()
    if failed:
        raise failed[0]
    return "".join(pieces)


def answer_turn(session: Session, message: str, settings: Settings) -> None:
    """Every side answers ``message``; a turn stopped with Ctrl-C is left out of the histories."""
    answers = []
    for side in session.sides:
        try:
            ids = prompt_ids(side, session.system, message)
        except Exception as e:  # noqa: BLE001 - templates refuse what they cannot lay out (e.g. a system turn)
            print(f"this model's chat template cannot lay out the conversation: {e}")
            return
        _write(side.label)
        text = stream_answer(side, ids, settings, _write)
        if text is None:
            _write("\n(stopped)\n")
            return
        _write("\n")
        answers.append(text)
    for side, text in zip(session.sides, answers, strict=True):
        side.history += [{"role": "user", "content": message}, {"role": "assistant", "content": text}]


def command(session: Session, line: str) -> bool:
    """Run one ``/command``; False when the user asked to quit."""
    word, _, rest = line.partition(" ")
    if word == "/quit":
        return False
    if word == "/reset":
        _forget(session)
        print("history cleared")
    elif word == "/system" and rest.strip():
        session.system = rest.strip()
        _forget(session)
        print(f"system message set: {session.system!r} (history cleared)")
    elif word == "/system":
        print("/system TEXT: give the system message")
    elif word == "/help":
        print(HELP)
    else:
        print(f"unknown command {word}: /help lists the commands")
    return True


def _forget(session: Session) -> None:
    for side in session.sides:
        side.history.clear()


def _write(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


def chat_loop(
    target: str,
    max_new_tokens: int = 256,
    temperature: float = 0.0,
    top_p: float = 1.0,
    compare: bool = False,
    system_prompt: str | None = None,
) -> None:
    """Chat in the terminal until /quit, Ctrl-D or Ctrl-C at the prompt."""
    settings = check_settings(max_new_tokens, temperature, top_p)
    base = run_base(target) if compare else None
    sides = load_sides(target, base)
    if system_prompt is None:
        system_prompt = (run_config(target).get("data") or {}).get("system_prompt")
    session = Session(sides, system_prompt)
    try:
        import readline  # noqa: F401 - line editing and history for input()
    except ImportError:
        pass
    what = "base vs fine-tuned " if compare else ""
    print(f"lmtune chat with {what}{target} - /quit or Ctrl-D to leave; /reset, /system TEXT, /help", flush=True)
    while True:
        try:
            line = input("you> ").strip()
        except (EOFError, KeyboardInterrupt):
            print()
            return
        if line.startswith("/"):
            if not command(session, line):
                return
        elif line:
            try:
                answer_turn(session, line, settings)
            except KeyboardInterrupt:  # Ctrl-C outside the streaming loop: the answer had not started
                print("\n(stopped)")
