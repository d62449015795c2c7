"""Turning outputs into evidence: answer parsing, metrics, score, summaries, baselines, the
report, the published recipes and deviations, and the lm-eval cross-check."""
