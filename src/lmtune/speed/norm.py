"""RMSNorm that keeps only its input and one number per row for backward (``training.fused_norm``).

Llama-style RMSNorm upcasts to float32 and autograd then keeps the float32 input and the normalised
float32 product: on SmolLM2 in bfloat16 that was 164 of the 445 MB a LoRA step kept for backward
(592 tokens, saved-tensor hooks). Here the forward runs without autograd and keeps the input in its
own dtype and the (rows, 1) reciprocal RMS; backward recomputes the normalised values, the same
arithmetic as the module. Liger Kernel fuses RMSNorm the same way on GPUs (Triton); this is PyTorch.

Only modules of the classes below are patched, and each only if, on a probe input, the patched forward
gives the module's own output exactly: a class with another formula (Gemma's ``1 + weight``) is left.
"""

from __future__ import annotations

import types
from functools import cache
from typing import Any

RMS_NORMS = ("LlamaRMSNorm", "MistralRMSNorm", "Qwen2RMSNorm", "Qwen3RMSNorm", "Phi3RMSNorm", "OlmoRMSNorm")


@cache
def rms_norm_function() -> Any:
    import torch

    class RMSNormFunction(torch.autograd.Function):
        @staticmethod
        def forward(ctx: Any, x: Any, weight: Any, eps: float) -> Any:
            x32 = x.float()
            rstd = torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps)
            ctx.save_for_backward(x, weight, rstd)
            return weight * (x32 * rstd).to(x.dtype)

        @staticmethod
        def backward(ctx: Any, grad: Any) -> Any:
            x, weight, rstd = ctx.saved_tensors
            xhat32 = x.float() * rstd
            grad_weight = None
            if ctx.needs_input_grad[1]:
                grad_weight = (grad * xhat32.to(x.dtype)).reshape(-1, weight.shape[-1]).sum(0).to(weight.dtype)
            g = (grad * weight).float()
            grad_x = rstd * (g - xhat32 * (g * xhat32).mean(-1, keepdim=True))
            return grad_x.to(x.dtype), grad_weight, None

    return RMSNormFunction


def _fused_forward(self: Any, hidden_states: Any) -> Any:
    return rms_norm_function().apply(hidden_states, self.weight, self.variance_epsilon)


def use_fused_norm(model: Any) -> int:
    """Patch every RMSNorm of a known class whose output the fused forward reproduces; returns how many."""
    import torch

    patched = 0
    for module in model.modules():
        if type(module).__name__ not in RMS_NORMS or not hasattr(module, "variance_epsilon"):
            continue
        probe = torch.randn(2, 3, module.weight.shape[-1], generator=torch.Generator().manual_seed(0))
        probe = probe.to(module.weight.device, module.weight.dtype)
        with torch.no_grad():
            expected = module(probe)
            fused = types.MethodType(_fused_forward, module)
            if not torch.equal(fused(probe), expected):
                continue
        module.forward = fused
        patched += 1
    return patched
