"""Shared fixtures: the embedded model's real tokenizer, tiny random models, small data files.

No test needs the Hugging Face hub: the hub is switched off for this process (and the
subprocesses it starts), the tokenizer comes from the embedded GGUF file, and the models
that are trained are tiny random ones built from a config.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import EMBEDDED, EVAL_ROWS, TRAIN_ROWS, tiny_llama_config, write_jsonl

BPE_TEXTS = ["Hello world!", "The answer is 2024, not 42.", "  spaces\tand\nnewlines  ", "naïve café 😀 <|im_end|>"]

# Before anything imports huggingface_hub / transformers / datasets (they read these at import
# time). Set, not defaulted: an HF_HUB_OFFLINE=0 in the caller's shell must not let tests go online.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session", autouse=True)
def hub_off() -> Iterator[Callable[..., bool]]:
    """The hub probe answers "unreachable" at once, also in a test that unsets HF_HUB_OFFLINE.

    Yields the real ``lmtune.models.hub_reachable`` for the test of the probe itself.
    """
    import lmtune.models

    real = lmtune.models.hub_reachable
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(lmtune.models, "hub_reachable", lambda timeout=0.0: False)
        yield real


@pytest.fixture(scope="session", autouse=True)
def lmtune_cache() -> Path:
    """A stable cache folder for the dequantised embedded model (converted once, ~25 s).

    An LMTUNE_CACHE already set is respected; otherwise the tool's own default is used, so
    the conversion is shared with normal use of the tool and not repeated per test session.
    Tests of the token cache set their own (empty) LMTUNE_CACHE with monkeypatch.
    """
    before = os.environ.get("LMTUNE_CACHE")
    cache = Path(before or Path.home() / ".cache" / "lmtune")
    os.environ["LMTUNE_CACHE"] = str(cache)
    # Runs in tests cache their tokenised data under <cache>/datasets, keyed on tmp paths that are
    # never seen again: remove the entries this session made, so test runs do not pile them up.
    tokens = cache / "datasets"
    existing = set(tokens.glob("*.pkl"))
    yield cache
    for entry in set(tokens.glob("*.pkl")) - existing:
        entry.unlink(missing_ok=True)
    if before is None:
        os.environ.pop("LMTUNE_CACHE", None)
    else:
        os.environ["LMTUNE_CACHE"] = before


@pytest.fixture(scope="session")
def embedded_dir(lmtune_cache: Path) -> Path:
    from lmtune.models import resolve

    return resolve(EMBEDDED)


@pytest.fixture(scope="session")
def tokenizer(embedded_dir: Path) -> Any:
    """The real SmolLM2-135M-Instruct tokenizer (chat template, pad token == EOS token). Do not mutate."""
    from lmtune.models import load_tokenizer

    return load_tokenizer(embedded_dir)


@pytest.fixture(scope="session")
def plain_tokenizer(embedded_dir: Path) -> Any:
    """The same tokenizer without a chat template (as a base model's would be)."""
    from lmtune.models import load_tokenizer

    tok = load_tokenizer(embedded_dir)
    tok.chat_template = None
    return tok


def _tiny_gpt2_config(tokenizer: Any) -> Any:
    from transformers import GPT2Config

    return GPT2Config(
        vocab_size=len(tokenizer),
        n_embd=32,
        n_layer=2,
        n_head=4,
        n_positions=512,
        bos_token_id=tokenizer.eos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )


def _save_model(config: Any, tokenizer: Any, folder: Path, seed: int) -> Path:
    import torch
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory: pytest.TempPathFactory, tokenizer: Any) -> Path:
    """A Hugging Face folder with a tiny random Llama-style model (seeded) and the real tokenizer."""
    return _save_model(tiny_llama_config(tokenizer), tokenizer, tmp_path_factory.mktemp("tiny-llama"), seed=0)


@pytest.fixture(scope="session")
def tiny_gpt2_dir(tmp_path_factory: pytest.TempPathFactory, plain_tokenizer: Any) -> Path:
    """A tiny random GPT-2-style model whose tokenizer has no chat template (plain layout)."""
    return _save_model(_tiny_gpt2_config(plain_tokenizer), plain_tokenizer, tmp_path_factory.mktemp("tiny-gpt2"), 1)


@pytest.fixture
def tiny_llama(tiny_llama_dir: Path) -> Any:
    """A fresh copy of the tiny Llama model, in eval mode."""
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(tiny_llama_dir).eval()


@pytest.fixture(scope="session")
def lora_run(tmp_path_factory: pytest.TempPathFactory, tiny_llama_dir: Path) -> Path:
    """A finished LoRA run folder on the tiny Llama (a few seconds); do not write into it."""
    from helpers import tiny_run_raw

    from lmtune.config import validate_config
    from lmtune.pipeline import finetune

    root = tmp_path_factory.mktemp("lora-run")
    train = write_jsonl(root / "train.jsonl", TRAIN_ROWS)
    held_out = write_jsonl(root / "eval.jsonl", EVAL_ROWS)
    raw = tiny_run_raw(tiny_llama_dir, train, held_out, root / "run")
    raw["eval"].update({"base": False, "reference": None})
    finetune(validate_config(raw), echo=lambda *_: None)
    return root / "run"


@pytest.fixture(scope="session")
def bpe_tokenizer() -> Any:
    """A ~300-token byte-level BPE with ChatML markers (GPT-2's split: llama.cpp's 'gpt-2'). Do not mutate."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(
        [*BPE_TEXTS, "What is 12 plus 30? 12 plus 30 is 42.", "user assistant system"] * 10, trainer
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, eos_token="<|im_end|>", pad_token="<|im_end|>", unk_token="<|endoftext|>"
    )
    tokenizer.chat_template = (
        "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>\n' }}{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
    )
    return tokenizer


# --------------------------------------------------------------------------- data files


@pytest.fixture
def jsonl(tmp_path: Path) -> Callable[[str, list[Any]], Path]:
    """``jsonl("name.jsonl", rows)`` writes rows (one JSON object a line) into tmp_path."""

    def make(name: str, rows: list[Any]) -> Path:
        return write_jsonl(tmp_path / name, rows)

    return make


@pytest.fixture
def task_files(tmp_path: Path) -> tuple[Path, Path]:
    """(train.jsonl, eval.jsonl): a small prompt/completion task; one eval row has two references."""
    folder = tmp_path / "data"
    folder.mkdir()
    return write_jsonl(folder / "train.jsonl", TRAIN_ROWS), write_jsonl(folder / "eval.jsonl", EVAL_ROWS)
