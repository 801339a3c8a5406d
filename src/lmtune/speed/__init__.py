"""Speed levers for training, each behind its own config switch and each measured in ``bench/speed.py``.

- ``attention.py``: which attention kernel trains fastest here (``model.attn_implementation: auto``).
- ``dropout.py``: adapter dropout with a cheaper random mask (``training.fast_dropout``).
- the head and cross-entropy with their gradients computed in forward: ``lmtune.loss`` (``training.fused_loss``).
"""
