"""The figures of the lm-eval cross-check, from per-example label log-likelihoods.

Pure functions: score matrices (one row per example, one column per label, in the task's
label order) and target indices in, plain numbers out. tunebench.evaluation.crosscheck runs
the models.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence

# The goals: the same answers (argmax agreement) and the same numbers (per-choice
# log-likelihood, fp32) as lm-eval, at twice its speed or more.
GOALS = {"agreement": 0.995, "max_abs_loglik_diff": 1e-3, "speed_ratio": 2.0}

Scores = Sequence[Sequence[float]]


def argmax(row: Sequence[float]) -> int:
    """The best label's index; a tie goes to the earlier label (tunebench.models.loglik.pick and
    numpy.argmax, which lm-eval's acc uses, both do so)."""
    return max(range(len(row)), key=lambda k: (row[k], -k))


def _check(a: Scores, b: Scores, targets: Sequence[int]) -> None:
    if not a or len(a) != len(b) or len(a) != len(targets):
        raise ValueError(f"score matrices of {len(a)} and {len(b)} rows for {len(targets)} "
                         f"targets: expected the same non-zero number")
    for i, (ra, rb) in enumerate(zip(a, b, strict=True)):
        if len(ra) != len(rb) or not ra:
            raise ValueError(f"row {i}: {len(ra)} and {len(rb)} labels")


def accuracy(scores: Scores, targets: Sequence[int]) -> float:
    return sum(argmax(r) == t for r, t in zip(scores, targets, strict=True)) / len(targets)


def answer_counts(scores: Scores, labels: Sequence[str]) -> dict[str, int]:
    """How often each label is the answer (a label never chosen shows as 0)."""
    picks = [argmax(r) for r in scores]
    return {label: picks.count(k) for k, label in enumerate(labels)}


def compare_scores(a: Scores, b: Scores, targets: Sequence[int],
                   names: tuple[str, str] = ("a", "b")) -> dict[str, float | int]:
    """Two systems' label log-likelihoods on the same examples.

    agreement: share of examples with the same answer; max/median_abs_loglik_diff over every
    (example, label); max_offset_spread: the largest spread, within one example, of the
    per-label differences. A spread of ~0 means the two differ by one constant per example
    (e.g. one more token scored before every label), which can never change an answer.
    """
    _check(a, b, targets)
    diffs = [[x - y for x, y in zip(ra, rb, strict=True)] for ra, rb in zip(a, b, strict=True)]
    flat = [abs(d) for row in diffs for d in row]
    same = sum(argmax(ra) == argmax(rb) for ra, rb in zip(a, b, strict=True))
    return {"n": len(a), "agreement": same / len(a), "max_abs_loglik_diff": max(flat),
            "median_abs_loglik_diff": statistics.median(flat),
            "max_offset_spread": max(max(row) - min(row) for row in diffs),
            f"accuracy_{names[0]}": accuracy(a, targets),
            f"accuracy_{names[1]}": accuracy(b, targets)}


def split_preference(split_scores: Scores, boundary: Sequence[float],
                     natural_scores: Scores, tolerance: float = GOALS["max_abs_loglik_diff"],
                     ) -> dict[str, float]:
    """Which tokenization of the same text the model finds more likely.

    Both are conditioned on the prompt without its trailing whitespace: tunebench's split
    scores the whitespace token(s) (`boundary`, one log-probability per example) and then
    the label; lm-eval's (`natural_scores`) scores whitespace + label as the tokenizer joins
    them. Returns the shares of (example, label) pairs where lm-eval's split is more likely,
    where tunebench's is, and where they are equal within `tolerance` nats (the same tokens,
    as after a chat template's newline), and the mean log-ratio log P(lm-eval split) -
    log P(tunebench split), in nats.
    """
    ratios = [n - (w + s) for row_s, w, row_n in zip(split_scores, boundary, natural_scores,
                                                     strict=True)
              for s, n in zip(row_s, row_n, strict=True)]
    if not ratios:
        raise ValueError("no scores to compare")
    return {"lmeval_split_more_likely": sum(r > tolerance for r in ratios) / len(ratios),
            "tunebench_split_more_likely": sum(r < -tolerance for r in ratios) / len(ratios),
            "equally_likely": sum(abs(r) <= tolerance for r in ratios) / len(ratios),
            "mean_log_ratio": statistics.fmean(ratios)}


def speed(n: int, seconds: float) -> float:
    """Examples per second (a zero duration counts as 1 ns, never a division by zero)."""
    return n / max(seconds, 1e-9)


def goals_met(entry: dict, goals: dict[str, float] = GOALS) -> dict[str, bool]:
    """Each goal of one (task, system) entry of metrics/crosscheck.json."""
    return {"agreement": entry["agreement"] >= goals["agreement"],
            "max_abs_loglik_diff": entry["max_abs_loglik_diff"] <= goals["max_abs_loglik_diff"],
            "accuracy_equal": entry["accuracy_tunebench"] == entry["accuracy_lmeval"],
            "speed_ratio": entry["speed_ratio"] >= goals["speed_ratio"]}
