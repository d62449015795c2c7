"""The model side of the lm-eval cross-check: both scorers on the same texts and tokens.

- tunebench: tunebench.models.loglik.loglik_scores, on a prompt list and label strings;
- lm-eval: its HF backend (HFLM) loading the same folder (and LoRA adapter), run on an
  exported task through `simple_evaluate` with `--log_samples` output, as a user would run
  it; and its scoring engine (`HFLM._loglikelihood_tokens`) on token ids chosen here.

The two token splits (docs/crosscheck.md): tunebench scores `label` after the whole prompt;
lm-eval moves the prompt's trailing whitespace into the continuation and tokenizes
prompt + label jointly. `natural_split` states lm-eval's split as (prompts, labels) that
tunebench's scorer then tokenizes into exactly lm-eval's tokens (checked per example).
torch, transformers and lm_eval are imported inside the functions.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from tunebench.io import DataError


def boundary_whitespace(prompts: list[str], where: str) -> str:
    """The whitespace every prompt ends with (lm-eval moves it into the continuation)."""
    tails = {p[len(p.rstrip()):] for p in prompts}
    if len(tails) != 1:
        raise DataError(f"{where}: the prompts end in different whitespace "
                        f"{sorted(map(repr, tails))}; the split comparison needs one")
    return tails.pop()


def natural_split(prompts: list[str], labels: tuple[str, ...], where: str,
                  ) -> tuple[str, list[str], list[str]]:
    """(whitespace, prompts without it, whitespace + each label): lm-eval's split as text."""
    ws = boundary_whitespace(prompts, where)
    return ws, [p[:len(p) - len(ws)] for p in prompts], [ws + label for label in labels]


def token_pairs(tokenizer, prompts: list[str], labels) -> list[tuple[list[int], list[list[int]]]]:
    """The (context ids, [label ids]) tunebench's loglik scores for each prompt."""
    from tunebench.models.loading import encode_prompt
    from tunebench.models.loglik import label_token_ids

    label_ids = label_token_ids(tokenizer, labels)
    return [(encode_prompt(tokenizer, p), label_ids) for p in prompts]


def lmeval_pairs(lm, prompts: list[str], labels) -> list[tuple[list[int], list[list[int]]]]:
    """The (context ids, [continuation ids]) lm-eval scores for prompt + label (its own
    `_encode_pair`, as its `loglikelihood` calls it for a non-empty context)."""
    out = []
    for prompt in prompts:
        pairs = [lm._encode_pair(prompt, label) for label in labels]
        contexts = {tuple(c) for c, _ in pairs}
        if len(contexts) != 1:  # cannot happen with one whitespace tail; kept as a guard
            raise DataError(f"lm-eval split the prompt differently per label: {prompt[-40:]!r}")
        out.append((list(pairs[0][0]), [list(c) for _, c in pairs]))
    return out


def timed_scores(model, tokenizer, prompts, labels, batch_size: int, share_prefix: bool,
                 progress: bool = True) -> tuple[list[list[float]], float]:
    """tunebench's label log-likelihoods and the seconds they took."""
    from tunebench.models.loglik import loglik_scores

    start = time.perf_counter()
    scores = loglik_scores(model, tokenizer, prompts, list(labels), batch_size, share_prefix,
                           progress)
    return scores, time.perf_counter() - start


def load_lmeval(model_dir: str, adapter: Path | None, batch_size: int):
    """lm-eval's HF backend on the same folder, fp32, with the LoRA adapter via peft=."""
    from lm_eval.models.huggingface import HFLM

    from tunebench.models.loading import default_device

    return HFLM(pretrained=str(model_dir), peft=str(adapter) if adapter else None,
                dtype="float32", batch_size=batch_size, device=default_device(),
                trust_remote_code=False)


def lmeval_on_tokens(lm, pairs: list[tuple[list[int], list[list[int]]]]) -> list[list[float]]:
    """lm-eval's scoring engine on given (context, [continuation]) token ids."""
    requests = [((f"#{i}", f"#{k}"), ctx, cont) for i, (ctx, conts) in enumerate(pairs)
                for k, cont in enumerate(conts)]
    flat = [ll for ll, _ in lm._loglikelihood_tokens(requests, disable_tqdm=True)]
    width = len(pairs[0][1])
    return [flat[i * width:(i + 1) * width] for i in range(len(pairs))]


def run_lmeval(lm, task, out_dir: Path) -> tuple[Path, float, float]:
    """Run lm-eval on an exported task (include_path = its folder) with samples written to
    out_dir; returns (samples file, seconds of simple_evaluate, seconds in loglikelihood)."""
    from lm_eval import simple_evaluate
    from lm_eval.loggers import EvaluationTracker
    from lm_eval.tasks import TaskManager

    shutil.rmtree(out_dir, ignore_errors=True)
    inner, spent = lm.loglikelihood, [0.0]

    def loglikelihood(requests, disable_tqdm: bool = False):
        start = time.perf_counter()
        try:
            return inner(requests, disable_tqdm=disable_tqdm)
        finally:
            spent[0] += time.perf_counter() - start

    lm.loglikelihood = loglikelihood  # the evaluator looks the method up on the instance
    tracker = EvaluationTracker(output_path=str(out_dir))
    try:
        start = time.perf_counter()
        manager = TaskManager(include_path=str(task.yaml_path.parent), include_defaults=False)
        results = simple_evaluate(model=lm, tasks=[task.name], task_manager=manager,
                                  log_samples=True, bootstrap_iters=0,
                                  evaluation_tracker=tracker)
        seconds = time.perf_counter() - start
    finally:
        del lm.loglikelihood
    samples = results.pop("samples")
    tracker.save_results_aggregated(results=results, samples=samples)
    tracker.save_results_samples(task_name=task.name, samples=samples[task.name])
    found = sorted(Path(out_dir).rglob(f"samples_{task.name}_*.jsonl"))
    if len(found) != 1:
        raise DataError(f"{out_dir}: expected one lm-eval samples file for {task.name}, "
                        f"found {len(found)}")
    return found[0], seconds, spent[0]


def warm_up(model, tokenizer, lm, prompts: list[str], labels, batch_size: int) -> None:
    """One small untimed pass of each scorer, so neither pays first-call costs in the timing."""
    few = prompts[:min(len(prompts), batch_size, 8)]
    timed_scores(model, tokenizer, few, labels, batch_size, True, progress=False)
    lmeval_on_tokens(lm, token_pairs(tokenizer, few, labels))
