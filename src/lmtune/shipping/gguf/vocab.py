"""The tokenizer as llama.cpp reads it from a GGUF file: its vocabulary kind, tokens, merges or scores, specials.

Two kinds cover the families lmtune exports, read from the fast tokenizer's own ``tokenizer.json``:

* **byte-level BPE** (GPT-2 style: SmolLM, Llama 3, Qwen2/3, Mistral Nemo) -> llama.cpp's ``gpt2`` model with its
  merges and a *pre-tokenizer name*: the regex llama.cpp splits text with before BPE. llama.cpp's converter picks it
  by hashing the ids of a fixed text; that only knows the exact published tokenizers, so lmtune also recognises the
  split by the structure of ``tokenizer.json``'s pre-tokenizer (the regexes llama.cpp implements per name), which
  also holds for a tokenizer whose vocabulary was retrained or extended.
* **SentencePiece BPE with byte fallback** (Llama 2, Mistral 7B, Gemma, Phi-3) -> llama.cpp's ``llama`` model:
  pieces with scores and token types. llama.cpp merges the adjacent pair whose merged piece scores highest, so a
  piece's score is minus the rank of the first merge that makes it (SentencePiece's own scores when its
  ``tokenizer.model`` is at hand).

Anything else (WordPiece, Unigram, a split llama.cpp does not implement) is refused with one line.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from hashlib import sha256
from pathlib import Path
from typing import Any

import gguf

from lmtune.errors import ExportError

# llama.cpp's converter hashes the ids the tokenizer gives this text (convert_hf_to_gguf's get_vocab_base_pre).
CHECK_TEXT = (
    "\n \n\n \n\n\n \t \t\t \t\n  \n   \n    \n     \n🚀 (normal) 😶\u200d🌫️ (multiple emojis concatenated) ✅ 🦙🦙 "
    "3 33 333 3333 33333 333333 3333333 33333333 3.3 3..3 3...3 កាន់តែពិសេសអាច😁 ?我想在apple工作1314151天～ "
    "------======= нещо на Български ''''''```````\"\"\"\"......!!!!!!?????? I've been 'told he's there, "
    "'RE you sure? 'M not sure I'll make it, 'D you like some tea? We'Ve a'lL"
)
KNOWN_HASHES = {  # the published tokenizers' hashes, as llama.cpp's converter lists them
    "855059429035d75a914d1eda9f10a876752e281a054a7a3d421ef0533e5b6249": "smollm",  # SmolLM, SmolLM2
    "0ef9807a4087ebef797fc749390439009c3b9eda9ad1a097abbe738f486c01e5": "llama-bpe",  # Llama 3.x
    "e636dc30a262dcc0d8c323492e32ae2b70728f4df7dfe9737d9f920a282b8aea": "qwen2",  # Qwen1.5 / 2 / 2.5 / 3
    "d4540891389ea895b53b399da6ac824becc30f2fba0e9ddbb98f92e55ca0e97c": "qwen2",  # Qwen3 embedding variant
    "63b97e4253352e6f357cc59ea5b583e3a680eaeaf2632188c2b952de2588485e": "tekken",  # Mistral Nemo
    "3ce83efda5659b07b1ad37ca97ca5797ea4285d9b9ab0dc679e4a720c9da7454": "gpt-2",  # GPT-2
}
# The split regexes of tokenizer.json pre-tokenizers that llama.cpp implements, by llama.cpp's name for them.
LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|"
    r"\s+(?!\S)|\s+"
)
QWEN2_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
TEKKEN_SPLIT = (
    r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+|[^\r\n\p{L}\p{N}]?"
    r"[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|"
    r"\s+(?!\S)|\s+"
)
SPLITS = {LLAMA3_SPLIT: "llama-bpe", QWEN2_SPLIT: "qwen2", TEKKEN_SPLIT: "tekken"}
SPM_BYTE = re.compile(r"<0x[0-9A-Fa-f]{2}>")
SPM_SPACE = "\u2581"  # SentencePiece's visible space


@dataclass
class Vocabulary:
    """What ``tokenizer.ggml.*`` holds for one tokenizer."""

    model: str  # llama.cpp's vocabulary kind: "gpt2" (byte-level BPE) or "llama" (SentencePiece)
    pre: str  # llama.cpp's pre-tokenizer name ("default" for SentencePiece)
    tokens: list[str]
    types: list[int]
    merges: list[str] = field(default_factory=list)
    scores: list[float] | None = None
    add_space_prefix: bool = False
    specials: dict[str, int] = field(default_factory=dict)  # bos / eos / unk / pad -> id
    add_bos: bool = False
    add_eos: bool = False
    chat_template: Any = None

    def write(self, writer: gguf.GGUFWriter) -> None:
        writer.add_tokenizer_model(self.model)
        writer.add_tokenizer_pre(self.pre)
        writer.add_token_list(self.tokens)
        writer.add_token_types(self.types)
        if self.scores is not None:
            writer.add_token_scores(self.scores)
        if self.merges:
            writer.add_token_merges(self.merges)
        adders = {"bos": writer.add_bos_token_id, "eos": writer.add_eos_token_id,
                  "unk": writer.add_unk_token_id, "pad": writer.add_pad_token_id}  # fmt: skip
        for key, token_id in self.specials.items():
            adders[key](token_id)
        writer.add_add_bos_token(self.add_bos)
        writer.add_add_eos_token(self.add_eos)
        writer.add_add_space_prefix(self.add_space_prefix)
        if self.chat_template:
            writer.add_chat_template(self.chat_template)


def vocabulary(tokenizer: Any, vocab_size: int) -> Vocabulary:
    """The GGUF vocabulary of a fast tokenizer, padded to the model's ``vocab_size`` embedding rows."""
    spec = tokenizer_json(tokenizer)
    model = spec.get("model") or {}
    top = max(tokenizer.get_vocab().values())
    if top >= vocab_size:
        raise ExportError(
            f"GGUF export: the tokenizer has ids up to {top}, but the model has only {vocab_size} embedding rows"
        )
    if model.get("type") == "BPE" and model.get("byte_fallback"):
        vocab = _sentencepiece(tokenizer, spec, vocab_size)
    elif model.get("type") == "BPE" and _has(spec.get("pre_tokenizer"), "ByteLevel"):
        vocab = _byte_level(tokenizer, spec, vocab_size)
    else:
        kind = model.get("type") or type(tokenizer).__name__
        raise ExportError(
            "GGUF export supports byte-level BPE (GPT-2 style) and SentencePiece BPE tokenizers with byte fallback; "
            f"this one is {kind}"
        )
    _add_specials(vocab, tokenizer)
    return vocab


def tokenizer_json(tokenizer: Any) -> dict[str, Any]:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise ExportError(f"GGUF export needs a fast (tokenizers-backed) tokenizer; got {type(tokenizer).__name__}")
    return json.loads(backend.to_str())


def _has(node: Any, kind: str) -> bool:
    if not isinstance(node, dict):
        return False
    return node.get("type") == kind or any(
        _has(n, kind) for n in node.get("pretokenizers") or node.get("normalizers") or ()
    )


# --------------------------------------------------------------------------- byte-level BPE


def _byte_level(tokenizer: Any, spec: dict[str, Any], vocab_size: int) -> Vocabulary:
    tokens, types = _tokens_and_types(tokenizer, vocab_size, sentencepiece=False)
    merges = [m if isinstance(m, str) else " ".join(m) for m in spec["model"].get("merges") or ()]
    return Vocabulary("gpt2", pre_tokenizer_name(tokenizer, spec), tokens, types, merges=merges)


def pre_tokenizer_name(tokenizer: Any, spec: dict[str, Any]) -> str:
    """llama.cpp's name for the tokenizer's split: by the published hash, else by the pre-tokenizer's structure."""
    digest = sha256(str(tokenizer.encode(CHECK_TEXT)).encode()).hexdigest()  # as the converter hashes it
    if digest in KNOWN_HASHES:
        return KNOWN_HASHES[digest]
    pre = spec.get("pre_tokenizer") or {}
    steps = pre.get("pretokenizers") if pre.get("type") == "Sequence" else [pre]
    kinds = [step.get("type") for step in steps]
    if kinds == ["ByteLevel"] and steps[0].get("use_regex", True):
        return "gpt-2"
    if kinds == ["Digits", "ByteLevel"] and steps[0].get("individual_digits") and steps[1].get("use_regex", True):
        return "smollm"
    if kinds == ["Split", "ByteLevel"] and not steps[1].get("use_regex", True):
        regex = (steps[0].get("pattern") or {}).get("Regex")
        if regex in SPLITS and steps[0].get("behavior") == "Isolated":
            return SPLITS[regex]
    raise ExportError(
        "GGUF export: the tokenizer splits text in a way llama.cpp does not recognise (known: gpt-2, smollm, "
        f"{', '.join(sorted(set(SPLITS.values())))}); its pre-tokenizer is {json.dumps(pre)[:200]}"
    )


# --------------------------------------------------------------------------- SentencePiece


def _sentencepiece(tokenizer: Any, spec: dict[str, Any], vocab_size: int) -> Vocabulary:
    tokens, types = _tokens_and_types(tokenizer, vocab_size, sentencepiece=True)
    scores = _spm_scores(tokenizer, tokens) or _scores_from_merges(spec, tokens)
    return Vocabulary("llama", "default", tokens, types, scores=scores, add_space_prefix=_adds_space_prefix(spec))


def _spm_scores(tokenizer: Any, tokens: list[str]) -> list[float] | None:
    """SentencePiece's own scores, when the tokenizer still knows its ``tokenizer.model``."""
    path = getattr(tokenizer, "vocab_file", None)
    if not path or not Path(path).is_file():
        return None
    from sentencepiece import SentencePieceProcessor

    processor = SentencePieceProcessor()
    processor.LoadFromFile(str(path))
    by_piece = {processor.IdToPiece(i): processor.GetScore(i) for i in range(processor.vocab_size())}
    # pieces added on top of the SentencePiece model score -1000, as llama.cpp's converter gives them
    return [by_piece.get(t, -1000.0) for t in tokens] if by_piece else None


def _scores_from_merges(spec: dict[str, Any], tokens: list[str]) -> list[float]:
    """Minus the rank of the first merge that makes each piece; pieces no merge makes score below every merge."""
    rank: dict[str, int] = {}
    for i, merge in enumerate(spec["model"].get("merges") or ()):
        left, right = merge.split(" ", 1) if isinstance(merge, str) else merge
        rank.setdefault(left + right, i)
    floor = len(rank) + 1
    return [-float(rank[t]) if t in rank else -float(floor + i) for i, t in enumerate(tokens)]


def _adds_space_prefix(spec: dict[str, Any]) -> bool:
    """Whether the tokenizer puts a "▁" before the text (SentencePiece's add_dummy_prefix)."""
    pre = spec.get("pre_tokenizer") or {}
    steps = pre.get("pretokenizers") if pre.get("type") == "Sequence" else [pre]
    for step in steps:
        if step.get("type") == "Metaspace":
            return step.get("prepend_scheme", "always" if step.get("add_prefix_space", True) else "never") != "never"
    normalizer = spec.get("normalizer") or {}
    steps = normalizer.get("normalizers") if normalizer.get("type") == "Sequence" else [normalizer]
    return any(s.get("type") == "Prepend" and s.get("prepend") == SPM_SPACE for s in steps if s)


# --------------------------------------------------------------------------- shared


def _tokens_and_types(tokenizer: Any, vocab_size: int, sentencepiece: bool) -> tuple[list[str], list[int]]:
    by_id = {i: token for token, i in tokenizer.get_vocab().items()}
    added = tokenizer.added_tokens_decoder
    unk = tokenizer.unk_token_id
    tokens, types = [], []
    for i in range(vocab_size):
        if i not in by_id:  # embedding rows past the tokenizer (padded vocabularies)
            tokens.append(f"[PAD{i}]")
            types.append(gguf.TokenType.UNUSED)
            continue
        token = by_id[i]
        tokens.append(token)
        if i in added:  # special ones (chat markers, <|endoftext|>) are never printed by llama.cpp
            types.append(gguf.TokenType.CONTROL if added[i].special else gguf.TokenType.USER_DEFINED)
        elif sentencepiece and i == unk:
            types.append(gguf.TokenType.UNKNOWN)
        elif sentencepiece and SPM_BYTE.fullmatch(token):
            types.append(gguf.TokenType.BYTE)
        else:
            types.append(gguf.TokenType.NORMAL)
    if sentencepiece and unk is not None and unk in added:
        types[unk] = gguf.TokenType.UNKNOWN
    return tokens, types


def _add_specials(vocab: Vocabulary, tokenizer: Any) -> None:
    ids = {"bos": tokenizer.bos_token_id, "eos": tokenizer.eos_token_id,
           "unk": tokenizer.unk_token_id, "pad": tokenizer.pad_token_id}  # fmt: skip
    vocab.specials = {key: i for key, i in ids.items() if i is not None}
    vocab.add_bos = _adds(tokenizer, ids["bos"], first=True)
    vocab.add_eos = _adds(tokenizer, ids["eos"], first=False)
    template = getattr(tokenizer, "chat_template", None)
    if isinstance(template, dict):  # several named templates: llama.cpp keeps "default" as the main one
        template = [{"name": key, "template": value} for key, value in template.items()]
    vocab.chat_template = template or None


def _adds(tokenizer: Any, token_id: int | None, first: bool) -> bool:
    if token_id is None:
        return False
    with_special = tokenizer.encode("a", add_special_tokens=True)
    without = tokenizer.encode("a", add_special_tokens=False)
    return len(with_special) > len(without) and with_special[0 if first else -1] == token_id
