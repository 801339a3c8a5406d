"""The run's chat template in Ollama's template language, read off the template itself and checked.

How Ollama fills a TEMPLATE (ollama/ollama ``server/routes.go`` ChatHandler, ``template/template.go``):

* the Modelfile's SYSTEM becomes a first ``system`` message when a request does not start with one
  (``/api/generate`` does the same before its prompt);
* the template runs on ``.Messages`` (consecutive messages of one role merged with a blank line, each with
  ``.Role`` and ``.Content``; system messages stay in the list), ``.System`` (every system content, joined
  by a blank line) and ``.Response`` (empty): the TEMPLATE below writes system messages from ``.Messages``
  only, never from ``.System`` as well;
* llama.cpp starts the prompt with BOS itself when the GGUF's ``tokenizer.ggml.add_bos_token`` is true and
  reads special-token text in the prompt as those tokens, so the TEMPLATE leaves out a leading BOS.

The TEMPLATE is not picked from a list of known layouts.  The chat template is rendered with sentinel
contents; the text it writes between two messages (chosen by the previous message's role), after the last
one, and where a system message goes (its own turn, folded into the first user turn, or into the last
one as Mistral's does) are read off.  That layout is then rendered the way Ollama would on a few real
conversations and compared with the chat template's own rendering; if any differs there is no TEMPLATE
line, and the export says why, rather than a template that is silently wrong.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

ROLES = ("system", "user", "assistant")
# The gap used for a pair of roles the sentinels never showed (e.g. a user turn right after a system turn
# in a template without system messages): the one of the most usual previous role.
USUAL_PREV = {"system": "", "user": "assistant", "assistant": "user"}
SENTINEL = {"system": "lmtuneSYSTEMsentinel", "user": "lmtuneUSER{}sentinel", "assistant": "lmtuneANSWER{}sentinel"}

# Conversations the derived layout must render exactly as the chat template does.
_SYS = 'Answer in one short sentence.\nUse "plain" words.'
_TURNS = [("user", "What is 2 + 2?"), ("assistant", "4."), ("user", 'Say {{ hi }} in "French".\nThanks!'),
          ("assistant", "Bonjour."), ("user", "Last one: ünïcödé?")]  # fmt: skip
PROBES = [_TURNS[:1], _TURNS[:3], _TURNS, [("system", _SYS), *_TURNS[:1]], [("system", _SYS), *_TURNS],
          [*_TURNS[:2], ("system", _SYS), *_TURNS[2:]]]  # fmt: skip
PREFILLS = [_TURNS[:2], [("system", _SYS), *_TURNS[:2]]]  # the last answer is continued, not closed
PADDED = [("system", " padded\n"), ("user", "  What?\n"), ("assistant", " This. "), ("user", "\tAnd?")]


@dataclass(frozen=True)
class Layout:
    """What a chat template writes around message contents."""

    gaps: dict[tuple[str, str], str]  # (previous role, "" at the start; role) -> text before the content
    tails: dict[str, str]  # last role -> text after it (for a user turn: its end and the generation prompt)
    system: str  # "turn" (written where it stands), "last_user" (inside the last user turn) or "none"
    system_gaps: dict[str, tuple[str, str]] = field(default_factory=dict)  # last_user: prev -> (before, after)
    default_system: str = ""  # last_user: what the template writes there when there is no system message

    def gap(self, prev: str, role: str) -> str:
        return self.gaps.get((prev, role), self.gaps.get((USUAL_PREV[role], role), ""))

    def render(self, system: str, messages: list[dict[str, str]]) -> str:
        """What the Go TEMPLATE (``to_go``) writes for Ollama's ``.System`` and ``.Messages``."""
        out, prev = [], ""
        system = system or self.default_system
        for i, message in enumerate(messages):
            role = message["role"]
            if role not in ROLES or role == "system" and self.system != "turn":
                continue  # no turn of its own: writes nothing and is not the previous role
            if role == "user" and self.system == "last_user" and system and i == len(messages) - 1:
                before, after = self.system_gaps.get(prev, self.system_gaps["assistant"])
                out += [before, system, after]
            else:
                out.append(self.gap(prev, role))
            out.append(message["content"])
            prev = role
        out.append(self.tails.get(prev, ""))
        return "".join(out)

    def to_go(self) -> str:
        """The layout in Ollama's template language (Go's text/template)."""
        body: list[tuple[str, str]] = []
        for role in ROLES:
            if role == "system" and self.system != "turn":
                continue
            alternatives = {prev: [text] for (prev, r), text in self.gaps.items() if r == role}
            choice = _choose("$prev", alternatives, USUAL_PREV[role])
            if role == "user" and self.system == "last_user":
                choice = [*self._last_user_with_system(), *choice, ("action", "end")]
            keyword = "if" if not body else "else if"
            body += [("action", f'{keyword} eq .Role "{role}"'), *choice, ("action", ".Content")]
            body.append(("action", f'$prev = "{role}"'))
        tokens = [("action", '$prev := ""'), ("action", "range $i, $_ := .Messages")]
        if self.system == "last_user":
            tokens.append(("action", "$last := eq (len (slice $.Messages $i)) 1"))
        tokens += [*body, ("action", "end"), ("action", "end")]
        tokens += _choose("$prev", {prev: [text] for prev, text in self.tails.items() if text}, None)
        return _join(tokens)

    def _last_user_with_system(self) -> list[tuple[str, str]]:
        """``if`` the last user turn carries the system message (or the default), the text around it; ``else``."""
        system = ("action", f"or $.System {_go_string(self.default_system)}" if self.default_system else "$.System")
        test = "$last" if self.default_system else "and $.System $last"
        around = {prev: [before, system, after] for prev, (before, after) in self.system_gaps.items()}
        return [("action", f"if {test}"), *_choose("$prev", around, "assistant"), ("action", "else")]


def derive_layout(tokenizer: Any) -> tuple[Layout | None, str]:
    """The tokenizer's chat template as a Layout, or (None, why it cannot be read off)."""
    user = [SENTINEL["user"].format(n) for n in (1, 2, 3)]
    answer = [SENTINEL["assistant"].format(n) for n in (1, 2)]
    turns = [("user", user[0]), ("assistant", answer[0]), ("user", user[1]), ("assistant", answer[1])]
    turns.append(("user", user[2]))
    plain = _render_hf(tokenizer, turns)
    if plain is None:
        return None, "the chat template fails on a user/assistant/user/assistant/user conversation"
    if (cut := _cut(plain, [content for _, content in turns])) is None:
        return None, "the chat template does not write message contents as they are"
    gaps = {("", "user"): cut[0], ("user", "assistant"): cut[1], ("assistant", "user"): cut[2]}
    tails, system_gaps, default = {"user": cut[5], "assistant": ""}, {}, ""
    sentinel = SENTINEL["system"]
    with_system = _render_hf(tokenizer, [("system", sentinel), *turns[:3]])
    if with_system is None or sentinel not in with_system:
        mode = "none"
    elif (own_turn := _cut(with_system, [sentinel, user[0], answer[0], user[1]])) is not None:
        mode = "turn"
        gaps[("", "system")], gaps[("system", "user")] = own_turn[0], own_turn[1]
        if (alone := _cut(_render_hf(tokenizer, [("system", sentinel)]), [sentinel])) is not None:
            tails["system"] = alone[1]
        later = _render_hf(tokenizer, [*turns[:2], ("system", sentinel), turns[2]])  # many templates refuse this
        if (later_turn := _cut(later, [user[0], answer[0], sentinel, user[1]])) is not None:
            gaps[("assistant", "system")] = later_turn[2]
    elif (last := _cut(with_system, [user[0], answer[0], sentinel, user[1]])) is not None:
        mode = "last_user"
        first = _cut(_render_hf(tokenizer, [("system", sentinel), turns[0]]), [sentinel, user[0]])
        if first is None:
            return None, "the chat template puts the system message in the last user turn, but not in a first one"
        system_gaps = {"": (first[0], first[1]), "assistant": (last[2], last[3])}
        # the plain conversation's last user turn: like the others, or with the template's default system message
        if cut[4] != cut[2]:
            before, after = system_gaps["assistant"]
            if not (cut[4].startswith(before) and cut[4].endswith(after) and len(cut[4]) > len(before + after)):
                return None, "the chat template writes the last user turn unlike the others"
            default = cut[4][len(before) : len(cut[4]) - len(after)]
    else:
        return None, "the chat template writes the system message somewhere other than a turn or a user turn"
    return _without_bos(Layout(gaps, tails, mode, system_gaps, default), tokenizer), ""


def check_layout(layout: Layout, tokenizer: Any, system_prompt: str | None) -> tuple[list[str], list[str]]:
    """(differences, notes): conversations the layout renders unlike the chat template, and what to know.

    Each probe is checked as it is and, with a ``system_prompt`` (the Modelfile's SYSTEM), also as Ollama
    sends a request without a system message: SYSTEM first, against the chat template's own default.
    """
    requests = [(turns, False, None) for turns in PROBES]
    requests += [(turns, True, None) for turns in PREFILLS]
    if system_prompt is not None:
        requests += [(turns, prefill, system_prompt) for turns, prefill, _ in requests if turns[0][0] != "system"]
    differences = [why for request in requests if (why := _differs(layout, tokenizer, *request)) is not None]
    notes = []
    padded = _both(layout, tokenizer, PADDED, False, None) if not differences else None
    if padded is not None and padded[0] != padded[1]:
        got, expected = padded
        same_words = "".join(got.split()) == "".join(expected.split())
        (notes if same_words else differences).append(
            "a message whose content starts or ends with whitespace renders differently"
            + (" (the chat template strips it; Ollama's template language cannot)" if same_words else "")
        )
    if layout.system == "none":
        notes.append("the chat template has no system messages: Ollama's TEMPLATE leaves them out")
    first = _render_hf(tokenizer, list(PROBES[0]))
    if llama_cpp_adds_bos(tokenizer) and first is not None and not first.startswith(tokenizer.bos_token):
        notes.append("llama.cpp starts every prompt with BOS (add_bos_token), which the chat template does not write")
    return differences, notes


def ollama_values(messages: list[dict[str, str]], modelfile_system: str | None) -> dict[str, Any]:
    """``.System`` and ``.Messages`` as Ollama's chat handler builds them from a request."""
    if modelfile_system and (not messages or messages[0]["role"] != "system"):
        messages = [{"role": "system", "content": modelfile_system}, *messages]
    merged: list[dict[str, str]] = []
    for m in messages:
        if merged and merged[-1]["role"] == m["role"] and m["role"] != "tool":
            merged[-1] = {"role": m["role"], "content": merged[-1]["content"] + "\n\n" + m["content"]}
        else:
            merged.append({"role": m["role"], "content": m["content"]})
    system = "\n\n".join(m["content"] for m in messages if m["role"] == "system")
    return {"System": system, "Messages": merged}


def llama_cpp_adds_bos(tokenizer: Any) -> bool:
    """Whether the tokenizer starts an encoding with BOS: the GGUF writer's ``tokenizer.ggml.add_bos_token``."""
    if tokenizer.bos_token_id is None:
        return False
    with_special = tokenizer.encode("a", add_special_tokens=True)
    return len(with_special) > len(tokenizer.encode("a", add_special_tokens=False)) and (
        with_special[0] == tokenizer.bos_token_id
    )


def hf_rendering(tokenizer: Any, turns: list[tuple[str, str]], prefill: bool = False) -> str | None:
    """The chat template's text for ``turns`` as llama.cpp reads it from Ollama: without a BOS it adds itself."""
    text = _render_hf(tokenizer, turns, prefill)
    bos = tokenizer.bos_token
    if text is not None and bos and llama_cpp_adds_bos(tokenizer) and text.startswith(bos):
        return text[len(bos) :]
    return text


# --------------------------------------------------------------------------- reading the chat template


def _render_hf(tokenizer: Any, turns: list[tuple[str, str]], prefill: bool = False) -> str | None:
    messages = [{"role": role, "content": content} for role, content in turns]
    try:
        return tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=not prefill, continue_final_message=prefill
        )
    except Exception:  # noqa: BLE001 - templates raise what they like ("roles must alternate", no system role)
        return None


def _cut(text: str | None, contents: list[str]) -> list[str] | None:
    """The text before, between and after ``contents``, each found exactly once and in this order."""
    if text is None or any(text.count(c) != 1 for c in contents):
        return None
    pieces, start = [], 0
    for content in contents:
        at = text.find(content, start)
        if at < 0:
            return None
        pieces.append(text[start:at])
        start = at + len(content)
    return [*pieces, text[start:]]


def _without_bos(layout: Layout, tokenizer: Any) -> Layout:
    """Drop the BOS a start gap begins with when llama.cpp adds one itself (no second BOS)."""
    bos = tokenizer.bos_token
    if not (bos and llama_cpp_adds_bos(tokenizer)):
        return layout
    gaps = {k: v[len(bos) :] if k[0] == "" and v.startswith(bos) else v for k, v in layout.gaps.items()}
    system_gaps = dict(layout.system_gaps)
    if "" in system_gaps and system_gaps[""][0].startswith(bos):
        system_gaps[""] = (system_gaps[""][0][len(bos) :], system_gaps[""][1])
    return Layout(gaps, layout.tails, layout.system, system_gaps, layout.default_system)


def _both(
    layout: Layout, tokenizer: Any, turns: list[tuple[str, str]], prefill: bool, modelfile_system: str | None
) -> tuple[str, str] | None:
    """(what Ollama renders with the layout, what the chat template renders), or None if the template refuses."""
    expected = hf_rendering(tokenizer, turns, prefill)
    if expected is None:
        return None  # the chat template refuses this conversation itself: nothing to match
    values = ollama_values([{"role": r, "content": c} for r, c in turns], modelfile_system)
    return layout.render(values["System"], values["Messages"]), expected


def _differs(
    layout: Layout, tokenizer: Any, turns: list[tuple[str, str]], prefill: bool, modelfile_system: str | None
) -> str | None:
    if (both := _both(layout, tokenizer, turns, prefill, modelfile_system)) is None or both[0] == both[1]:
        return None
    got, expected = both
    at = next((i for i, (a, b) in enumerate(zip(got, expected, strict=False)) if a != b), min(len(got), len(expected)))
    roles = "/".join(r for r, _ in turns) + (" (answer continued)" if prefill else "")
    roles += " with the Modelfile's SYSTEM" if modelfile_system is not None else ""
    at = max(0, at - 10)  # some context before the first difference
    return f"{roles}: Ollama would read {got[at : at + 40]!r} where the chat template writes {expected[at : at + 40]!r}"


# --------------------------------------------------------------------------- writing Go's template language


def _choose(var: str, alternatives: dict[str, list[Any]], default: str | None) -> list[tuple[str, str]]:
    """Tokens that write ``alternatives[value of var]`` (``default``'s for any other value, or nothing)."""
    if not alternatives:
        return []
    if default not in alternatives:
        default = None
    suffix = _common_suffix(list(alternatives.values())) if default is not None else ""
    if suffix:
        alternatives = {k: [*p[:-1], p[-1][: -len(suffix)]] for k, p in alternatives.items()}
    groups: dict[str, list[str]] = {}
    for key, pieces in alternatives.items():
        groups.setdefault(repr(pieces), []).append(key)
    others = [keys for keys in groups.values() if default not in keys]
    if default is not None and all(not any(alternatives[keys[0]]) for keys in others):
        # only the usual case writes something: "if not one of the others" reads better than an empty branch
        keys = [k for group in others for k in group]
        test = f'ne {var} "{keys[0]}"' if len(keys) == 1 else f"not ({_any_of(var, keys)})"
        body = _pieces(alternatives[default])
        return [*([("action", f"if {test}"), *body, ("action", "end")] if keys else body), *_pieces([suffix])]
    tokens, keyword = [], "if"
    for keys in others:
        tokens += [("action", f"{keyword} {_any_of(var, keys)}"), *_pieces(alternatives[keys[0]])]
        keyword = "else if"
    if default is not None and any(alternatives[default]):
        tokens += [("action", "else"), *_pieces(alternatives[default])]
    return [*tokens, ("action", "end"), *_pieces([suffix])]


def _any_of(var: str, keys: list[str]) -> str:
    tests = [f'eq {var} "{k}"' for k in keys]
    return tests[0] if len(tests) == 1 else "or " + " ".join(f"({t})" for t in tests)


def _common_suffix(alternatives: list[list[Any]]) -> str:
    """The text all alternatives end with, from a line start where it can (for reading); none if only spaces."""
    if len(alternatives) < 2 or not all(p and isinstance(p[-1], str) for p in alternatives):
        return ""
    lasts = [p[-1] for p in alternatives]
    n = 0
    while n < min(map(len, lasts)) and len({s[len(s) - n - 1] for s in lasts}) == 1:
        n += 1
    suffix = lasts[0][len(lasts[0]) - n :]
    if (line := suffix.find("\n")) >= 0 and suffix[line + 1 :].strip():
        suffix = suffix[line + 1 :]
    return suffix if suffix.strip() else ""


def _pieces(pieces: list[Any]) -> list[tuple[str, str]]:
    return [p if isinstance(p, tuple) else ("text", p) for p in pieces if p]


def _literal(text: str) -> tuple[str, str]:
    """Template text as it is, or as a Go string action when the text could be misread.

    ``{{`` would open an action, a trailing ``{`` would merge with the next one, ``\"\"\"`` could end the
    Modelfile's quoted TEMPLATE, and Ollama's Modelfile parser drops non-printable characters.
    """
    plain = all(c.isprintable() or c in "\n\t" for c in text)
    if plain and "{{" not in text and '"""' not in text and not text.endswith("{"):
        return ("text", text)
    return ("action", _go_string(text))


def _go_string(text: str) -> str:
    out = []
    for c in text:
        if c in '"\\':
            out.append("\\" + c)
        elif c in "\n\t\r":
            out.append({"\n": "\\n", "\t": "\\t", "\r": "\\r"}[c])
        elif c.isascii() and c.isprintable():
            out.append(c)
        else:
            out.append(f"\\u{ord(c):04x}" if ord(c) <= 0xFFFF else f"\\U{ord(c):08x}")
    return '"' + "".join(out) + '"'


def _join(tokens: list[tuple[str, str]]) -> str:
    """Actions and text; a line break between two actions for reading, trimmed away by ``{{-``."""
    merged: list[tuple[str, str]] = []
    for kind, value in tokens:
        if kind == "text" and merged and merged[-1][0] == "text":
            merged[-1] = ("text", merged[-1][1] + value)  # escaped as a whole: "{" + "{" is "{{" too
        elif kind == "action" or value:
            merged.append((kind, value))
    out, previous = [], "text"
    for kind, value in merged:
        kind, value = _literal(value) if kind == "text" else (kind, value)
        if kind == "text":
            out.append(value)
        else:
            out.append(f"\n{{{{- {value} }}}}" if previous == "action" else f"{{{{ {value} }}}}")
        previous = kind
    return "".join(out)
