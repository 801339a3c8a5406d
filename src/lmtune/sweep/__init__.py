"""Hyper-parameter search (``lmtune sweep``) with Optuna: each trial a whole run in its own folder."""
