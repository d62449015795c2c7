"""The prediction modes as one interface: batches of (indices, raw answer, parsed, extras).

- generate: free greedy generation, parsed strictly (INVALID when off-format);
- loglik: the label with the highest log-likelihood (optionally calibrated); never INVALID;
- choice: greedy generation constrained to the label strings; never INVALID.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

MODES = ("generate", "loglik", "choice")


def iter_mode(mode: str, model, tokenizer, prompts: list[str], labels: Sequence[str],
              parse: Callable[[str, Sequence[str]], str], settings: dict[str, Any],
              prior: Sequence[float] | None = None, progress: bool = True,
              ) -> Iterator[list[tuple[int, str, str, dict]]]:
    """Yield one list of (prompt index, raw, parsed, extra fields) per finished batch."""
    from tunebench.generate import iter_generate
    from tunebench.loglik import iter_choice, iter_loglik, pick

    common = {"batch_size": settings["batch_size"], "share_prefix": settings["share_prefix"],
              "progress": progress}
    if mode == "generate":
        for batch, texts in iter_generate(model, tokenizer, prompts,
                                          max_new_tokens=settings["max_new_tokens"],
                                          stop_strings=settings["stop_strings"], **common):
            yield [(i, t, parse(t, labels), {}) for i, t in zip(batch, texts, strict=True)]
    elif mode == "loglik":
        for batch, scores in iter_loglik(model, tokenizer, prompts, labels, **common):
            out = []
            for i, row in zip(batch, scores, strict=True):
                raw = pick(row, labels)
                extra = {"scores": dict(zip(labels, (round(s, 5) for s in row), strict=True))}
                out.append((i, raw, pick(row, labels, prior) if prior else raw, extra))
            yield out
    elif mode == "choice":
        for batch, chosen in iter_choice(model, tokenizer, prompts, labels, **common):
            yield [(i, c, c, {}) for i, c in zip(batch, chosen, strict=True)]
    else:
        raise ValueError(f"unknown mode {mode!r}; known: {MODES}")


def content_free_prior(model, tokenizer, prompts: list[str], labels: Sequence[str],
                       fillers: Sequence[str]) -> list[float]:
    """p_cf: the label distribution the model gives the prompts' frame with no content."""
    from tunebench.loglik import calibration_prior, content_free_prompts, loglik_scores

    cf = content_free_prompts(prompts, fillers)
    return calibration_prior(loglik_scores(model, tokenizer, cf, labels, progress=False))


def label_distribution(parsed: Sequence[str], labels: Sequence[str]) -> dict[str, int]:
    from tunebench.parsing import INVALID

    return {label: sum(p == label for p in parsed) for label in [*labels, INVALID]}
