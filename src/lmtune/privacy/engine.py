"""DP-SGD's parts, from Opacus: per-example gradient hooks, the noising optimizer, Poisson batches, the accountant.

Opacus's ``PrivacyEngine.make_private`` wraps a model, an optimizer and a data loader it is handed in one
call; ``Trainer`` creates its optimizer and data loader itself, later and separately. So lmtune builds
the same pieces ``make_private`` builds (``GradSampleModule``, ``DPOptimizer``, a
``UniformWithReplacementSampler``, the accountant's step hook), each at the point where Trainer needs it,
and drives them the way ``BatchMemoryManager`` does: a logical batch in physical chunks, every chunk
but the last a skipped step that only clips and accumulates.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Any

from lmtune.config.privacy import PrivacyConfig


def default_delta(train_rows: int) -> float:
    """1/N of the training rows, rounded down to a power of ten (1,000 rows: 1e-3; 534 rows: 1e-3)."""
    return 10.0 ** math.floor(math.log10(1.0 / max(train_rows, 1)))


@dataclass
class Privacy:
    """The run's DP-SGD settings, resolved: what the accountant and the optimizer are given."""

    noise_multiplier: float
    max_grad_norm: float
    delta: float
    sample_rate: float
    expected_batch: int
    physical_batch: int
    steps: int
    accountant_name: str
    poisson: bool
    target_epsilon: float | None = None
    accountant: Any = field(default=None, repr=False)

    def epsilon(self) -> float:
        """Epsilon spent so far, for the run's delta (0 before the first step)."""
        return float(self.accountant.get_epsilon(delta=self.delta)) if self.steps_taken() else 0.0

    def facts(self) -> dict[str, Any]:
        """The ``privacy`` entry of ``metrics.json``."""
        return {"epsilon": self.epsilon(), "delta": self.delta, "noise_multiplier": self.noise_multiplier,
                "max_grad_norm": self.max_grad_norm, "accountant": self.accountant_name,
                "target_epsilon": self.target_epsilon, "sample_rate": self.sample_rate,
                "expected_batch": self.expected_batch, "steps": self.steps_taken(),
                "poisson_sampling": self.poisson}  # fmt: skip

    def steps_taken(self) -> int:
        """Noised optimizer steps so far (the accountant keeps (noise, rate, count) entries)."""
        return sum(int(h[2]) for h in self.accountant.history) if self.accountant else 0


def resolve_privacy(
    section: PrivacyConfig, train_rows: int, batch: int, accumulation: int, epochs: float, max_steps: int
) -> Privacy:
    """The noise multiplier for ``target_epsilon`` (Opacus's search), the delta, the sample rate and the steps."""
    from opacus.accountants import create_accountant
    from opacus.accountants.utils import get_noise_multiplier

    expected = batch * accumulation  # the logical batch: one noised optimizer step
    rate = min(expected / max(train_rows, 1), 1.0)
    # Trainer's step count: one step per batch the sampler yields (Opacus's sampler yields int(1 / rate) per epoch)
    per_epoch = int(1 / rate) if section.poisson_sampling else math.ceil(train_rows / expected)
    steps = max_steps if max_steps > 0 else math.ceil(epochs * per_epoch)
    delta = section.delta if section.delta is not None else default_delta(train_rows)
    sigma = section.noise_multiplier
    if sigma is None:
        with warnings.catch_warnings():  # the search tries noise levels where RDP's order grid is loose: expected
            warnings.filterwarnings("ignore", message="Optimal order is the largest alpha")
            sigma = get_noise_multiplier(
                target_epsilon=section.target_epsilon, target_delta=delta, sample_rate=rate, steps=max(steps, 1),
                accountant=section.accountant,
            )  # fmt: skip
    return Privacy(
        noise_multiplier=float(sigma), max_grad_norm=section.max_grad_norm, delta=delta, sample_rate=rate,
        expected_batch=expected, physical_batch=batch, steps=steps, accountant_name=section.accountant,
        poisson=section.poisson_sampling, target_epsilon=section.target_epsilon,
        accountant=create_accountant(mechanism=section.accountant),
    )  # fmt: skip


def per_example_hooks(model: Any) -> Any:
    """Opacus's per-sample gradient hooks on every trainable layer of ``model`` (the model itself is kept).

    The returned ``GradSampleModule`` must stay referenced for the run: it owns the hooks. The loss it
    expects is the sum of per-example losses (``loss_reduction="sum"``); the optimizer divides by the
    expected batch.
    """
    from opacus import GradSampleModule

    return GradSampleModule(model, batch_first=True, loss_reduction="sum", strict=True)


def private_optimizer(optimizer: Any, privacy: Privacy, seed: int) -> Any:
    """``optimizer`` wrapped in Opacus's ``DPOptimizer`` (clip per example, add noise, average), with accounting."""
    import torch
    from opacus.optimizers import DPOptimizer

    generator = torch.Generator().manual_seed(seed + 1)  # the noise: reproducible runs (not secure_mode)
    dp = DPOptimizer(
        optimizer, noise_multiplier=privacy.noise_multiplier, max_grad_norm=privacy.max_grad_norm,
        expected_batch_size=privacy.expected_batch, loss_reduction="mean", generator=generator,
    )  # fmt: skip
    dp.attach_step_hook(privacy.accountant.get_optimizer_hook_fn(sample_rate=privacy.sample_rate))
    return dp


def batch_sampler(rows: int, privacy: Privacy, seed: int) -> Any:
    """Poisson sampling (each row in a batch with probability ``sample_rate``), or fixed shuffled batches."""
    import torch
    from opacus.utils.uniform_sampler import UniformWithReplacementSampler
    from torch.utils.data import BatchSampler, RandomSampler

    generator = torch.Generator().manual_seed(seed)
    if privacy.poisson:
        return UniformWithReplacementSampler(num_samples=rows, sample_rate=privacy.sample_rate, generator=generator)
    return BatchSampler(RandomSampler(range(rows), generator=generator), privacy.expected_batch, drop_last=False)


def chunks(rows: list, size: int) -> list[list]:
    """A logical batch in physical batches of at most ``size`` rows (Opacus's ``BatchSplittingSampler`` split).

    Sizes differ by at most one, as ``numpy.array_split`` makes them; the split is of positions because
    the rows are dicts of tensors, which numpy would try to turn into one array.
    """
    import numpy

    if not rows:
        return []
    parts = numpy.array_split(numpy.arange(len(rows)), math.ceil(len(rows) / size))
    return [[rows[i] for i in part] for part in parts]


def per_example_loss(logits: Any, labels: Any) -> Any:
    """Each example's mean token loss over its answer tokens (labels not -100), shape (batch,).

    The privacy unit is one example, so each example's loss is its own mean, not a share of the
    batch's token count as in Trainer's normalisation.
    """
    import torch

    shifted = labels[:, 1:]
    losses = torch.nn.functional.cross_entropy(
        logits[:, :-1].float().transpose(1, 2), shifted, ignore_index=-100, reduction="none"
    )  # (batch, length - 1)
    counts = (shifted != -100).sum(dim=1).clamp(min=1)
    return losses.sum(dim=1) / counts
