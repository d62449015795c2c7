"""Scoring modes that cannot answer off-format: `loglik` and `choice`.

- `loglik`: every label's full token sequence is scored by its log-likelihood after the
  prompt; the best one is the answer. Per batch: one prefill of the prompts (the shared
  prefix once, see tunebench.models.generate), whose last logits score every label's first token,
  then, only when some label has more than one token, ONE more forward pass over all
  (prompt, label) pairs on the prompt's KV cache repeated once per label.
- calibration (Zhao et al., 2021, "Calibrate Before Use"): label probabilities, normalised
  over the label set, are divided by those the model gives a content-free input ("N/A", "",
  "[MASK]" in place of the example's text), which removes the model's prior toward one label.
- `choice`: greedy generation constrained to the label strings (a token trie); it answers
  what free generation would if it had to pick a label, token by token.

Label token ids are `tokenizer(label, add_special_tokens=False)`, exactly as training
tokenizes a completion (tunebench.models.train_qlora.tokenize_example), so the tuned model is
scored on
what it was trained to produce.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

from tunebench.models.generate import Prefill, eos_ids, length_batches, step
from tunebench.models.loading import encode_prompt

CONTENT_FREE = ("N/A", "", "[MASK]")


def label_token_ids(tokenizer, labels: Sequence[str]) -> list[list[int]]:
    ids = [tokenizer(label, add_special_tokens=False)["input_ids"] for label in labels]
    empty = [label for label, row in zip(labels, ids, strict=True) if not row]
    if empty:
        raise ValueError(f"labels tokenize to nothing: {empty}")
    if len({tuple(row) for row in ids}) < len(ids):
        raise ValueError(f"two labels share one token sequence: {list(labels)}")
    return ids


def _encode(tokenizer, prompts: Sequence[str], max_tokens: int | None = None) -> list[list[int]]:
    return [encode_prompt(tokenizer, p, max_tokens) for p in prompts]


def iter_loglik(model, tokenizer, prompts: list[str], labels: Sequence[str],
                batch_size: int = 16, share_prefix: bool = True, progress: bool = True,
                max_prompt_tokens: int | None = None,
                ) -> Iterator[tuple[list[int], list[list[float]]]]:
    """Yield (prompt indices, [[log P(label | prompt) for each label] per prompt]) per batch."""
    import torch
    from tqdm.auto import tqdm

    model.eval()
    label_ids = label_token_ids(tokenizer, labels)
    encoded = _encode(tokenizer, prompts, max_prompt_tokens)
    batches = length_batches([len(e) for e in encoded], batch_size)
    if not batches:
        return
    prefill = Prefill(model, tokenizer, encoded, share_prefix)
    n_labels, longest = len(label_ids), max(len(t) for t in label_ids)
    first = torch.tensor([t[0] for t in label_ids])
    for batch in tqdm(batches, desc="loglik", unit="batch", disable=not progress):
        logits, cache, mask, positions = prefill.run(batch)
        scores = torch.log_softmax(logits, -1)[:, first.to(logits.device)]  # [B, K]
        if longest > 1:
            scores = scores + _continuations(model, cache, mask, positions, label_ids,
                                             prefill.pad_id, n_labels).view(len(batch), -1)
        yield batch, scores.cpu().tolist()


def _continuations(model, cache, mask, positions, label_ids, pad_id, n_labels):
    """log P(label tokens 2..m | prompt, token 1) for every (row, label), in one forward pass
    over the prompt cache repeated once per label; shorter labels are right-padded (their
    padded positions are never read)."""
    import torch

    width = max(len(t) for t in label_ids) - 1
    ids = torch.tensor([t[:-1] + [pad_id] * (width + 1 - len(t)) for t in label_ids])
    targets = torch.tensor([t[1:] + [pad_id] * (width + 1 - len(t)) for t in label_ids])
    valid = torch.tensor([[1.0] * (len(t) - 1) + [0.0] * (width + 1 - len(t))
                          for t in label_ids])
    rows = mask.shape[0]
    cache.batch_repeat_interleave(n_labels)
    device = mask.device
    mask = torch.cat([mask.repeat_interleave(n_labels, 0),
                      torch.ones(rows * n_labels, width, dtype=mask.dtype, device=device)], 1)
    pos = positions.repeat_interleave(n_labels)[:, None] + torch.arange(width, device=device)
    with torch.inference_mode():
        out = model(input_ids=ids.repeat(rows, 1).to(device), attention_mask=mask,
                    position_ids=pos, past_key_values=cache, use_cache=True)
    logp = torch.log_softmax(out.logits.float(), -1)
    picked = logp.gather(-1, targets.repeat(rows, 1).to(device)[..., None])[..., 0]
    return (picked * valid.repeat(rows, 1).to(device)).sum(-1)


def loglik_scores(model, tokenizer, prompts: list[str], labels: Sequence[str],
                  batch_size: int = 16, share_prefix: bool = True, progress: bool = True,
                  ) -> list[list[float]]:
    out: list[list[float] | None] = [None] * len(prompts)
    for batch, scores in iter_loglik(model, tokenizer, prompts, labels, batch_size,
                                     share_prefix, progress):
        for i, row in zip(batch, scores, strict=True):
            out[i] = row
    return out  # type: ignore[return-value]


def content_free_prompts(prompts: Sequence[str], fillers: Sequence[str] = CONTENT_FREE,
                         ) -> list[str]:
    """The prompts with their varying part (the example's text) replaced by each filler.

    The varying part is what lies between the longest prefix and suffix all prompts share,
    widened to word boundaries so a shared first letter of every text is not kept.
    """
    if len(prompts) < 2:
        raise ValueError("calibration needs at least two prompts to find their shared frame")
    head = _common_prefix(prompts)
    tail = _common_prefix([p[len(head):][::-1] for p in prompts])[::-1]
    cut = max(head.rfind(" "), head.rfind("\n"))
    head = head[:cut + 1] if cut >= 0 else ""
    starts = [i for i in (tail.find(" "), tail.find("\n")) if i >= 0]
    tail = tail[min(starts):] if starts else ""
    return [head + filler + tail for filler in fillers]


def _common_prefix(texts: Sequence[str]) -> str:
    first = min(texts, key=len)
    n = 0
    while n < len(first) and all(t[n] == first[n] for t in texts):
        n += 1
    return first[:n]


def normalise(scores: Sequence[float]) -> list[float]:
    """Log-likelihoods -> probabilities over the label set."""
    top = max(scores)
    exp = [math.exp(s - top) for s in scores]
    total = sum(exp)
    return [e / total for e in exp]


def calibration_prior(content_free_scores: Sequence[Sequence[float]]) -> list[float]:
    """Mean label distribution over the content-free prompts (p_cf of Zhao et al.)."""
    probs = [normalise(s) for s in content_free_scores]
    return [sum(col) / len(col) for col in zip(*probs, strict=True)]


def pick(scores: Sequence[float], labels: Sequence[str], prior: Sequence[float] | None = None,
         ) -> str:
    """The best label; with a prior, by p(label) / p_cf(label) (ties go to the earlier one)."""
    if prior is None:
        values = list(scores)
    else:
        values = [p / max(q, 1e-12) for p, q in zip(normalise(scores), prior, strict=True)]
    return labels[max(range(len(labels)), key=lambda k: (values[k], -k))]


def iter_choice(model, tokenizer, prompts: list[str], labels: Sequence[str],
                batch_size: int = 16, share_prefix: bool = True, progress: bool = True,
                max_prompt_tokens: int | None = None,
                ) -> Iterator[tuple[list[int], list[str]]]:
    """Yield (prompt indices, chosen labels) per batch: greedy decoding where each step may
    only take a token that continues some label (EOS ends a label that another extends)."""
    import torch
    from tqdm.auto import tqdm

    model.eval()
    label_ids = label_token_ids(tokenizer, labels)
    eos = min(eos_ids(model, tokenizer)) if eos_ids(model, tokenizer) else None
    encoded = _encode(tokenizer, prompts, max_prompt_tokens)
    batches = length_batches([len(e) for e in encoded], batch_size)
    if not batches:
        return
    prefill = Prefill(model, tokenizer, encoded, share_prefix)
    for batch in tqdm(batches, desc="choice", unit="batch", disable=not progress):
        logits, cache, mask, positions = prefill.run(batch)
        chosen: list[list[int]] = [[] for _ in batch]
        answers: list[str | None] = [None] * len(batch)
        active = list(range(len(batch)))
        while True:
            tokens, keep = [], []
            for k, row in enumerate(active):
                allowed = _allowed(label_ids, chosen[row], eos)
                options = torch.tensor(sorted(allowed))
                token = int(options[logits[k, options.to(logits.device)].argmax()])
                done = _finished(label_ids, chosen[row], token, eos)
                if done is not None:
                    answers[row] = labels[done]
                else:
                    chosen[row].append(token)
                    keep.append(k)
                    tokens.append(token)
            if not keep:
                break
            if len(keep) < len(active):
                select = torch.tensor(keep, device=mask.device)
                cache.batch_select_indices(select)
                mask, positions = mask[select], positions[select]
                active = [active[k] for k in keep]
            logits, cache, mask, positions = step(
                model, cache, mask, positions, torch.tensor(tokens, device=mask.device))
        yield batch, answers  # type: ignore[misc]


def _allowed(label_ids: list[list[int]], prefix: list[int], eos: int | None) -> set[int]:
    n = len(prefix)
    allowed = {t[n] for t in label_ids if len(t) > n and t[:n] == prefix}
    if eos is not None and any(t == prefix for t in label_ids):
        allowed.add(eos)
    return allowed


def _finished(label_ids: list[list[int]], prefix: list[int], token: int, eos: int | None,
              ) -> int | None:
    """Index of the label completed by taking `token` after `prefix`, if that ends it."""
    if token == eos and prefix in label_ids:
        return label_ids.index(prefix)
    path = prefix + [token]
    if path in label_ids and not any(len(t) > len(path) and t[:len(path)] == path
                                     for t in label_ids):
        return label_ids.index(path)
    return None


# Ways to turn the label log-likelihoods into an answer (the loglik "knowledge probe"):
# summed log-probability of the label's tokens; the same per token (labels of more tokens are
# not penalised for their length); and the summed one divided by the content-free prior.
LOGLIK_VARIANTS = ("sum", "mean", "calibrated")


def variant_answers(scores: Sequence[Sequence[float]], labels: Sequence[str],
                    n_tokens: Sequence[int], prior: Sequence[float]) -> dict[str, list[str]]:
    """{variant: answers} for every row of label log-likelihoods (see LOGLIK_VARIANTS)."""
    return {
        "sum": [pick(row, labels) for row in scores],
        "mean": [pick([s / n for s, n in zip(row, n_tokens, strict=True)], labels)
                 for row in scores],
        "calibrated": [pick(row, labels, prior) for row in scores],
    }


def distribution(answers: Sequence[str], labels: Sequence[str]) -> list[float]:
    """Share of each label among the answers."""
    return [sum(a == label for a in answers) / max(len(answers), 1) for label in labels]


def choose_variant(answers: dict[str, list[str]], labels: Sequence[str],
                   train_labels: Sequence[str]) -> tuple[str, dict[str, float]]:
    """The variant whose answer distribution over the test inputs is closest (total variation)
    to the label distribution of the training split, and every variant's distance.

    No test label is read: a probe that never answers one of the labels (the summed
    log-likelihood of SmolLM2 never said "neutral" on 400 FinGPT rows where it is 41-66% of
    the labels) is far from the training distribution and loses. Ties keep the order of
    LOGLIK_VARIANTS.
    """
    if not train_labels:
        raise ValueError("choosing a loglik variant needs the training labels")
    target = distribution(train_labels, labels)
    distances = {name: round(0.5 * sum(abs(p - q) for p, q in
                                       zip(distribution(ans, labels), target, strict=True)), 6)
                 for name, ans in answers.items()}
    best = min(LOGLIK_VARIANTS, key=lambda name: (distances[name], LOGLIK_VARIANTS.index(name)))
    return best, distances
