"""lmtune: fine-tune a pre-trained causal language model on your task and measure the gain."""

__version__ = "0.1.0"
