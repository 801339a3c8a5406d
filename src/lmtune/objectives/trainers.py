"""One TRL trainer per objective, built from the run config.  No loss is written here: TRL's are used.

TRL 1.x traps handled once, here:

* its configs default to ``bf16=True`` (``bf16=None`` means "not fp16"), which fails on a CPU-only
  machine: lmtune passes ``training.bf16`` as set, False by default;
* with a PEFT model and no ``ref_model`` the reference policy is the same model with its adapter
  switched off (one model in memory); lmtune passes the PEFT model and no reference;
* ``max_prompt_length`` and the adapter-name arguments are gone; lengths come from ``data.max_length``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from lmtune.config import RunConfig
from lmtune.train import training_argument_values


def trl_config(config_cls: type, cfg: RunConfig, **objective: Any) -> Any:
    """A TRL config from the ``training`` section plus the objective's own options."""
    args = training_argument_values(cfg)
    if "remove_unused_columns" not in (cfg.training.model_extra or {}):
        args.pop("remove_unused_columns", None)  # TRL's trainers choose the columns they keep
    args.setdefault("bf16", False)
    args.setdefault("fp16", False)
    return config_cls(**args, **objective)


def _lengths(cfg: RunConfig) -> dict[str, Any]:
    return {"max_length": cfg.data.max_length}


def build_dpo(model: Any, tokenizer: Any, train: Any, held_out: Any, cfg: RunConfig, callbacks: list) -> Any:
    from trl import DPOConfig, DPOTrainer

    d = cfg.dpo
    losses = [d.loss_type] if isinstance(d.loss_type, str) else list(d.loss_type)
    args = trl_config(DPOConfig, cfg, beta=d.beta, loss_type=losses, loss_weights=d.loss_weights,
                      label_smoothing=d.label_smoothing, **_lengths(cfg))  # fmt: skip
    return DPOTrainer(model=model, args=args, train_dataset=train, eval_dataset=held_out,
                      processing_class=tokenizer, callbacks=callbacks)  # fmt: skip


def build_kto(model: Any, tokenizer: Any, train: Any, held_out: Any, cfg: RunConfig, callbacks: list) -> Any:
    from trl import KTOConfig, KTOTrainer

    k = cfg.kto
    args = trl_config(KTOConfig, cfg, beta=k.beta, desirable_weight=k.desirable_weight,
                      undesirable_weight=k.undesirable_weight, **_lengths(cfg))  # fmt: skip
    return KTOTrainer(model=model, args=args, train_dataset=train, eval_dataset=held_out,
                      processing_class=tokenizer, callbacks=callbacks)  # fmt: skip


def build_orpo(model: Any, tokenizer: Any, train: Any, held_out: Any, cfg: RunConfig, callbacks: list) -> Any:
    from trl.experimental.orpo import ORPOConfig, ORPOTrainer

    args = trl_config(ORPOConfig, cfg, beta=cfg.orpo.beta, **_lengths(cfg))
    return ORPOTrainer(model=model, args=args, train_dataset=train, eval_dataset=held_out,
                       processing_class=tokenizer, callbacks=callbacks)  # fmt: skip


def build_simpo(model: Any, tokenizer: Any, train: Any, held_out: Any, cfg: RunConfig, callbacks: list) -> Any:
    from trl.experimental.cpo import CPOConfig, CPOTrainer

    s = cfg.simpo
    args = trl_config(CPOConfig, cfg, loss_type="simpo", beta=s.beta, simpo_gamma=s.gamma, cpo_alpha=s.cpo_alpha,
                      **_lengths(cfg))  # fmt: skip
    return CPOTrainer(model=model, args=args, train_dataset=train, eval_dataset=held_out,
                      processing_class=tokenizer, callbacks=callbacks)  # fmt: skip


def build_reward(model: Any, tokenizer: Any, train: Any, held_out: Any, cfg: RunConfig, callbacks: list) -> Any:
    from trl import RewardConfig, RewardTrainer

    r = cfg.reward
    args = trl_config(RewardConfig, cfg, center_rewards_coefficient=r.center_rewards_coefficient, **_lengths(cfg))
    return RewardTrainer(model=model, args=args, train_dataset=train, eval_dataset=held_out,
                         processing_class=tokenizer, callbacks=callbacks)  # fmt: skip


def build_grpo(model: Any, tokenizer: Any, train: Any, held_out: Any, cfg: RunConfig, callbacks: list) -> Any:
    from trl import GRPOConfig, GRPOTrainer

    from lmtune.objectives.rewards import reward_functions

    g = cfg.grpo
    args = trl_config(
        GRPOConfig, cfg, num_generations=g.num_generations, max_completion_length=g.max_completion_length,
        beta=g.beta, loss_type=g.loss_type, temperature=g.temperature, **_vllm(g.use_vllm),
    )  # fmt: skip
    return GRPOTrainer(model=model, reward_funcs=reward_functions(g), args=args, train_dataset=train,
                       eval_dataset=held_out, processing_class=tokenizer, callbacks=callbacks)  # fmt: skip


def _vllm(wanted: bool | None) -> dict[str, Any]:
    """vLLM for GRPO's generations where it can run: plain ``generate`` on a CPU (slow, but correct)."""
    import importlib.util

    import torch

    if wanted is None:
        wanted = torch.cuda.is_available() and importlib.util.find_spec("vllm") is not None
    return {"use_vllm": True, "vllm_mode": "colocate"} if wanted else {"use_vllm": False}


TRAINERS: dict[str, Callable[..., Any]] = {
    "dpo": build_dpo,
    "kto": build_kto,
    "orpo": build_orpo,
    "simpo": build_simpo,
    "reward": build_reward,
    "grpo": build_grpo,
}
