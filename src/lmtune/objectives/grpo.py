"""``objective: grpo`` — Group Relative Policy Optimization (Shao et al. 2024) on TRL's ``GRPOTrainer``: answers
sampled per prompt and scored by reward functions (``grpo.reward_functions``)."""

from __future__ import annotations

import importlib.util
from typing import Any

from lmtune.config import RunConfig
from lmtune.objectives import measures, on_trl
from lmtune.objectives.rewards import reward_functions
from lmtune.objectives.spec import Built, Objective, Task

# the held-out measures are the reward functions' means on greedy answers of grpo.max_completion_length tokens
UNUSED = (*on_trl.UNUSED_ON_TRL, "eval.metrics", "eval.max_new_tokens")


def trainer(model: Any, tokenizer: Any, task: Task, cfg: RunConfig, callbacks: list, echo: Any) -> Built:
    from trl import GRPOConfig, GRPOTrainer

    g = cfg.grpo
    args = on_trl.trl_config(
        GRPOConfig, cfg, num_generations=g.num_generations, max_completion_length=g.max_completion_length,
        beta=g.beta, loss_type=g.loss_type, temperature=g.temperature, **_vllm(g.use_vllm),
    )  # fmt: skip
    return on_trl.build(GRPOTrainer, args, model, tokenizer, task, cfg, callbacks, reward_funcs=reward_functions(g))


def _vllm(wanted: bool | None) -> dict[str, Any]:
    """vLLM for GRPO's generations where it can run: plain ``generate`` on a CPU (slow, but correct)."""
    import torch

    if wanted is None:
        wanted = torch.cuda.is_available() and importlib.util.find_spec("vllm") is not None
    return {"use_vllm": True, "vllm_mode": "colocate"} if wanted else {"use_vllm": False}


OBJECTIVE = Objective(
    name="grpo", prepare=on_trl.prepare, trainer=trainer, measures=measures.measures, unused=UNUSED,
    settings=lambda cfg: cfg.grpo.model_dump(), lever_note=on_trl.LEVER_NOTE,
)  # fmt: skip
