"""The causal-LM family: QLoRA on (prompt, completion) pairs with the loss on the completion
only, and prediction in the modes generate, loglik and choice (resumable per batch).

Prompts are formatted as the spec's prompt format for each system says (the tuned system is
trained and asked in one format). Heavy libraries are imported inside the functions.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from tunebench.evaluation.parsing import get_parser
from tunebench.io import write_json, write_jsonl
from tunebench.models.engine import TrainJob, lora_config, prepare_for_lora, train_adapter
from tunebench.models.loading import ModelSpec, apply_prompt_format, encode_prompt
from tunebench.models.predict import (
    PredictJob,
    answer_counts,
    content_free_prior,
    for_system,
    iter_mode,
    label_distribution,
    loglik_variants,
    output_name,
    stop_strings,
)
from tunebench.models.train_qlora import IGNORE_INDEX, TrainConfig, pad_rows
from tunebench.running.provenance import hardware, model_provenance, package_versions

TASK_TYPE = "CAUSAL_LM"


def tokenize_example(tokenizer, prompt: str, completion: str, max_seq_len: int) -> dict:
    """input_ids / attention_mask / labels for one pair; prompt tokens get label -100.

    Prompt and completion are tokenized separately (a BPE merge across the boundary would
    otherwise blur which tokens are the answer), and EOS follows the completion so the model
    learns to stop. Too long: the prompt loses tokens from its left and `truncated` is True;
    the completion is never cut.
    """
    if tokenizer.eos_token_id is None:
        raise ValueError("tokenizer has no eos token: the model could not learn to stop")
    prompt_ids = encode_prompt(tokenizer, prompt)
    completion_ids = tokenizer(completion, add_special_tokens=False)["input_ids"]
    completion_ids = [*completion_ids, tokenizer.eos_token_id]
    room = max_seq_len - len(completion_ids)
    if room < 1:
        raise ValueError(
            f"completion needs {len(completion_ids)} tokens with EOS, max_seq_len is {max_seq_len}"
        )
    truncated = len(prompt_ids) > room
    prompt_ids = prompt_ids[len(prompt_ids) - room:] if truncated else prompt_ids
    input_ids = prompt_ids + completion_ids
    return {
        "input_ids": input_ids,
        "attention_mask": [1] * len(input_ids),
        "labels": [IGNORE_INDEX] * len(prompt_ids) + completion_ids,
        "truncated": truncated,
    }


@dataclass
class CompletionCollator:
    """Pads a batch to its own longest example (not to max_seq_len); counts real tokens."""

    pad_token_id: int
    n_tokens: int = 0  # non-pad tokens handed to the model so far

    def __call__(self, features: list[dict]) -> dict:
        import torch

        self.n_tokens += sum(len(f["input_ids"]) for f in features)
        batch = {"input_ids": pad_rows([f["input_ids"] for f in features], self.pad_token_id),
                 "attention_mask": pad_rows([f["attention_mask"] for f in features], 0),
                 "labels": pad_rows([f["labels"] for f in features], IGNORE_INDEX)}
        return {key: torch.tensor(rows, dtype=torch.long) for key, rows in batch.items()}


@dataclass
class PackedCollator:
    """Packing without padding: a batch's examples end to end in one row. Position ids restart
    at 0 for each example and there is no attention mask, from which transformers' causal
    mask keeps every token's attention within its own example. Each example's first label is
    ignored: it would be predicted from the previous example's last token. Causal LMs only."""

    n_tokens: int = 0

    def __call__(self, features: list[dict]) -> dict:
        import torch

        ids: list[int] = []
        labels: list[int] = []
        positions: list[int] = []
        for f in features:
            ids += f["input_ids"]
            labels += [IGNORE_INDEX] + f["labels"][1:]
            positions += range(len(f["input_ids"]))
        self.n_tokens += len(ids)
        # use_cache=False: transformers reads packed sequences from the position ids only
        # when no KV cache is being built.
        return {"input_ids": torch.tensor([ids]), "labels": torch.tensor([labels]),
                "position_ids": torch.tensor([positions]), "use_cache": False}


def completion_loss(model, inputs: dict, num_items_in_batch=None):
    """The causal LM's next-token loss with the LM head applied only where a label is.

    Equal to the model's own shifted cross-entropy (the mean over labelled tokens, or their
    sum over `num_items_in_batch` when the Trainer counts tokens across accumulation steps),
    but the hidden states of prompt and padding positions never reach the vocabulary
    projection: with 1-3 answer tokens after an ~80-token prompt, that projection
    (hidden x vocabulary multiply-adds per position, 576 x 49,152 for SmolLM2) is most of a
    small model's step. Returns (loss, logits of the labelled positions, flattened).
    """
    import torch

    labels = inputs["labels"]
    targets = labels[:, 1:]
    keep = torch.zeros_like(labels, dtype=torch.bool)
    keep[:, :-1] = targets != IGNORE_INDEX  # position p predicts token p + 1
    forward = {k: v for k, v in inputs.items() if k != "labels"}
    logits = model(**forward, logits_to_keep=keep).logits
    chosen = targets[keep[:, :-1]]
    total = torch.nn.functional.cross_entropy(logits.float(), chosen, reduction="sum")
    if num_items_in_batch is None:
        return total / chosen.numel(), logits
    if isinstance(num_items_in_batch, torch.Tensor):
        num_items_in_batch = num_items_in_batch.to(total.device)
    return total / num_items_in_batch, logits


def load_for_training(spec: ModelSpec, model_dir: str, cfg: TrainConfig):
    """Base model (4-bit when the spec says so) wrapped with trainable LoRA adapters."""
    from tunebench.models.loading import load_causal_lm

    model = load_causal_lm(spec, model_dir, quantize=spec.load_in_4bit)
    return prepare_for_lora(model, spec.load_in_4bit, cfg, lora_config(spec, cfg, TASK_TYPE))


def train_lora(spec: ModelSpec, model_dir: str, examples: list[tuple[str, str]],
               cfg: TrainConfig, out_dir: Path, log=None, checkpoint_root: Path | None = None,
               run_name: str = "run", eval_examples: list[tuple[str, str]] | None = None) -> dict:
    """Train a LoRA adapter, save it (safetensors only) to out_dir, return training metrics.

    Prompts are formatted here as the spec's prompt format for the tuned system says, so
    training sees exactly what the tuned model's predictions will. `eval_examples`,
    validation pairs tokenized like the training ones (loss on the completion only), are
    evaluated every epoch (engine.py: best-epoch selection, resume, SIGTERM).
    """
    from transformers import set_seed

    from tunebench.models.loading import load_tokenizer

    if not examples:
        raise ValueError("train_lora got no examples")
    set_seed(cfg.seed)
    tokenizer = load_tokenizer(spec, model_dir, padding_side="right")
    fmt = spec.format_for("tuned")

    def tokenized(pairs: list[tuple[str, str]]) -> list[dict]:
        return [tokenize_example(tokenizer, apply_prompt_format(tokenizer, p, fmt,
                                                                spec.system_prompt),
                                 c, cfg.max_seq_len) for p, c in pairs]

    data, eval_data = tokenized(examples), tokenized(eval_examples or [])
    model = load_for_training(spec, model_dir, cfg)
    collator = PackedCollator() if cfg.packing else CompletionCollator(tokenizer.pad_token_id)
    # A plain Trainer rather than trl's SFTTrainer: the data is already tokenized and masked by
    # tokenize_example (tested), and SFTTrainer would re-apply its own templating, masking and
    # packing rules, which shift between trl releases.
    job = TrainJob(spec, model_dir, cfg, Path(out_dir), log, checkpoint_root, run_name)
    return train_adapter(job, model, data, eval_data, collator,
                         completion_loss if cfg.head_at_loss_only else None)


def train(job: TrainJob, rows: list[dict], eval_rows: list[dict], instructions: Path,
          mixture: dict[str, int]) -> dict:
    """The family interface: instruction rows -> adapter and metrics."""
    pairs = [(r["prompt"], r["completion"]) for r in rows]
    return train_lora(job.spec, job.model_dir, pairs, job.cfg, job.out_dir, job.log,
                      job.checkpoint_root, job.run_name,
                      [(r["prompt"], r["completion"]) for r in eval_rows])


def predict(job: PredictJob) -> None:
    """The family interface: every mode of `job`, loading the model once; prompts rendered
    in the prompt format of the job's system (the tuned model is asked as it was trained)."""
    from tunebench.models.generate import prompt_sha256
    from tunebench.models.loading import load_causal_lm, load_tokenizer, prompt_limit

    spec, task, cfg = job.spec, job.task, job.cfg
    key = "prompt_base" if job.kind == "base" and task["base_prompt"] == "few_shot" else "prompt"
    tokenizer = load_tokenizer(spec, job.model_dir, padding_side="left")
    model = load_causal_lm(spec, job.model_dir, quantize=spec.load_in_4bit,
                           adapter_dir=job.adapter)
    fmt = spec.format_for(job.kind)
    prompts = [apply_prompt_format(tokenizer, r[key], fmt, spec.system_prompt) for r in job.rows]
    settings = {
        "batch_size": cfg["batch_size"], "share_prefix": cfg.get("share_prefix", True),
        "max_new_tokens": for_system(cfg["max_new_tokens"], job.kind, "predict.max_new_tokens"),
        "stop_strings": stop_strings(cfg.get("stop_strings"), job.kind),
        "calibrate": bool(cfg.get("calibrate", False)),
        "content_free": list(cfg.get("content_free") or ["N/A", "", "[MASK]"]),
    }
    # Room for the answer: the generate cap (labels for loglik are shorter than it).
    limit = prompt_limit(model, settings["max_new_tokens"])
    settings["max_prompt_tokens"] = limit
    cut = 0 if limit is None else sum(len(encode_prompt(tokenizer, p)) > limit for p in prompts)
    if cut:
        print(f"predict {task['dataset']}: {cut} of {len(prompts)} prompts longer than "
              f"{limit} tokens keep their last {limit} (counted as prompts_truncated)")
    run = ModeRun(job, model, tokenizer, prompts, [prompt_sha256(x) for x in prompts],
                  settings, {"model": model_provenance(spec), "adapter": job.adapter_record(),
                             "prompt_field": key, "prompt_format": fmt,
                             "prompts_truncated": cut})
    for mode in job.modes:
        run.predict(mode)


@dataclass
class ModeRun:
    """The loaded model and rendered prompts of one PredictJob, answering mode by mode."""

    job: PredictJob
    model: object
    tokenizer: object
    prompts: list[str]
    hashes: list[str]
    settings: dict
    provenance: dict

    def mode_settings(self, mode: str) -> dict:
        """The settings one mode uses (and its resume header records)."""
        s = self.settings
        out = {k: s[k] for k in ("batch_size", "share_prefix", "max_prompt_tokens")}
        if mode == "generate":
            out.update(max_new_tokens=s["max_new_tokens"], stop_strings=s["stop_strings"],
                       parser=self.job.parser_name())
        if mode == "loglik":
            out.update(calibrate=s["calibrate"])
            if s["calibrate"]:
                out["content_free"] = s["content_free"]
        return out

    def predict(self, mode: str) -> None:
        """One mode, resumable: finished batches go to a hidden `.partial` file beside the
        output folder first (DVC empties that folder before a rerun, so a resume survives)."""
        from tunebench.models.partial import PartialWriter, load_partial, make_header

        job, labels = self.job, self.job.task["labels"]
        out = job.out_dir / output_name(job.name, mode)
        partial = job.out_dir.parent / f".{job.out_dir.name}-{out.name}.partial"
        parser = job.parser_name()
        parse = get_parser(parser) if parser else (lambda text, _labels: text.strip())
        settings = self.mode_settings(mode)
        ids = [r["id"] for r in job.rows]
        header = make_header({"mode": mode, **settings, **self.provenance}, ids, self.hashes)
        done = load_partial(partial, header, ids)
        if done:
            print(f"predict {out.name}: resuming, {len(done)}/{len(ids)} rows already done")
        start = time.perf_counter()
        prior = None
        if mode == "loglik":  # also for the calibrated variant when calibrate is off
            prior = content_free_prior(self.model, self.tokenizer, self.prompts, labels,
                                       self.settings["content_free"])
        todo = [i for i, rid in enumerate(ids) if rid not in done]
        writer = PartialWriter(partial, header, done)
        for batch in iter_mode(mode, self.model, self.tokenizer, [self.prompts[i] for i in todo],
                               labels, parse, settings,
                               prior if self.settings["calibrate"] else None):
            new = [{"id": ids[todo[j]], "prompt_sha256": self.hashes[todo[j]], "raw": raw,
                    "parsed": parsed, "target": job.rows[todo[j]]["completion"], **extra}
                   for j, raw, parsed, extra in batch]
            writer.write(new)
            done.update((r["id"], r) for r in new)
        seconds = time.perf_counter() - start
        result = [done[rid] for rid in ids]
        write_jsonl(out, result)
        writer.close(remove=True)
        meta = {
            "system": out.name.removesuffix(".jsonl"), "kind": job.kind, "mode": mode,
            "dataset": job.task["dataset"], "test_sha256": job.test_sha256, **self.provenance,
            **settings, "n": len(result),
            **answer_counts(job.task, [r["parsed"] for r in result]),
            "seconds": round(seconds, 3),
            "examples_per_s": round(len(todo) / max(seconds, 1e-9), 3),
            "packages": package_versions(), "hardware": hardware()}
        if mode == "generate":
            meta["parser"] = parser
        if mode == "loglik":
            self._loglik_files(out, result, prior, meta)
        write_json(out.with_suffix(".meta.json"), meta)
        print(f"predict {job.task['dataset']} {meta['system']} ({mode}): {len(result)} rows, "
              f"{meta['invalid']} invalid, {meta['examples_per_s']:.2f} examples/s, "
              f"labels {meta.get('label_distribution', '-')}")

    def _loglik_files(self, out: Path, result: list[dict], prior, meta: dict) -> None:
        """The other loglik variants' files; `meta` gains the main variant's fields."""
        labels = self.job.task["labels"]
        meta["label_distribution_uncalibrated"] = label_distribution(
            [r["raw"] for r in result], labels)
        meta["calibration_prior"] = [round(x, 6) for x in prior]
        main_meta, variants = loglik_variants(out, self.tokenizer, result, labels, prior,
                                              self.job.train_labels, self.settings["calibrate"])
        for path, variant_rows, variant_meta in variants:
            write_jsonl(path, variant_rows)
            counts = answer_counts(self.job.task, [r["parsed"] for r in variant_rows])
            write_json(path.with_suffix(".meta.json"),
                       {**meta, **variant_meta, **counts, "system": path.stem})
        meta.update(main_meta)
