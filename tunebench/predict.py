"""The prediction modes as one interface: batches of (indices, raw answer, parsed, extras),
and the checks of the predict settings that the predict stage and the profiles share.

- generate: free greedy generation, parsed strictly (INVALID when off-format);
- loglik: the label with the highest log-likelihood (optionally calibrated); never INVALID;
- choice: greedy generation constrained to the label strings; never INVALID.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

from tunebench.config import ConfigError, check_keys

MODES = ("generate", "loglik", "choice")
# The keys of params `predict` (and runs.<run>.predict), and of runs.<run>.zero_shot.
PREDICT_KEYS = {"batch_size", "max_new_tokens", "parser", "stop_strings", "share_prefix",
                "calibrate", "content_free", "modes"}
REQUIRED_KEYS = {"batch_size", "max_new_tokens", "parser"}
ZERO_SHOT_KEYS = {"model", "modes"}


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


def check_settings(cfg: dict[str, Any], where: str) -> None:
    """The merged predict settings of a run (`where` names them for the message)."""
    check_keys(cfg, PREDICT_KEYS, f"params.yaml: {where}", REQUIRED_KEYS)


def check_modes(modes, where: str, summarization: bool, system: str = "base") -> list[str]:
    """The modes of `system`: one list for both systems, or {base: [...], tuned: [...]}."""
    if isinstance(modes, dict):
        check_keys(modes, {"base", "tuned"}, f"params.yaml: {where}", ("base", "tuned"))
        checked = {name: check_modes(value, f"{where}.{name}", summarization)
                   for name, value in modes.items()}
        return checked[system]
    if not isinstance(modes, list) or not modes or len(set(modes)) != len(modes):
        raise ConfigError(f"params.yaml: {where}: expected a non-empty list of distinct modes "
                          f"from {list(MODES)}, got {modes!r}")
    unknown = [m for m in modes if m not in MODES]
    if unknown:
        raise ConfigError(f"params.yaml: {where}: unknown mode(s) {unknown}; known: {list(MODES)}")
    if summarization and modes != ["generate"]:
        raise ConfigError(f"params.yaml: {where}: a summarization task has no labels to score, "
                          f"so only [generate] applies; got {modes}")
    return modes


def for_system(value, system: str, where: str):
    """A setting given once, or per system as {base: ..., tuned: ...}."""
    if isinstance(value, dict):
        if system not in value:
            raise ConfigError(f"params.yaml: {where} has no entry for '{system}'")
        value = value[system]
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ConfigError(f"params.yaml: {where}: expected a positive integer, got {value!r}")
    return value


def zero_shot_model(params: dict[str, Any], run: str, zero_shot: dict[str, Any]):
    """The ModelSpec of runs.<run>.zero_shot ({model, modes}), which must be a causal LM."""
    from tunebench.params import model_spec

    at = f"runs.{run}.zero_shot"
    check_keys(zero_shot, ZERO_SHOT_KEYS, f"params.yaml: {at}", ("model",))
    llm = model_spec(params, zero_shot["model"], f"{at}.model")
    if llm.family != "causal_lm":
        raise ConfigError(f"params.yaml: {at}.model: {llm.name} is not a causal LM")
    return llm


def loglik_variants(out, tokenizer, result: list[dict], labels: Sequence[str],
                    prior: Sequence[float], train_labels: Sequence[str], calibrate: bool):
    """The loglik answers of every variant (tunebench.loglik.LOGLIK_VARIANTS) from the label
    scores stored in `result`, the rows of <system>-loglik.jsonl (variant "calibrated" when
    `calibrate`, else "sum"). Returns (meta fields for that file, [(path, rows, meta)] for
    <system>-loglik_<variant>.jsonl of each other variant). Every meta names its variant and
    whether it is the one chosen by tunebench.loglik.choose_variant (from the training labels,
    never the test labels); without training labels none is chosen."""
    from tunebench.loglik import LOGLIK_VARIANTS, choose_variant, label_token_ids, variant_answers

    n_tokens = [len(ids) for ids in label_token_ids(tokenizer, labels)]
    scores = [[row["scores"][label] for label in labels] for row in result]
    answers = variant_answers(scores, labels, n_tokens, prior)
    selection = None
    if train_labels:
        best, distances = choose_variant(answers, labels, train_labels)
        selection = {"selected": best, "distances": distances,
                     "rule": "answer distribution closest (total variation) to the training "
                             "labels' distribution"}
    main = "calibrated" if calibrate else "sum"

    def meta(variant: str) -> dict:
        return {"loglik_variant": variant, "loglik_label_tokens": dict(zip(labels, n_tokens,
                                                                           strict=True)),
                "loglik_selected": selection is not None and selection["selected"] == variant,
                "loglik_selection": selection}

    others = []
    for variant in LOGLIK_VARIANTS:
        if variant == main:
            continue
        rows = [{**r, "raw": a, "parsed": a} for r, a in zip(result, answers[variant],
                                                               strict=True)]
        others.append((out.with_name(f"{out.stem}_{variant}.jsonl"), rows, meta(variant)))
    return meta(main), others
