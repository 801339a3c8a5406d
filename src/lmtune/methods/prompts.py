"""Prompt-learning methods: the model stays frozen, trained virtual tokens steer it.

* prompt tuning (Lester et al. 2021): embeddings of virtual tokens before the input;
* P-tuning (Liu et al. 2021): virtual tokens produced by a small prompt encoder;
* prefix tuning / P-tuning v2 (Li & Liang 2021; Liu et al. 2022): trained key/value
  prefixes in every layer ("deep" prompts).
"""

from __future__ import annotations

from typing import Any


def apply_prompt_tuning(model: Any, cfg: Any, ctx: Any) -> Any:
    from peft import PromptTuningConfig, PromptTuningInit, get_peft_model

    s = cfg.prompt_tuning
    init = {}
    if s.init_text:
        init = {
            "prompt_tuning_init": PromptTuningInit.TEXT,
            "prompt_tuning_init_text": s.init_text,
            "tokenizer_name_or_path": ctx.base_path,
        }
    return get_peft_model(
        model, PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=s.num_virtual_tokens, **init)
    )


def apply_p_tuning(model: Any, cfg: Any, ctx: Any = None) -> Any:
    from peft import PromptEncoderConfig, get_peft_model

    s = cfg.p_tuning
    return get_peft_model(
        model,
        PromptEncoderConfig(
            task_type="CAUSAL_LM",
            num_virtual_tokens=s.num_virtual_tokens,
            encoder_reparameterization_type=s.encoder_reparameterization_type,
            encoder_hidden_size=s.encoder_hidden_size,
        ),
    )


def apply_prefix_tuning(model: Any, cfg: Any, ctx: Any = None) -> Any:
    from peft import PrefixTuningConfig, get_peft_model

    s = cfg.prefix_tuning
    return get_peft_model(
        model,
        PrefixTuningConfig(
            task_type="CAUSAL_LM",
            num_virtual_tokens=s.num_virtual_tokens,
            prefix_projection=s.prefix_projection,
            encoder_hidden_size=s.encoder_hidden_size,
        ),
    )
