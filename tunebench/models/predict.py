"""What the predict stage does for every family: the prediction modes as one interface
(batches of (indices, raw answer, parsed, extras)), the checks of the predict settings that
the predict stage and the profiles share, the job a family's `predict` gets (PredictJob) and
the prediction files it writes.

- generate: free greedy generation, parsed strictly (INVALID when off-format);
- loglik: the label with the highest log-likelihood (optionally calibrated); never INVALID;
- choice: greedy generation constrained to the label strings; never INVALID.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tunebench.config import ConfigError, check_keys
from tunebench.evaluation.parsing import INVALID, get_parser
from tunebench.io import sha256_file, write_json, write_jsonl
from tunebench.running.provenance import hardware, package_versions

MODES = ("generate", "loglik", "choice")
# The keys of params `predict` (and runs.<run>.predict), and of runs.<run>.zero_shot.
PREDICT_KEYS = {"batch_size", "max_new_tokens", "parser", "stop_strings", "share_prefix",
                "calibrate", "content_free", "modes"}
REQUIRED_KEYS = {"batch_size", "max_new_tokens", "parser"}
ZERO_SHOT_KEYS = {"model", "modes"}
ZERO_SHOT_SYSTEM = "zeroshot_llm"  # the causal LM prompted zero-shot beside an encoder run


@dataclass
class PredictJob:
    """One model answering one dataset's test rows: `name` is the system its files are
    named after (base, tuned, zeroshot_llm), `kind` the system it is (base or tuned: which
    prompt, format and token cap apply), `adapter` the LoRA folder of a tuned system."""

    spec: Any  # tunebench.models.loading.ModelSpec
    model_dir: str
    name: str
    kind: str
    modes: list[str]
    adapter: Path | None
    task: dict[str, Any]
    rows: list[dict]
    cfg: dict[str, Any]  # the merged predict settings
    params: dict[str, Any]  # the whole params file (a family may need more of it)
    out_dir: Path
    train_labels: list[str]  # the training split's answers (the loglik variant choice)
    test_sha256: str  # of the test.jsonl the rows come from (score rejects stale files)

    @property
    def summarization(self) -> bool:
        return self.task.get("type", "classification") == "summarization"

    def parser_name(self) -> str | None:
        """The answer parser; None for summarization (the answer is the text)."""
        return None if self.summarization else self.cfg["parser"] or self.task["parser"]

    def parse(self) -> Callable[[str], str]:
        name = self.parser_name()
        if name is None:
            return str.strip
        parse = get_parser(name)
        return lambda text: parse(text, self.task["labels"])

    def adapter_record(self) -> dict | None:
        if self.adapter is None:
            return None
        return {"path": str(self.adapter),
                "sha256": sha256_file(self.adapter / "adapter_model.safetensors")}


def output_name(system: str, mode: str) -> str:
    """base.jsonl for generate (the reproduction), base-loglik.jsonl etc. for the others."""
    return f"{system}.jsonl" if mode in ("generate", "argmax") else f"{system}-{mode}.jsonl"


def answer_counts(task: dict, parsed: list[str]) -> dict:
    """Invalid answers and the label distribution; for summaries, the empty ones."""
    if task.get("type") == "summarization":
        return {"invalid": 0, "n_empty": sum(not p.strip() for p in parsed)}
    return {"invalid": sum(x == INVALID for x in parsed),
            "label_distribution": label_distribution(parsed, task["labels"])}


def write_predictions(job: PredictJob, mode: str, hashes: list[str], raws: list[str],
                      parsed: list[str], seconds: float, info: dict) -> None:
    """One pass's prediction rows and their .meta.json sidecar (the schema of the resumable
    causal modes, which write their own); `info` holds the settings and provenance."""
    out = job.out_dir / output_name(job.name, mode)
    result = [{"id": r["id"], "prompt_sha256": h, "raw": raw, "parsed": p,
               "target": r["completion"]}
              for r, h, raw, p in zip(job.rows, hashes, raws, parsed, strict=True)]
    write_jsonl(out, result)
    meta = {"system": out.name.removesuffix(".jsonl"), "kind": job.kind,
            "dataset": job.task["dataset"], "test_sha256": job.test_sha256, "mode": mode,
            **info, "n": len(result),
            "seconds": round(seconds, 3),
            "examples_per_s": round(len(result) / max(seconds, 1e-9), 3),
            "packages": package_versions(), "hardware": hardware(),
            **answer_counts(job.task, parsed)}
    write_json(out.with_suffix(".meta.json"), meta)
    print(f"predict {job.task['dataset']} {meta['system']} ({mode}): {len(result)} rows, "
          f"{meta['examples_per_s']:.2f} examples/s")


def iter_mode(mode: str, model, tokenizer, prompts: list[str], labels: Sequence[str],
              parse: Callable[[str, Sequence[str]], str], settings: dict[str, Any],
              prior: Sequence[float] | None = None, progress: bool = True,
              ) -> Iterator[list[tuple[int, str, str, dict]]]:
    """Yield one list of (prompt index, raw, parsed, extra fields) per finished batch."""
    from tunebench.models.generate import iter_generate
    from tunebench.models.loglik import iter_choice, iter_loglik, pick

    common = {"batch_size": settings["batch_size"], "share_prefix": settings["share_prefix"],
              "progress": progress, "max_prompt_tokens": settings.get("max_prompt_tokens")}
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
    from tunebench.models.loglik import calibration_prior, content_free_prompts, loglik_scores

    cf = content_free_prompts(prompts, fillers)
    return calibration_prior(loglik_scores(model, tokenizer, cf, labels, progress=False))


def label_distribution(parsed: Sequence[str], labels: Sequence[str]) -> dict[str, int]:
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


def stop_strings(value, system: str) -> list[str] | None:
    """predict.stop_strings: one list, or one per system."""
    if isinstance(value, dict):
        value = value.get(system)
    if value is not None and not (isinstance(value, list)
                                  and all(isinstance(s, str) and s for s in value)):
        raise ConfigError(f"params.yaml: predict.stop_strings: expected a list of non-empty "
                          f"strings (or one per system), got {value!r}")
    return value


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
    from tunebench.running.params import model_spec

    at = f"runs.{run}.zero_shot"
    check_keys(zero_shot, ZERO_SHOT_KEYS, f"params.yaml: {at}", ("model",))
    llm = model_spec(params, zero_shot["model"], f"{at}.model")
    if llm.family != "causal_lm":
        raise ConfigError(f"params.yaml: {at}.model: {llm.name} is not a causal LM")
    return llm


def loglik_variants(out, tokenizer, result: list[dict], labels: Sequence[str],
                    prior: Sequence[float], train_labels: Sequence[str], calibrate: bool):
    """The loglik answers of every variant (tunebench.models.loglik.LOGLIK_VARIANTS) from the label
    scores stored in `result`, the rows of <system>-loglik.jsonl (variant "calibrated" when
    `calibrate`, else "sum"). Returns (meta fields for that file, [(path, rows, meta)] for
    <system>-loglik_<variant>.jsonl of each other variant). Every meta names its variant and
    whether it is the one chosen by tunebench.models.loglik.choose_variant (from the training
    labels,
    never the test labels); without training labels none is chosen."""
    from tunebench.models.loglik import (
        LOGLIK_VARIANTS,
        choose_variant,
        label_token_ids,
        variant_answers,
    )

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
