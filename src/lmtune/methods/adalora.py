"""AdaLoRA (Zhang et al. 2023): LoRA whose rank budget moves to the matrices that matter most."""

from __future__ import annotations

from typing import Any

from lmtune.errors import ConfigError


def _steps(value: int | float, total: int) -> int:
    return int(value * total) if isinstance(value, float) and value < 1 else int(value)


def apply(model: Any, cfg: Any, ctx: Any) -> Any:
    from peft import AdaLoraConfig, get_peft_model
    from transformers import TrainerCallback

    a = cfg.adalora
    total = ctx.total_steps
    tinit, tfinal = _steps(a.tinit, total), _steps(a.tfinal, total)
    if total <= 0 or tinit + tfinal >= total:
        raise ConfigError(
            f"adalora: tinit ({tinit}) + tfinal ({tfinal}) steps must be fewer than the run's {total} steps; "
            "lower them or train longer"
        )
    peft_config = AdaLoraConfig(
        task_type="CAUSAL_LM",
        init_r=a.init_r,
        target_r=a.target_r,
        tinit=tinit,
        tfinal=tfinal,
        deltaT=a.deltaT,
        beta1=a.beta1,
        beta2=a.beta2,
        orth_reg_weight=a.orth_reg_weight,
        lora_alpha=a.alpha,
        lora_dropout=a.dropout,
        target_modules=a.target_modules,
        total_step=total,
    )
    model = get_peft_model(model, peft_config)

    class BudgetAllocation(TrainerCallback):
        """PEFT's AdaLoRA needs ``update_and_allocate`` after each optimizer step, before grads are zeroed."""

        def on_optimizer_step(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            model.base_model.update_and_allocate(state.global_step)

    ctx.callbacks.append(BudgetAllocation())
    return model
