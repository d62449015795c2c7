"""The seq2seq family (e.g. google/flan-t5-base): LoRA SEQ_2_SEQ_LM on (source, target) pairs
and greedy generation (tests/fixtures.py builds a tiny random T5 for offline tests).

Sources arrive already formatted (e.g. "summarize: <document>"): instruction wording is the
format-instructions stage's job. Heavy libraries are imported inside the functions.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tunebench.models.engine import TrainJob, lora_config, prepare_for_lora, train_adapter
from tunebench.models.loading import ModelSpec, finish_loading, load_kwargs, quantization_plan
from tunebench.models.predict import PredictJob, for_system, write_predictions
from tunebench.models.train_qlora import IGNORE_INDEX, pad_rows, reject_packing
from tunebench.running.provenance import model_provenance

TASK_TYPE = "SEQ_2_SEQ_LM"  # peft task type of the adapter


def load_seq2seq(spec: ModelSpec, model_dir: str, quantize: bool,
                 adapter_dir: Path | None = None):
    """The base encoder-decoder (NF4 when `quantize`), with a LoRA adapter on top if given."""
    from transformers import AutoModelForSeq2SeqLM

    model = AutoModelForSeq2SeqLM.from_pretrained(model_dir, **load_kwargs(spec, model_dir,
                                                                           quantize))
    return finish_loading(model, quantize, adapter_dir)


def tokenize_pair(tokenizer, source: str, target: str, max_seq_len: int) -> dict:
    """Encoder ids for the source, label ids for the target, each cut at max_seq_len.

    Both end in EOS (the T5 tokenizer appends it, and keeps it when cutting); a cut keeps the
    beginning, where a document's lead carries most of its summary. The decoder inputs are
    made by the model itself, by shifting the labels right.
    """
    def encode(text: str) -> tuple[list[int], bool]:
        ids = tokenizer(text, truncation=True, max_length=max_seq_len)["input_ids"]
        return ids, len(tokenizer(text)["input_ids"]) > len(ids)

    (source_ids, cut_source), (target_ids, cut_target) = encode(source), encode(target)
    return {"input_ids": source_ids, "labels": target_ids, "truncated": cut_source or cut_target}


@dataclass
class PairCollator:
    """Pads sources with the pad id and labels with -100, each to the batch's longest row."""

    pad_token_id: int
    n_tokens: int = 0

    def __call__(self, features: list[dict]) -> dict:
        import torch

        sources, targets = [f["input_ids"] for f in features], [f["labels"] for f in features]
        self.n_tokens += sum(len(row) for row in sources + targets)
        batch = {"input_ids": pad_rows(sources, self.pad_token_id),
                 "attention_mask": pad_rows([[1] * len(row) for row in sources], 0),
                 "labels": pad_rows(targets, IGNORE_INDEX)}
        return {key: torch.tensor(rows, dtype=torch.long) for key, rows in batch.items()}


def train_seq2seq_lora(job: TrainJob, examples: list[tuple[str, str]],
                       eval_examples: list[tuple[str, str]] | None = None) -> dict:
    """Train a SEQ_2_SEQ_LM LoRA adapter with the shared engine (resume, validation, SIGTERM),
    save it to job.out_dir, return training metrics plus `quantized` and `quantization`."""
    from transformers import set_seed

    from tunebench.models.loading import load_tokenizer

    spec, cfg = job.spec, job.cfg
    reject_packing(cfg, spec.family)
    if not examples:
        raise ValueError("train_seq2seq_lora got no examples")
    set_seed(cfg.seed)
    tokenizer = load_tokenizer(spec, job.model_dir, padding_side="right")
    data, eval_data = ([tokenize_pair(tokenizer, s, t, cfg.max_seq_len) for s, t in pairs]
                       for pairs in (examples, eval_examples or []))
    quantized, why = quantization_plan(spec)
    model = load_seq2seq(spec, job.model_dir, quantize=quantized)
    model = prepare_for_lora(model, quantized, cfg, lora_config(spec, cfg, TASK_TYPE))
    metrics = train_adapter(job, model, data, eval_data, PairCollator(tokenizer.pad_token_id))
    return {**metrics, "family": "seq2seq", "quantized": quantized, "quantization": why}


def train(job: TrainJob, rows: list[dict], eval_rows: list[dict], instructions: Path,
          mixture: dict[str, int]) -> dict:
    """The family interface: prompt -> completion rows -> adapter and metrics."""
    return train_seq2seq_lora(job, [(r["prompt"], r["completion"]) for r in rows],
                              [(r["prompt"], r["completion"]) for r in eval_rows])


def predict(job: PredictJob) -> None:
    """The family interface: greedy generation from the prompt (no chat template)."""
    import time

    from tunebench.models.generate import prompt_sha256
    from tunebench.models.loading import load_tokenizer

    tokenizer = load_tokenizer(job.spec, job.model_dir, padding_side="right")
    model = load_seq2seq(job.spec, job.model_dir, quantize=job.spec.load_in_4bit,
                         adapter_dir=job.adapter)
    cap = for_system(job.cfg["max_new_tokens"], job.kind, "predict.max_new_tokens")
    prompts = [r["prompt"] for r in job.rows]
    start = time.perf_counter()
    texts = generate_seq2seq(model, tokenizer, prompts, job.cfg["batch_size"], cap)
    parse = job.parse()
    write_predictions(job, "generate", [prompt_sha256(x) for x in prompts], texts,
                      [parse(t) for t in texts], time.perf_counter() - start,
                      {"max_new_tokens": cap, "batch_size": job.cfg["batch_size"],
                       "model": model_provenance(job.spec), "adapter": job.adapter_record(),
                       "prompt_field": "prompt"})


def generate_seq2seq(model, tokenizer, sources: list[str], batch_size: int = 8,
                     max_new_tokens: int = 64, max_source_len: int = 512) -> list[str]:
    """Greedy outputs for the sources, in their original order (batched by length)."""
    import torch
    from transformers import GenerationConfig

    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    # A fresh config so sampling defaults shipped with the model cannot leak in (as generate.py).
    config = GenerationConfig(
        max_new_tokens=max_new_tokens, do_sample=False, num_beams=1,
        pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
        decoder_start_token_id=model.config.decoder_start_token_id)
    encoded = [tokenizer(s, truncation=True, max_length=max_source_len)["input_ids"]
               for s in sources]
    order = sorted(range(len(sources)), key=lambda i: len(encoded[i]), reverse=True)
    results: list[str | None] = [None] * len(sources)
    model.eval()
    device = next(model.parameters()).device
    collate = PairCollator(tokenizer.pad_token_id)
    for start in range(0, len(order), batch_size):
        batch = order[start:start + batch_size]
        inputs = collate([{"input_ids": encoded[i], "labels": []} for i in batch])
        with torch.inference_mode():
            output = model.generate(input_ids=inputs["input_ids"].to(device),
                                    attention_mask=inputs["attention_mask"].to(device),
                                    generation_config=config)
        # An encoder-decoder returns decoder tokens only: nothing of the source to strip.
        texts = tokenizer.batch_decode(output, skip_special_tokens=True)
        for i, text in zip(batch, texts, strict=True):
            results[i] = text.strip()
    return results  # type: ignore[return-value]
