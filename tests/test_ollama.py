"""The Ollama Modelfile: its TEMPLATE rendered by Go's text/template (Ollama's engine) against the chat template.

A Modelfile is read here the way Ollama's parser reads one (``read_modelfile``), its TEMPLATE is run by
``tests/ollama_template/render.go`` (built once per session; the tests that need it skip without ``go``),
and the result must equal what the chat template itself writes, less a leading BOS that llama.cpp adds.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from chat_templates import FAMILIES, NUMBERED_TURNS, ODD_LITERALS, Family, family_tokenizer
from helpers import EVAL_ROWS, REPO_ROOT, TRAIN_ROWS, tiny_run_raw, write_jsonl
from jinja2 import TemplateError

from lmtune.shipping.merge import bake_system_prompt, end_of_turn_ids
from lmtune.shipping.ollama import build_modelfile, modelfile_string
from lmtune.shipping.ollama_template import ollama_values

RENDER_GO = REPO_ROOT / "tests" / "ollama_template" / "render.go"
SYSTEM_PROMPT = 'Answer "briefly".\nNever write {{ .System }} or """ in an answer.'
RUN_SYSTEM = {"role": "system", "content": SYSTEM_PROMPT}
CONVERSATION = [
    {"role": "system", "content": "You add numbers.\nBe exact."},
    {"role": "user", "content": "Add 2 and 3."},
    {"role": "assistant", "content": "2 plus 3 is 5."},
    {"role": "user", "content": 'And "7 and {{ 8 }}"?'},
]

# --------------------------------------------------------------------------- Ollama's side


@pytest.fixture(scope="session")
def go_render(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str, dict[str, Any]], str]:
    """``render(template, values)``: Go's text/template output, as Ollama executes a TEMPLATE."""
    if shutil.which("go") is None:
        pytest.skip("go is not installed (`make test` installs Debian's golang-go as root): TEMPLATE not run in Go")
    folder = tmp_path_factory.mktemp("go")
    # Build caches in tmp, never in the repo or $HOME; no module proxy: render.go uses the standard library.
    env = {**os.environ, "GOCACHE": str(folder / "cache"), "GOPATH": str(folder / "path"), "GOFLAGS": ""}
    env.update({"GOPROXY": "off", "GOTOOLCHAIN": "local", "CGO_ENABLED": "0"})
    binary = folder / "render"
    subprocess.run(["go", "build", "-o", str(binary), str(RENDER_GO)], env=env, check=True, timeout=300)

    def render(template: str, values: dict[str, Any]) -> str:
        stdin = json.dumps({"Template": template, **values})
        # bytes, not text=True: universal newlines would turn a template's "\r\n" into "\n"
        proc = subprocess.run([str(binary)], input=stdin.encode(), capture_output=True, timeout=60)
        assert proc.returncode == 0, proc.stderr.decode()
        return proc.stdout.decode()

    return render


def read_modelfile(text: str) -> list[tuple[str, str]]:
    """(command, argument) pairs as Ollama's parser reads them (ollama/ollama parser/parser.go ParseFile).

    Commands and ``#`` comments start a line; a value runs to the first line break at which what was read,
    stripped, is complete: unquoted, or closed by the quote(s) it opened with.  Spaces, tabs and line
    breaks inside are kept, other non-printable characters dropped; there are no escapes.
    """
    commands, state, word, value = [], "start", "", ""
    for ch in text + "\n":
        if state == "start" and ch == "#":
            state = "comment"
        elif state == "comment":
            state = "start" if ch in "\r\n" else "comment"
        elif state == "start" and ch not in " \t\r\n":
            state, word = "name", ch
        elif state in ("name", "parameter") and ch not in " \t":
            assert ch.isalnum() or ch == "_", f"bad command character {ch!r}"
            word += ch
        elif state == "name" and word.lower() == "parameter":
            state, word = "parameter", ""
        elif state == "name":
            state, word, value = "value", {"from": "model"}.get(word.lower(), word.lower()), ""
        elif state == "parameter":
            state, value = "value", ""
        elif state == "value" and ch in "\r\n":
            complete = _unquote(value.strip())
            if complete is None:
                value += ch
            else:
                commands.append((word, complete))
                state = "start"
        elif state == "value" and (ch in " \t" or ch.isprintable()):
            value += ch
    assert state in ("start", "comment"), f"unterminated {word!r}"
    return commands


def _unquote(s: str) -> str | None:
    for quote in ('"""', '"'):
        if s.startswith(quote):
            return s[len(quote) : -len(quote)] if len(s) >= 2 * len(quote) and s.endswith(quote) else None
    return s


def parsed(text: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for command, argument in read_modelfile(text):
        out.setdefault(command, []).append(argument)
    return out


# --------------------------------------------------------------------------- the chat template's side

EXACT = ["smollm2", "llama3", "mistral", "gemma3", "phi3", "qwen2.5", "llama2"]


def chat_template_text(tok: Any, family: Family, messages: list[dict[str, str]]) -> str:
    """The HF rendering with the generation prompt, as llama.cpp reads it: its own BOS not written twice."""
    text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    if family.adds_bos:
        assert text.startswith(family.bos)
        return text[len(family.bos) :]
    return text


def modelfile_for(tok: Any, system_prompt: str | None = None) -> tuple[Any, dict[str, list[str]]]:
    run = {"data": {"system_prompt": system_prompt}}
    made = build_modelfile("run-q8_0.gguf", tok, run, end_of_turn_ids(tok))
    return made, parsed(made.text)


@pytest.mark.parametrize("name", EXACT)
def test_the_template_renders_in_go_as_the_chat_template_does(name: str, tokenizer: Any, go_render: Any) -> None:
    family = FAMILIES[name]
    tok = family_tokenizer(tokenizer, family)
    made, fields = modelfile_for(tok)
    assert made.template and len(fields["template"]) == 1, made.notes
    assert fields["model"] == ["./run-q8_0.gguf"] and "system" not in fields
    # exact for contents without surrounding whitespace; a template that strips it says so
    assert [n for n in made.notes if "whitespace" in n] == (made.notes[:1] if family.trims else []), made.notes
    for messages in (CONVERSATION, CONVERSATION[1:], CONVERSATION[1:2], CONVERSATION[:2]):
        values = ollama_values(messages, None)
        assert go_render(fields["template"][0], values) == chat_template_text(tok, family, messages), messages
    later_system = [*CONVERSATION[1:3], CONVERSATION[0], CONVERSATION[3]]
    try:
        expected = chat_template_text(tok, family, later_system)
    except TemplateError:  # "roles must alternate": Mistral, Gemma and Llama 2 take a system message first only
        return
    assert go_render(fields["template"][0], ollama_values(later_system, None)) == expected


@pytest.mark.parametrize("name", EXACT)
def test_system_gives_what_the_exported_template_gives_without_a_system_message(
    name: str, tokenizer: Any, go_render: Any
) -> None:
    family = FAMILIES[name]
    tok = family_tokenizer(tokenizer, family)
    assert bake_system_prompt(tok, {"data": {"system_prompt": SYSTEM_PROMPT}})  # as the export does
    made, fields = modelfile_for(tok, SYSTEM_PROMPT)
    assert fields["system"] == [SYSTEM_PROMPT] and made.system and made.template
    request = CONVERSATION[1:]  # no system message: Ollama puts SYSTEM first
    values = ollama_values(request, fields["system"][0])
    assert values["Messages"][0] == {"role": "system", "content": SYSTEM_PROMPT}
    assert go_render(fields["template"][0], values) == chat_template_text(tok, family, request)
    # a system message the caller sends still wins, in both
    values = ollama_values(CONVERSATION, fields["system"][0])
    assert go_render(fields["template"][0], values) == chat_template_text(tok, family, CONVERSATION)


@pytest.mark.parametrize("name", EXACT)
def test_stops_are_the_end_of_turn_tokens(name: str, tokenizer: Any) -> None:
    family = FAMILIES[name]
    tok = family_tokenizer(tokenizer, family)
    _, fields = modelfile_for(tok)
    stops = fields["stop"]
    assert stops == [tok.convert_ids_to_tokens(i) for i in end_of_turn_ids(tok)]
    assert family.end_of_turn in stops
    answer = tok.apply_chat_template(CONVERSATION[1:3], tokenize=False)
    assert answer.split(CONVERSATION[2]["content"], 1)[1].lstrip().startswith(family.end_of_turn)
    assert fields["temperature"] == ["0"] and fields["repeat_penalty"] == ["1"]


@pytest.mark.parametrize(
    "prompt",
    [
        SYSTEM_PROMPT,
        'Quote """this""" but\nnot at a line end.',
        'Ends in a quote: "',
        '""Two quotes first',
        "  Leading spaces, a tab\there, trailing newline\n",
        "Windows\r\nline breaks",
    ],
)
def test_system_reads_back_unchanged(prompt: str) -> None:
    quoted = modelfile_string(prompt)
    assert quoted is not None
    expected = {"model": ["./x.gguf"], "system": [prompt], "stop": ["x"]}
    assert parsed(f"FROM ./x.gguf\nSYSTEM {quoted}\nPARAMETER stop x\n") == expected


@pytest.mark.parametrize("prompt", ['A line ending in """\nand more', "a no-break\u00a0space", "zero\u200bwidth"])
def test_a_system_prompt_no_quoting_can_carry_is_left_out_with_a_note(prompt: str, tokenizer: Any) -> None:
    made, fields = modelfile_for(tokenizer, prompt)
    for quotes in ('"""', '"'):
        written = read_modelfile(f"SYSTEM {quotes}{prompt}{quotes}\nFROM x\n")
        assert ("system", prompt) not in written  # Ollama would read something else
    assert "system" not in fields and not made.system
    assert any(note.startswith("no SYSTEM") for note in made.notes)


def test_text_that_go_or_the_modelfile_would_misread_is_written_as_go_strings(tokenizer: Any, go_render: Any) -> None:
    family = Family(ODD_LITERALS)
    tok = family_tokenizer(tokenizer, family)
    system = 'Odd "system" {{ prompt }}'
    assert bake_system_prompt(tok, {"data": {"system_prompt": system}})
    made, fields = modelfile_for(tok, system)
    assert made.template and fields["system"] == [system], made.notes
    for messages in (CONVERSATION, CONVERSATION[1:]):
        values = ollama_values(messages, fields["system"][0])
        assert go_render(fields["template"][0], values) == chat_template_text(tok, family, messages)


def test_a_template_that_counts_turns_gets_no_template_and_says_why(tokenizer: Any) -> None:
    tok = family_tokenizer(tokenizer, Family(NUMBERED_TURNS))
    made, fields = modelfile_for(tok)
    assert "template" not in fields and not made.template
    assert "# No TEMPLATE: " in made.text
    why = [n for n in made.notes if n.startswith("no TEMPLATE")]
    assert len(why) == 1 and "user/assistant/user/assistant/user" in why[0]  # the first conversation that differs
    assert fields["model"] and "stop" in fields  # the rest of the Modelfile is still written


def test_ollama_values_follow_the_chat_handler() -> None:
    user = [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]
    merged = [{"role": "system", "content": "S"}, {"role": "user", "content": "a\n\nb"}]
    assert ollama_values(user, "S") == {"System": "S", "Messages": merged}  # SYSTEM first; one user turn
    own = ollama_values([{"role": "system", "content": "mine"}, *user[:1]], "S")
    assert own["System"] == "mine" and own["Messages"][0]["content"] == "mine" and len(own["Messages"]) == 2
    assert ollama_values(user[:1], None) == {"System": "", "Messages": user[:1]}


# --------------------------------------------------------------------------- the export itself


@pytest.fixture(scope="module")
def system_run(tmp_path_factory: pytest.TempPathFactory, tiny_llama_dir: Path) -> Path:
    """A finished LoRA run on the tiny Llama trained with a system prompt (a few seconds)."""
    from lmtune.config import validate_config
    from lmtune.pipeline import finetune

    root = tmp_path_factory.mktemp("system-run")
    train, held_out = write_jsonl(root / "train.jsonl", TRAIN_ROWS), write_jsonl(root / "eval.jsonl", EVAL_ROWS)
    raw = tiny_run_raw(tiny_llama_dir, train, held_out, root / "run")
    raw["data"]["system_prompt"] = SYSTEM_PROMPT
    raw["eval"].update({"base": False, "reference": None})
    finetune(validate_config(raw), echo=lambda *_: None)
    return root / "run"


def test_hf_export_carries_the_template_with_the_system_prompt_and_every_stop(system_run: Path, tmp_path) -> None:
    from transformers import AutoTokenizer

    from lmtune.shipping.export import export

    out = tmp_path / "hf"
    export(system_run, out, echo=lambda *_: None)
    assert (out / "chat_template.jinja").is_file()
    run_tok, exported = AutoTokenizer.from_pretrained(system_run), AutoTokenizer.from_pretrained(out)
    for messages in (CONVERSATION[1:], CONVERSATION):  # without a system message, and with one
        as_trained = messages if messages[0]["role"] == "system" else [RUN_SYSTEM, *messages]
        expected = run_tok.apply_chat_template(as_trained, tokenize=False, add_generation_prompt=True)
        assert exported.apply_chat_template(messages, tokenize=False, add_generation_prompt=True) == expected
    eos = json.loads((out / "generation_config.json").read_text())["eos_token_id"]
    assert set(end_of_turn_ids(run_tok)) <= set(eos if isinstance(eos, list) else [eos])


def test_gguf_export_writes_system_and_a_checked_template(system_run: Path, tmp_path: Path, go_render: Any) -> None:
    from transformers import AutoTokenizer

    from lmtune.shipping.export import export

    out, said = tmp_path / "gguf", []
    record = export(system_run, out, fmt="gguf", quant="q8_0", echo=said.append)
    assert not [line for line in said if line.startswith("Modelfile:")]  # nothing left out
    fields = parsed((out / "Modelfile").read_text())
    assert record["modelfile"] == {"template": True, "system": True, "notes": []}
    assert json.loads((out / "export.json").read_text())["modelfile"] == record["modelfile"]
    assert fields["model"] == [f"./{record['file']}"] and fields["system"] == [SYSTEM_PROMPT]
    run_tok = AutoTokenizer.from_pretrained(system_run)
    request = CONVERSATION[1:]
    expected = run_tok.apply_chat_template([RUN_SYSTEM, *request], tokenize=False, add_generation_prompt=True)
    assert go_render(fields["template"][0], ollama_values(request, fields["system"][0])) == expected
