"""LoRA / QLoRA fine-tuning on (prompt, completion) pairs, with the loss on the completion only.

Heavy libraries are imported inside the functions that need them.

Validation: given validation pairs, the completion-only loss on them is evaluated at the end of
every epoch (and at the last step), without touching the training run (separate data, RNG state
restored afterwards). With `select_best` the adapter saved is the one from the evaluation with
the lowest loss: a CPU copy of the trainable (LoRA) weights is taken whenever the loss improves.

Interrupted runs resume: with a checkpoint folder (train-qlora passes one outside its DVC
output, which DVC deletes before a rerun), the Trainer saves its state every
`checkpoint_steps` steps into <folder>/<fingerprint>, where the fingerprint hashes the
tokenized training and validation data, the training config and the model; a later run with
the same fingerprint resumes from the newest complete checkpoint, and the folder is deleted
once the adapter is saved. Each new best validation snapshot is also written to that folder
(best-<step>.safetensors) before any later checkpoint, so a resumed run still selects an epoch
from before the interruption. SIGTERM stops training after the current step, saves a
checkpoint and raises Interrupted.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import resource
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from tunebench.io import Interrupted
from tunebench.models import ModelSpec, apply_prompt_format, encode_prompt, suggest

IGNORE_INDEX = -100  # labels with this value are skipped by the cross-entropy loss
OPTIMIZERS = ("adamw_torch", "paged_adamw_8bit")  # the paged 8-bit one is for GPU profiles


@dataclass
class TrainConfig:
    """Training hyper-parameters (params.yaml `train:`). LoRA defaults follow FinGPT's."""

    epochs: float = 2
    learning_rate: float = 1e-4
    lora_r: int = 8
    lora_alpha: int = 32
    lora_dropout: float = 0.1
    batch_size: int = 2
    grad_accum: int = 1
    max_seq_len: int = 512
    seed: int = 42
    warmup_ratio: float = 0.0
    weight_decay: float = 0.0
    lr_scheduler: str = "linear"
    optim: str = "adamw_torch"
    bf16: bool | str = "auto"  # "auto": bf16 autocast where the GPU/CPU runs it natively
    # "auto": fp16 mixed precision where bf16 "auto" finds a GPU without native bf16 (false
    # keeps fp32 there, e.g. for T5); true: fp16 on any GPU. Never with bf16, never on CPU.
    fp16: bool | str = "auto"
    max_steps: int = -1  # > 0 overrides epochs (smoke runs)
    logging_steps: int = 1
    gradient_checkpointing: bool = False
    # Save a resumable checkpoint (adapter + optimizer + RNG state) every this many steps
    # (0 = never). LoRA checkpoints are small; on the CPU default a step takes ~1 s.
    checkpoint_steps: int = 25
    # With validation examples: save the adapter of the evaluation with the lowest validation
    # loss (the earlier one on ties) rather than the last one.
    select_best: bool = True
    # Batches of similar lengths (transformers' LengthGroupedSampler): less padding, a
    # less random order. Off by default, as in transformers.
    group_by_length: bool = False
    # Lay each batch's examples end to end in one row without padding (causal LMs only; the
    # position ids restart per example, so attention stays within each example).
    packing: bool = False
    # Apply the LM head only at positions that have a label (causal LMs): the same loss,
    # without projecting every prompt position onto the vocabulary. False: the model's own
    # loss over full logits (kept to measure the difference in `make perf`).
    head_at_loss_only: bool = True

    @classmethod
    def from_params(cls, params: dict[str, Any], where: str = "train") -> TrainConfig:
        known = [f.name for f in fields(cls)]
        for key in params:
            if key not in known:
                raise ValueError(f"unknown key {where}.{key}{suggest(key, known)}")
        cfg = cls(**params)
        cfg.validate(where)
        return cfg

    def validate(self, where: str = "train") -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            # bool is an int subclass, and "False" is a truthy string: check exactly.
            ok = {"int": isinstance(value, int) and not isinstance(value, bool),
                  "float": isinstance(value, int | float) and not isinstance(value, bool),
                  "str": isinstance(value, str), "bool": isinstance(value, bool),
                  "bool | str": isinstance(value, bool) or value == "auto"}[f.type]
            if not ok:
                raise ValueError(f"{where}.{f.name} must be {f.type}, got {value!r}")
        if self.optim not in OPTIMIZERS:
            raise ValueError(f"{where}.optim must be one of {OPTIMIZERS}, got {self.optim!r}")
        # transformers reads a warmup value below 1 as a ratio and 1 or more as a step count.
        if not 0.0 <= self.warmup_ratio < 1.0:
            raise ValueError(f"{where}.warmup_ratio must be in [0, 1), got {self.warmup_ratio}")
        for key in ("lora_r", "batch_size", "grad_accum", "max_seq_len", "logging_steps"):
            if getattr(self, key) < 1:
                raise ValueError(f"{where}.{key} must be >= 1, got {getattr(self, key)}")
        if self.checkpoint_steps < 0:
            raise ValueError(f"{where}.checkpoint_steps must be >= 0, got {self.checkpoint_steps}")
        if self.bf16 is True and self.fp16 is True:
            raise ValueError(f"{where}: bf16 and fp16 are both true; mixed precision is one "
                             f"or the other (set one to false or 'auto')")

    def mixed_precision(self) -> tuple[bool, bool]:
        """(bf16, fp16) autocast flags for this machine: never both, never fp16 on CPU.

        bf16 "auto" on a GPU: bf16 where it is native (compute capability 8+; torch's default
        is_bf16_supported() also says yes where bf16 is only emulated, slowly), otherwise fp16
        unless fp16 is false. fp16 true on a GPU: fp16, and bf16 "auto" steps aside. On CPU
        fp16 is dropped and bf16 follows resolve_bf16 (CPUs with AMX only).
        """
        import torch

        cuda = torch.cuda.is_available()
        if self.fp16 is True and cuda:
            return False, True
        if self.bf16 == "auto" and cuda:
            native = torch.cuda.is_bf16_supported(including_emulation=False)
            return native, not native and self.fp16 == "auto"
        return resolve_bf16(self.bf16), False


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


def pad_rows(rows: list[list[int]], value: int) -> list[list[int]]:
    """Right-pad every row with `value` to the longest row's length."""
    width = max(len(row) for row in rows)
    return [row + [value] * (width - len(row)) for row in rows]


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


def reject_packing(cfg: TrainConfig, family: str, where: str = "train_qlora") -> None:
    """Packing relies on a causal LM's position-id masking; other families must not get it."""
    if cfg.packing:
        raise ValueError(f"{where}.packing is for causal LMs; this model's family is {family!r} "
                         f"(set packing: false)")


def resolve_bf16(setting: bool | str) -> bool:
    """bf16 autocast only where the hardware runs bf16 matmuls faster than fp32.

    On CPU that means AMX (amx_bf16). AVX512-BF16 alone is not enough: measured on a 2-core
    Xeon with avx512_bf16 and no AMX, a 2048x2048 matmul ran at 0.14 TFLOPS in bf16 against
    0.23 in fp32, and a QLoRA step of SmolLM2 took 1.7x longer under bf16 autocast; a CPU
    with AMX gave ~2 TFLOPS in bf16.
    """
    import torch

    if isinstance(setting, bool):
        return setting
    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    return "amx_bf16" in cpu_flags()


def cpu_flags() -> set[str]:
    """The CPU feature flags of /proc/cpuinfo (empty where it cannot be read)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def prepare_for_lora(model, quantized: bool, cfg: TrainConfig, lora_config):
    """Freeze the base (QLoRA recipe when 4-bit) and wrap it with trainable adapters; shared
    by every model family."""
    from peft import get_peft_model, prepare_model_for_kbit_training

    if quantized:
        # Freezes the base, upcasts norms to fp32 and enables input grads (QLoRA recipe).
        model = prepare_model_for_kbit_training(
            model, use_gradient_checkpointing=cfg.gradient_checkpointing,
            gradient_checkpointing_kwargs={"use_reentrant": False})
    elif cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    model = get_peft_model(model, lora_config)
    model.train()
    return model


def _prepare_peft_model(spec: ModelSpec, model_dir: str, cfg: TrainConfig):
    """Base model (4-bit when the spec says so) wrapped with trainable LoRA adapters."""
    from peft import LoraConfig

    from tunebench.models import load_causal_lm

    model = load_causal_lm(spec, model_dir, quantize=spec.load_in_4bit)
    lora = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                      target_modules=list(spec.lora_targets), bias="none", task_type="CAUSAL_LM")
    return prepare_for_lora(model, spec.load_in_4bit, cfg, lora)


def _training_args(cfg: TrainConfig, scratch: str, checkpoints: bool = False):
    import torch
    from transformers import TrainingArguments

    on_gpu = torch.cuda.is_available()
    bf16, fp16 = cfg.mixed_precision()
    save = {"save_strategy": "no"}
    if checkpoints and cfg.checkpoint_steps > 0:
        # Two kept: should the newest be cut short by a kill, the one before still resumes.
        save = {"save_strategy": "steps", "save_steps": cfg.checkpoint_steps,
                "save_total_limit": 2, "save_only_model": False}
    # Evaluation (when the Trainer has an eval_dataset) is requested by _Validation, not by
    # eval_strategy, which keeps its default "no".
    return TrainingArguments(
        output_dir=scratch,  # checkpoints/optimizer state never land in the adapter folder
        num_train_epochs=cfg.epochs, max_steps=cfg.max_steps,
        per_device_train_batch_size=cfg.batch_size, gradient_accumulation_steps=cfg.grad_accum,
        per_device_eval_batch_size=cfg.batch_size,
        learning_rate=cfg.learning_rate, weight_decay=cfg.weight_decay,
        lr_scheduler_type=cfg.lr_scheduler, warmup_steps=cfg.warmup_ratio, optim=cfg.optim,
        train_sampling_strategy="group_by_length" if cfg.group_by_length else "random",
        bf16=bf16, fp16=fp16, logging_steps=cfg.logging_steps, logging_first_step=True,
        seed=cfg.seed, data_seed=cfg.seed, report_to="none", **save,
        push_to_hub=False, remove_unused_columns=False, disable_tqdm=False,
        use_cpu=not on_gpu, dataloader_pin_memory=on_gpu, dataloader_num_workers=0,
    )


def _point(logs: dict, step: int) -> dict | None:
    """A Trainer log entry as a training record {"step", "loss", "learning_rate"} or an
    evaluation record {"step", "epoch", "eval_loss"}; None for others (the end-of-run summary)."""
    if "loss" in logs:
        return {"step": step, "loss": float(logs["loss"]),
                "learning_rate": float(logs.get("learning_rate", 0.0))}
    if "eval_loss" in logs:
        return {"step": step, "epoch": float(logs["epoch"]), "eval_loss": float(logs["eval_loss"])}
    return None


def _points(log_history: list[dict]) -> list[dict]:
    """The training and evaluation records of a Trainer log history, in order."""
    return [p for r in log_history if (p := _point(r, int(r["step"]))) is not None]


def _log_callback(curve: list[dict], log: Callable[[dict], None] | None):
    """Forwards training and evaluation records to `log`; training records also go to `curve`."""
    from transformers import TrainerCallback

    class _Forward(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            point = _point(logs or {}, state.global_step)
            if point is not None and "loss" in point:
                curve.append(point)
            if point is not None and log is not None:
                log(point)

    return _Forward()


def train_lora(spec: ModelSpec, model_dir: str, examples: list[tuple[str, str]],
               cfg: TrainConfig, out_dir: Path, log: Callable[[dict], None] | None = None,
               checkpoint_root: Path | None = None, run_name: str = "run",
               eval_examples: list[tuple[str, str]] | None = None) -> dict:
    """Train a LoRA adapter, save it (safetensors only) to out_dir, return training metrics.

    Prompts are formatted here as the spec's prompt format for the tuned system says, so
    training sees exactly what the tuned model's predictions will. With `checkpoint_root`,
    checkpoints go to <checkpoint_root>/<run_name>-<fingerprint> and an interrupted run
    resumes from them.

    `eval_examples`, validation pairs tokenized like the training ones (loss on the completion
    only), are evaluated at the end of every epoch and at the last step; each evaluation goes
    to `log` as {"step", "epoch", "eval_loss"} (training records have "loss" instead). With
    cfg.select_best the adapter saved is the one of the lowest validation loss, else the last.
    Metrics added: n_eval_examples, n_eval_truncated, eval_loss_curve, eval_loss_best,
    best_step, best_epoch, selected ("best" or "last") and eval_time_s; without validation
    examples the curve is empty, the best values None and selected "last".
    """
    import torch
    from transformers import set_seed

    from tunebench.models import load_tokenizer

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
    model = _prepare_peft_model(spec, model_dir, cfg)
    trainable, total = model.get_nb_trainable_parameters()
    collator = PackedCollator() if cfg.packing else CompletionCollator(tokenizer.pad_token_id)
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    folder = None
    if checkpoint_root is not None:
        run_id = fingerprint(spec, model_dir, data, cfg, eval_data)
        folder = Path(checkpoint_root) / f"{run_name}-{run_id}"
    # A plain Trainer rather than trl's SFTTrainer: the data is already tokenized and masked by
    # tokenize_example (tested above), and SFTTrainer would re-apply its own templating,
    # masking and packing rules, which shift between trl releases.
    run = run_trainer(model, data, collator, cfg, log, folder, eval_data)
    _save_adapter(model, spec, Path(out_dir))  # run_trainer left the selected weights in model
    if folder is not None:
        shutil.rmtree(folder, ignore_errors=True)  # the adapter is out: nothing left to resume
    train_wall = run["wall_time_s"] - run["eval_time_s"]
    # Throughput of this process: after a resume, tokens and wall time count from the resume;
    # validation tokens and time are left out.
    return {
        **run, "tokens_per_s": collator.n_tokens / train_wall if train_wall > 0 else 0.0,
        "train_tokens": collator.n_tokens, "peak_memory_mb": _peak_memory_mb(),
        "trainable_params": int(trainable), "total_params": int(total), "n_examples": len(data),
        "n_truncated": sum(d["truncated"] for d in data), "n_eval_examples": len(eval_data),
        "n_eval_truncated": sum(d["truncated"] for d in eval_data),
    }


def run_trainer(model, data: list[dict], collator, cfg: TrainConfig,
                log: Callable[[dict], None] | None, checkpoint_dir: Path | None,
                eval_data: list[dict] | None = None) -> dict:
    """Run a transformers Trainer, resuming from `checkpoint_dir` when it holds a complete
    checkpoint; SIGTERM saves a checkpoint and raises Interrupted. With `eval_data`, evaluates
    it every epoch (see _Validation) and, with cfg.select_best, leaves the best evaluation's
    weights in `model`. Returns the loss metrics, identical whether or not the run was resumed
    (they come from the trainer's log history, which checkpoints carry)."""
    curve: list[dict] = []
    validation = _Validation(model, cfg, checkpoint_dir) if eval_data else None
    with _trainer_dir(checkpoint_dir) as scratch:
        resume = latest_checkpoint(Path(scratch)) if checkpoint_dir is not None else None
        if resume is not None:
            history = _points(json.loads((resume / "trainer_state.json").read_text())
                              ["log_history"])
            if log is not None:
                for point in history:
                    log(point)  # replay the records before the interruption (e.g. into DVCLive)
            if validation is not None:
                validation.resume([p for p in history if "eval_loss" in p])
        stop = _StopOnSignal()
        callbacks = [_log_callback(curve, log), stop.callback]
        if validation is not None:
            callbacks.append(validation.callback)
        trainer_class = _trainer_class()
        trainer_class.head_at_loss_only = cfg.head_at_loss_only
        trainer = trainer_class(
            model=model, train_dataset=data, eval_dataset=eval_data or None,
            data_collator=collator, callbacks=callbacks,
            args=_training_args(cfg, scratch, checkpoints=checkpoint_dir is not None))
        start = time.perf_counter()
        with stop.installed():
            result = trainer.train(resume_from_checkpoint=str(resume) if resume else None)
        wall = time.perf_counter() - start
        if stop.signalled:
            where = f"; checkpoint in {checkpoint_dir}" if checkpoint_dir is not None else ""
            raise Interrupted(f"training stopped by signal {stop.signalled} at step "
                              f"{trainer.state.global_step}{where}; run again to resume",
                              signum=stop.signalled)
    points = _points(trainer.state.log_history)
    curve = [p for p in points if "loss" in p]
    evals = [p for p in points if "eval_loss" in p]
    best = _best(evals)
    if validation is not None and cfg.select_best:
        validation.restore_best()
    steps = trainer.state.global_step
    # With every step logged (logging_steps 1, the default) the mean over the log history is
    # the exact mean loss, also across a resume; transformers' own value covers only the
    # steps run since the resume.
    logged = bool(curve) and curve[-1]["step"] == steps
    return {
        "train_loss": _mean_loss(curve) if logged else float(result.training_loss),
        "train_loss_final": curve[-1]["loss"] if curve else float("nan"),
        "loss_curve": curve, "wall_time_s": wall, "steps": steps,
        "resumed_from_step": int(resume.name.split("-")[-1]) if resume else 0,
        "eval_loss_curve": evals, "eval_loss_best": best["eval_loss"] if best else None,
        "best_step": best["step"] if best else None,
        "best_epoch": best["epoch"] if best else None,
        "selected": "best" if validation is not None and cfg.select_best else "last",
        "eval_time_s": trainer.eval_time_s,
    }


def _trainer_class():
    """transformers' Trainer whose evaluation leaves the training run as it was: the RNG
    state (data order, dropout) is restored afterwards and validation tokens are not counted
    by the collator. The time evaluation takes is summed in `eval_time_s`."""
    import torch
    from transformers import Trainer

    class _Trainer(Trainer):
        eval_time_s = 0.0
        head_at_loss_only = True  # set per run from TrainConfig.head_at_loss_only

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            if not self.head_at_loss_only or "labels" not in inputs:
                return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            loss, logits = completion_loss(model, inputs, num_items_in_batch)
            return (loss, {"loss": loss, "logits": logits}) if return_outputs else loss

        def evaluate(self, *args, **kwargs):
            start, tokens = time.perf_counter(), getattr(self.data_collator, "n_tokens", None)
            devices = [torch.cuda.current_device()] if torch.cuda.is_available() else []
            with torch.random.fork_rng(devices):  # iterating a DataLoader draws a seed
                metrics = super().evaluate(*args, **kwargs)
            if tokens is not None:
                self.data_collator.n_tokens = tokens
            self.eval_time_s += time.perf_counter() - start
            return metrics

    return _Trainer


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


def _better(point: dict, best: dict | None) -> bool:
    """Whether evaluation `point` beats `best`: a lower loss; ties and NaN keep the earlier."""
    if best is None:
        return True
    loss, best_loss = point["eval_loss"], best["eval_loss"]
    return not math.isnan(loss) and (math.isnan(best_loss) or loss < best_loss)


def _best(evals: list[dict]) -> dict | None:
    """The evaluation record with the lowest loss, the earliest on ties; None without any."""
    best = None
    for point in evals:
        if _better(point, best):
            best = point
    return best


class _Validation:
    """Evaluates at the end of every epoch and at the last step, and keeps the best snapshot.

    `callback` requests the evaluation in on_step_end, so the Trainer runs it before a
    checkpoint saved at the same step, whose log history then holds it. With cfg.select_best
    each improvement is copied (trainable parameters only, to the CPU) and, with a checkpoint
    folder, also written there as best-<step>.safetensors, before any later checkpoint can
    record it; `resume` reloads the best evaluation of the resumed checkpoint's log history.
    """

    def __init__(self, model, cfg: TrainConfig, folder: Path | None) -> None:
        from transformers import TrainerCallback

        self.model, self.select_best, self.folder = model, cfg.select_best, folder
        self.best: dict | None = None  # the best evaluation record so far
        self.weights: dict | None = None  # the trainable parameters at that evaluation (CPU)
        outer = self

        class _Callback(TrainerCallback):
            def on_step_end(self, args, state, control, **kwargs):
                if float(state.epoch).is_integer() or state.global_step >= state.max_steps:
                    control.should_evaluate = True
                return control

            def on_evaluate(self, args, state, control, metrics=None, **kwargs):
                point = {"step": state.global_step, "epoch": float(state.epoch),
                         "eval_loss": float(metrics["eval_loss"])}
                outer.evaluated(point, write=args.should_save)  # one writer when multi-GPU

        self.callback = _Callback()

    def evaluated(self, point: dict, write: bool = True) -> None:
        """Take a snapshot if `point` is the best evaluation so far (and, with `write`, save it
        to the checkpoint folder)."""
        if not self.select_best or not _better(point, self.best):
            return
        from safetensors.torch import save_file

        self.best = point
        self.weights = {name: param.detach().cpu().clone()
                        for name, param in self.model.named_parameters() if param.requires_grad}
        if self.folder is not None and write:
            path = self._file(point["step"])
            tmp = path.with_name(f".{path.name}.tmp")
            save_file(self.weights, tmp, metadata={k: str(v) for k, v in point.items()})
            os.replace(tmp, path)  # never a half-written snapshot under the final name

    def resume(self, evals: list[dict]) -> None:
        """Take over the best of the evaluations before the interruption, from its file."""
        from safetensors.torch import load_file

        self.best = _best(evals) if self.select_best else None
        if self.best is not None:
            path = self._file(self.best["step"])
            if not path.is_file():
                raise FileNotFoundError(f"{path}: the best snapshot of the resumed run is "
                                        f"missing; delete {self.folder} to train from scratch")
            self.weights = load_file(path)

    def restore_best(self) -> None:
        """Load the best snapshot's weights back into the model."""
        import torch

        if self.weights is None:
            return
        params = {n: p for n, p in self.model.named_parameters() if p.requires_grad}
        if params.keys() != self.weights.keys():
            raise RuntimeError("the best snapshot does not match the trainable parameters")
        with torch.no_grad():
            for name, param in params.items():
                param.copy_(self.weights[name])

    def _file(self, step: int) -> Path:
        return Path(self.folder) / f"best-{step}.safetensors"


def _mean_loss(curve: list[dict]) -> float:
    """Step-weighted mean: a logged loss is the mean over the steps since the previous log."""
    total, previous = 0.0, 0
    for point in curve:
        total += point["loss"] * (point["step"] - previous)
        previous = point["step"]
    return total / previous if previous else float("nan")


@contextmanager
def _trainer_dir(checkpoint_dir: Path | None) -> Iterator[str]:
    """The Trainer's output folder: the persistent checkpoint folder, or a throw-away one."""
    if checkpoint_dir is None:
        with tempfile.TemporaryDirectory(prefix="tunebench-train-") as scratch:
            yield scratch
        return
    checkpoint_dir = Path(checkpoint_dir)
    # Checkpoints of the same run under another fingerprint can never be resumed: drop them.
    prefix = checkpoint_dir.name.rsplit("-", 1)[0] + "-"
    if checkpoint_dir.parent.is_dir():
        for stale in checkpoint_dir.parent.glob(f"{prefix}*"):
            if stale != checkpoint_dir and stale.name.rsplit("-", 1)[0] + "-" == prefix:
                shutil.rmtree(stale, ignore_errors=True)
    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    yield str(checkpoint_dir)


def latest_checkpoint(folder: Path) -> Path | None:
    """The newest complete `checkpoint-<step>` in folder. Complete = its trainer_state.json,
    which the Trainer writes last, parses; a checkpoint cut short by a kill is removed."""
    found = []
    for path in Path(folder).glob("checkpoint-*"):
        suffix = path.name.split("-")[-1]
        if path.is_dir() and suffix.isdigit():
            found.append((int(suffix), path))
    for _, path in sorted(found, reverse=True):
        try:
            json.loads((path / "trainer_state.json").read_text(encoding="utf-8"))
            if (path / "adapter_model.safetensors").is_file():
                return path
        except (OSError, ValueError):
            pass
        shutil.rmtree(path, ignore_errors=True)
    return None


def fingerprint(spec: ModelSpec, model_dir: str, data: list[dict], cfg: TrainConfig,
                eval_data: list[dict] | None = None) -> str:
    """16 hex digits identifying a training run: tokenized training and validation data,
    config, model spec and the model folder's files (name, size, mtime). A checkpoint resumes
    only the same run."""
    digest = hashlib.sha256()
    setup = {"cfg": dataclasses.asdict(cfg), "spec": dataclasses.asdict(spec),
             "model_dir": str(model_dir)}
    digest.update(json.dumps(setup, sort_keys=True, default=str).encode())
    folder = Path(model_dir)
    if folder.is_dir():
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                stat = path.stat()
                digest.update(f"{path.relative_to(folder)}:{stat.st_size}:{stat.st_mtime_ns}"
                              .encode())
    for row in data:
        digest.update(json.dumps([row["input_ids"], row["labels"]]).encode())
    if eval_data:  # after a marker: moving a row from training to validation changes the hash
        digest.update(b"validation")
        for row in eval_data:
            digest.update(json.dumps([row["input_ids"], row["labels"]]).encode())
    return digest.hexdigest()[:16]


class _StopOnSignal:
    """Turns SIGTERM into: finish this step, save a checkpoint, stop. `installed()` sets the
    handler only while training runs; `callback` is the TrainerCallback that acts on it."""

    def __init__(self) -> None:
        from transformers import TrainerCallback

        self.signalled: int | None = None
        outer = self

        class _Callback(TrainerCallback):
            def on_step_end(self, args, state, control, **kwargs):
                if outer.signalled is not None:
                    control.should_save = args.save_strategy != "no"
                    control.should_training_stop = True
                return control

        self.callback = _Callback()

    @contextmanager
    def installed(self) -> Iterator[None]:
        """SIGTERM (and a first Ctrl-C) stop after this step; a second Ctrl-C stops at once."""
        def handler(signum, frame):
            if signum == signal.SIGINT and self.signalled is not None:
                raise KeyboardInterrupt
            self.signalled = signum

        if threading.current_thread() is not threading.main_thread():
            yield  # signal handlers can only be set from the main thread
            return
        previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            yield
        finally:
            for sig, old_handler in previous.items():
                signal.signal(sig, old_handler)


def _save_adapter(model, spec: ModelSpec, out_dir: Path) -> None:
    """Save into a temporary folder beside out_dir and rename it into place, so a kill never
    leaves a half-written adapter where the next stage would take it as complete."""
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}-", dir=out_dir.parent))
    try:
        _write_adapter(model, spec, tmp)
        os.chmod(tmp, 0o755)  # mkdtemp makes it owner-only
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _write_adapter(model, spec: ModelSpec, out_dir: Path) -> None:
    # peft records the base path, which here is a machine-specific temp/cache folder; a stable
    # name keeps the adapter folder identical across machines (loading ignores this field).
    model.peft_config["default"].base_model_name_or_path = spec.id or spec.name
    # No full embedding copies: LoRA targets are explicit, and "auto" would try to read the
    # (renamed) base path to check for a resized vocabulary.
    model.save_pretrained(out_dir, safe_serialization=True, save_embedding_layers=False)
    readme = out_dir / "README.md"  # peft's auto-generated model card template: not an output
    if readme.is_file():
        readme.unlink()
    for stray in ("adapter_model.bin", "optimizer.pt", "scheduler.pt"):
        if (out_dir / stray).exists():
            raise RuntimeError(f"unexpected {stray} in {out_dir}")


def _peak_memory_mb() -> float:
    """Peak accelerator memory on GPU; on CPU the process's peak RSS (whole process lifetime)."""
    import torch

    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB
