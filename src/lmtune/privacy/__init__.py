"""Differentially private fine-tuning (``privacy:`` in the config): DP-SGD on Opacus.

``engine`` resolves the settings and builds Opacus's parts; ``trainer`` fits them into ``Trainer``.
"""

from lmtune.privacy.engine import Privacy, default_delta, per_example_hooks, resolve_privacy
from lmtune.privacy.trainer import PrivateTraining, private_arguments, private_trainer_class, private_training

__all__ = [
    "Privacy", "PrivateTraining", "default_delta", "per_example_hooks", "private_arguments", "private_trainer_class",
    "private_training", "resolve_privacy",
]  # fmt: skip
