"""The safety probe: refusal rates of the base and the tuned model on built-in harmful requests and harmless
look-alikes (`probe`), recognised by a phrase rule or a classifier (`rule`)."""

from lmtune.evaluate.safety.probe import SETTINGS, Judge, compare_probes, probe_prompts, run_probe
from lmtune.evaluate.safety.rule import RULE, is_refusal, refusal_label

__all__ = ["RULE", "SETTINGS", "Judge", "compare_probes", "is_refusal", "probe_prompts", "refusal_label", "run_probe"]
