"""Fast batched greedy generation: one decoded continuation per prompt, in order.

The fast path (measured by `make perf` against the published-style loop):
- prompts are encoded once and grouped by length, so a batch carries few pad tokens;
- the token prefix that every prompt shares (instruction, few-shot examples, chat header) is
  run through the model once and its KV cache reused by every batch;
- decoding is a plain greedy loop over the KV cache that drops each row from the batch as soon
  as it is finished (an end-of-sequence token or a stop string), so a long answer never keeps
  the short ones computing;
- the prefill asks for the last position's logits only (no full-vocabulary logits per token).

Within a batch the shared prefix is followed by left padding and then each row's own tokens:
``[prefix][pad..][suffix]``. Pads are masked and position ids count real tokens only, so a row's
result does not depend on its batch (up to float rounding; `make perf` reports the difference).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence

from tunebench.models.loading import encode_prompt


def prompt_sha256(prompt: str) -> str:
    """Hex SHA-256 of the exact prompt text (UTF-8), to tie a prediction to its prompt."""
    return hashlib.sha256(prompt.encode("utf-8")).hexdigest()


def _left_pad(rows: list[list[int]], pad_id: int):
    """Left padding: every row then ends at its last prompt token, where generation starts."""
    import torch

    width = max(len(r) for r in rows)
    ids = [[pad_id] * (width - len(r)) + r for r in rows]
    mask = [[0] * (width - len(r)) + [1] * len(r) for r in rows]
    return torch.tensor(ids, dtype=torch.long), torch.tensor(mask, dtype=torch.long)


def _cut_at_stop(text: str, stop_strings: list[str] | None) -> str:
    """Keep the text before the earliest stop string (generation halts on it but emits it)."""
    for stop in stop_strings or []:
        index = text.find(stop)
        if index >= 0:
            text = text[:index]
    return text


def _has_stop(tokenizer, tokens: list[int], stops: list[str]) -> bool:
    text = tokenizer.decode(tokens, skip_special_tokens=True)
    return any(s in text for s in stops)


def pad_id_of(tokenizer) -> int:
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None \
        else tokenizer.eos_token_id


def eos_ids(model, tokenizer) -> set[int]:
    """End-of-sequence ids: the tokenizer's and the model's generation config's (may be a list)."""
    ids = {tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set()
    config_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if isinstance(config_eos, int):
        ids.add(config_eos)
    elif config_eos:
        ids.update(int(i) for i in config_eos)
    return ids


def shared_prefix_len(rows: Sequence[Sequence[int]]) -> int:
    """Tokens every row starts with, leaving each row at least one token of its own (the
    last prompt token must go through the model with the row's own position)."""
    if len(rows) < 2:
        return 0
    shortest = min(len(r) for r in rows)
    first = rows[0]
    n = 0
    while n < shortest - 1 and all(r[n] == first[n] for r in rows):
        n += 1
    return n


def length_batches(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Indices grouped by length, longest first: a batch that does not fit in memory fails at
    once, not at the end; ties keep input order, so batching is deterministic."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


class Prefill:
    """Runs prompts through the model: the shared prefix once, then batches of suffixes."""

    def __init__(self, model, tokenizer, encoded: list[list[int]], share_prefix: bool = True):
        import torch

        self.model, self.pad_id = model, pad_id_of(tokenizer)
        self.device = next(model.parameters()).device
        self.n_prefix = shared_prefix_len(encoded) if share_prefix else 0
        self.prefix_cache = None
        if self.n_prefix:
            ids = torch.tensor([encoded[0][:self.n_prefix]], device=self.device)
            with torch.inference_mode():
                out = model(input_ids=ids, use_cache=True, logits_to_keep=1)
            self.prefix_cache = out.past_key_values
        self.encoded = encoded

    def run(self, batch: list[int]):
        """(last-position logits [B, V], cache, attention mask [B, past], next positions [B])."""
        import copy

        import torch

        rows = [self.encoded[i][self.n_prefix:] for i in batch]
        ids, mask = _left_pad(rows, self.pad_id)
        positions = (mask.cumsum(-1) - 1).clamp(min=0) + self.n_prefix
        cache = None
        if self.prefix_cache is not None:
            cache = copy.deepcopy(self.prefix_cache)
            cache.batch_repeat_interleave(len(batch))
            mask = torch.cat([torch.ones(len(batch), self.n_prefix, dtype=mask.dtype), mask], 1)
        with torch.inference_mode():
            out = self.model(input_ids=ids.to(self.device), attention_mask=mask.to(self.device),
                             position_ids=positions.to(self.device), past_key_values=cache,
                             use_cache=True, logits_to_keep=1)
        next_pos = positions[:, -1] + 1
        return out.logits[:, -1, :].float(), out.past_key_values, mask.to(self.device), \
            next_pos.to(self.device)


def step(model, cache, mask, positions, tokens):
    """One decoding step for the active rows: feed `tokens` [A], return logits [A, V]."""
    import torch

    mask = torch.cat([mask, torch.ones(len(tokens), 1, dtype=mask.dtype, device=mask.device)], 1)
    with torch.inference_mode():
        out = model(input_ids=tokens[:, None], attention_mask=mask,
                    position_ids=positions[:, None], past_key_values=cache, use_cache=True)
    return out.logits[:, -1, :].float(), out.past_key_values, mask, positions + 1


def iter_generate(model, tokenizer, prompts: list[str], batch_size: int = 16,
                  max_new_tokens: int = 32, stop_strings: list[str] | None = None,
                  share_prefix: bool = True, progress: bool = True,
                  max_prompt_tokens: int | None = None,
                  ) -> Iterator[tuple[list[int], list[str]]]:
    """Yield (prompt indices, answers) batch by batch, so callers can save progress.

    Greedy decoding; each row stops at an end-of-sequence token, a stop string (cut off, as
    is everything after it) or `max_new_tokens`. Prompts keep at most `max_prompt_tokens`
    ids (see encode_prompt).
    """
    import torch
    from tqdm.auto import tqdm

    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    model.eval()  # dropout off: greedy output must not depend on train/eval state
    encoded = [encode_prompt(tokenizer, p, max_prompt_tokens) for p in prompts]
    batches = length_batches([len(e) for e in encoded], batch_size)
    if not batches:
        return
    prefill = Prefill(model, tokenizer, encoded, share_prefix)
    stops, eos = list(stop_strings or []), eos_ids(model, tokenizer)
    for batch in tqdm(batches, desc="generate", unit="batch", disable=not progress):
        logits, cache, mask, positions = prefill.run(batch)
        generated: list[list[int]] = [[] for _ in batch]
        active = list(range(len(batch)))  # rows of this batch still generating
        for n_new in range(1, max_new_tokens + 1):
            tokens = logits.argmax(-1)
            keep = []  # positions (within `active`) of rows that go on
            for k, (row, token) in enumerate(zip(active, tokens.tolist(), strict=True)):
                if token in eos:
                    continue
                generated[row].append(token)
                if stops and _has_stop(tokenizer, generated[row], stops):
                    continue
                keep.append(k)
            if not keep or n_new == max_new_tokens:
                break
            if len(keep) < len(active):
                select = torch.tensor(keep, device=mask.device)
                cache.batch_select_indices(select)
                mask, positions, tokens = mask[select], positions[select], tokens[select]
                active = [active[k] for k in keep]
            logits, cache, mask, positions = step(model, cache, mask, positions, tokens)
        texts = [_cut_at_stop(tokenizer.decode(g, skip_special_tokens=True), stops)
                 for g in generated]
        yield batch, texts


def generate(model, tokenizer, prompts: list[str], batch_size: int = 8,
             max_new_tokens: int = 32, stop_strings: list[str] | None = None,
             progress: bool = True, share_prefix: bool = True) -> list[str]:
    """Greedy continuations of already-rendered prompts, in the prompts' original order."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    results: list[str | None] = [None] * len(prompts)
    for batch, texts in iter_generate(model, tokenizer, prompts, batch_size, max_new_tokens,
                                      stop_strings, share_prefix, progress):
        for i, text in zip(batch, texts, strict=True):
            results[i] = text
    if any(r is None for r in results):
        raise RuntimeError("generation lost a prompt")  # cannot happen unless batching breaks
    return results
