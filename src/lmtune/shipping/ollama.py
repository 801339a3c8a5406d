"""The Ollama ``Modelfile`` next to an exported GGUF file.

It holds the run's chat template as a TEMPLATE in Ollama's own language (derived and checked in
``ollama_template``; left out, with the reason, when it cannot be made exact), the run's
``data.system_prompt`` as SYSTEM, a ``stop`` for each end-of-turn token, and greedy sampling.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from lmtune.shipping.ollama_template import check_layout, derive_layout


@dataclass
class Modelfile:
    """The Modelfile's text and what went into it."""

    text: str
    template: bool  # a TEMPLATE line was written: the chat template's layout, checked exact
    system: bool  # a SYSTEM line was written
    notes: list[str]  # what was left out and why, or what a user should know

    def record(self) -> dict[str, Any]:
        return {"template": self.template, "system": self.system, "notes": self.notes}


def build_modelfile(
    gguf_name: str, tokenizer: Any, run: dict[str, Any], stop_ids: list[int], adapter: str | None = None
) -> Modelfile:
    """The Modelfile for ``gguf_name``: TEMPLATE, SYSTEM and stops from the run's tokenizer and config.

    ``tokenizer`` carries the template the GGUF file holds (with the run's system prompt as its
    default, see ``merge.bake_system_prompt``); ``stop_ids`` are the end-of-turn tokens; ``adapter``
    a LoRA adapter GGUF that Ollama applies on top of ``gguf_name``.
    """
    lines = ["# Written by lmtune export: ollama create NAME -f Modelfile && ollama run NAME", f"FROM ./{gguf_name}"]
    if adapter:
        lines.append(f"ADAPTER ./{adapter}")
    notes: list[str] = []
    system_prompt = (run.get("data") or {}).get("system_prompt") or None
    system_line = _system_line(system_prompt, notes)
    template_lines = _template_lines(tokenizer, system_prompt if system_line else None, notes)
    lines += template_lines + system_line
    for stop in dict.fromkeys(tokenizer.convert_ids_to_tokens(i) for i in stop_ids):
        if (quoted := modelfile_string(stop, quotes=('"', '"""'))) is not None:
            lines.append(f"PARAMETER stop {quoted}")
        else:
            notes.append(f"no stop {stop!r}: the Modelfile parser would not read it back unchanged")
    lines += [
        # Greedy, as lmtune's export check and evaluation answer: Ollama samples at temperature 0.8
        # otherwise, and before 0.32.10 applied a repeat penalty of 1.1 by default.  A user who wants
        # varied answers sets `/set parameter temperature 0.7` in `ollama run`.
        "# greedy decoding, as lmtune's export check compared the answers",
        "PARAMETER temperature 0",
        "PARAMETER repeat_penalty 1",
    ]
    return Modelfile("\n".join(lines) + "\n", any(x.startswith("TEMPLATE") for x in lines), bool(system_line), notes)


def _template_lines(tokenizer: Any, system_prompt: str | None, notes: list[str]) -> list[str]:
    template = getattr(tokenizer, "chat_template", None)
    if not isinstance(template, str):
        notes.append("no TEMPLATE: the tokenizer has no (single) chat template to derive one from")
        return []
    layout, why = derive_layout(tokenizer)
    differences, found = check_layout(layout, tokenizer, system_prompt) if layout else ([why], [])
    if differences:
        notes.append(
            f"no TEMPLATE: Ollama's template language cannot write what the chat template does ({differences[0]})"
        )
        return [
            f"# No TEMPLATE: {_one_line(differences[0])}.",
            "# Ollama 0.30 and later then use the chat template inside the GGUF file; older versions their own",
            "# version of a template they recognise, else none (the prompt as plain text).",
        ]
    notes += found
    lines = ["# The chat template's layout, checked against it on several conversations (see export.json)."]
    if any(word in template for word in ("tools", "tool_call")) or "<think>" in template and "</think>" in template:
        lines.append("# Ollama 0.30 and later prefer the GGUF's own chat template here (it has tools or thinking).")
    quoted = modelfile_string(layout.to_go())
    if quoted is None:  # cannot happen: the template's text is written with printable characters only
        raise AssertionError("derived TEMPLATE does not survive the Modelfile parser")
    return [*lines, f"TEMPLATE {quoted}"]


def _system_line(system_prompt: str | None, notes: list[str]) -> list[str]:
    if system_prompt is None:
        return []
    quoted = modelfile_string(system_prompt)
    if quoted is None:
        notes.append(
            "no SYSTEM: the system prompt cannot be written so that Ollama reads it back unchanged (it has a "
            'character the Modelfile parser drops, or a line ending in """); the exported chat template\'s default '
            "still has it"
        )
        return []
    return [f"SYSTEM {quoted}"]


def modelfile_string(value: str, quotes: tuple[str, ...] = ('"""', '"')) -> str | None:
    """``value`` quoted so that Ollama's Modelfile parser reads it back unchanged; None when no quoting does.

    The parser (ollama/ollama ``parser/parser.go``: ParseFile, unquote) has no escapes.  It keeps printable
    characters, spaces, tabs and line breaks and drops any other character; a quoted value ends at the
    first line break where the text read so far, stripped of surrounding whitespace, ends with the
    closing quote(s).  So ``\"\"\"`` anywhere is fine except at the end of a line, where nothing can carry it.
    """
    if not all(c.isprintable() or c in "\t\r\n" for c in value):
        return None
    breaks = [p for p, c in enumerate(value) if c in "\r\n"]
    for quote in quotes:
        if quote == '"' and value.startswith('""'):
            continue  # the parser would take the opening for """
        if not any(_closes(quote + value[:p], quote) for p in breaks):
            return quote + value + quote
    return None


def _closes(read: str, quote: str) -> bool:
    stripped = read.strip()
    return len(stripped) >= 2 * len(quote) and stripped.endswith(quote)


def _one_line(text: str) -> str:
    return " ".join(text.split())
