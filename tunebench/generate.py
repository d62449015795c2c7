"""Batched greedy generation that returns one decoded continuation per prompt, in order."""

from __future__ import annotations

import hashlib

from tunebench.models import encode_prompt


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


def generate(model, tokenizer, prompts: list[str], batch_size: int = 8,
             max_new_tokens: int = 32, stop_strings: list[str] | None = None,
             progress: bool = True) -> list[str]:
    """Greedy continuations of already-rendered prompts, in the prompts' original order.

    Prompts are grouped by length so each batch carries few pad tokens; only the newly
    generated tokens are decoded, with special tokens skipped.
    """
    import torch
    from tqdm.auto import tqdm
    from transformers import GenerationConfig

    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None \
        else tokenizer.eos_token_id
    # A fresh config, so sampling settings shipped in the model's generation_config.json
    # (temperature, top_p, ...) cannot leak into what must be deterministic greedy decoding.
    config = GenerationConfig(
        max_new_tokens=max_new_tokens, do_sample=False, num_beams=1, use_cache=True,
        pad_token_id=pad_id, eos_token_id=tokenizer.eos_token_id, stop_strings=stop_strings,
    )
    encoded = [encode_prompt(tokenizer, p) for p in prompts]
    # Longest first: a batch that does not fit in memory fails at once, not at the end.
    order = sorted(range(len(prompts)), key=lambda i: len(encoded[i]), reverse=True)
    results: list[str | None] = [None] * len(prompts)
    model.eval()  # dropout off: greedy output must not depend on train/eval state
    device = next(model.parameters()).device
    batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    for batch in tqdm(batches, desc="generate", unit="batch", disable=not progress):
        input_ids, attention_mask = _left_pad([encoded[i] for i in batch], pad_id)
        with torch.inference_mode():
            output = model.generate(
                input_ids=input_ids.to(device), attention_mask=attention_mask.to(device),
                generation_config=config, tokenizer=tokenizer if stop_strings else None,
            )
        new_tokens = output[:, input_ids.shape[1]:]
        texts = tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
        for i, text in zip(batch, texts, strict=True):
            results[i] = _cut_at_stop(text, stop_strings)
    if any(r is None for r in results):
        raise RuntimeError("generation lost a prompt")  # cannot happen unless batching breaks
    return results
