"""Making a tuned model smaller: depth pruning (`prune`), the student that distillation then trains."""

from lmtune.compress.prune import choose_layers, decoder_layers, drop_layers, layer_scores, pruned_copy

__all__ = ["choose_layers", "decoder_layers", "drop_layers", "layer_scores", "pruned_copy"]
