"""LoRA / QLoRA fine-tuning on (prompt, completion) pairs, with the loss on the completion only.

Heavy libraries are imported inside the functions that need them.
"""

from __future__ import annotations

import resource
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from tunebench.models import ModelSpec, encode_prompt, render_prompt, suggest

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
    max_steps: int = -1  # > 0 overrides epochs (smoke runs)
    logging_steps: int = 1
    gradient_checkpointing: bool = False

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

        width = max(len(f["input_ids"]) for f in features)
        batch: dict[str, list] = {"input_ids": [], "attention_mask": [], "labels": []}
        for f in features:
            pad = width - len(f["input_ids"])
            batch["input_ids"].append(f["input_ids"] + [self.pad_token_id] * pad)
            batch["attention_mask"].append(f["attention_mask"] + [0] * pad)
            batch["labels"].append(f["labels"] + [IGNORE_INDEX] * pad)
            self.n_tokens += len(f["input_ids"])
        return {key: torch.tensor(rows, dtype=torch.long) for key, rows in batch.items()}


def resolve_bf16(setting: bool | str) -> bool:
    """bf16 autocast only where the hardware has native bf16 (emulated it is slower than fp32)."""
    import torch

    if isinstance(setting, bool):
        return setting
    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def _prepare_peft_model(spec: ModelSpec, model_dir: str, cfg: TrainConfig):
    """Base model (4-bit when the spec says so) wrapped with trainable LoRA adapters."""
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    from tunebench.models import load_causal_lm

    model = load_causal_lm(spec, model_dir, quantize=spec.load_in_4bit)
    if spec.load_in_4bit:
        # Freezes the base, upcasts norms to fp32 and enables input grads (QLoRA recipe).
        model = prepare_model_for_kbit_training(
            model, use_gradient_checkpointing=cfg.gradient_checkpointing,
            gradient_checkpointing_kwargs={"use_reentrant": False})
    elif cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    lora = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                      target_modules=list(spec.lora_targets), bias="none", task_type="CAUSAL_LM")
    model = get_peft_model(model, lora)
    model.train()
    return model


def _training_args(cfg: TrainConfig, scratch: str):
    import torch
    from transformers import TrainingArguments

    on_gpu = torch.cuda.is_available()
    return TrainingArguments(
        output_dir=scratch,  # checkpoints/optimizer state never land in the adapter folder
        num_train_epochs=cfg.epochs, max_steps=cfg.max_steps,
        per_device_train_batch_size=cfg.batch_size, gradient_accumulation_steps=cfg.grad_accum,
        learning_rate=cfg.learning_rate, weight_decay=cfg.weight_decay,
        lr_scheduler_type=cfg.lr_scheduler, warmup_steps=cfg.warmup_ratio, optim=cfg.optim,
        bf16=resolve_bf16(cfg.bf16), logging_steps=cfg.logging_steps, logging_first_step=True,
        seed=cfg.seed, data_seed=cfg.seed, save_strategy="no", report_to="none",
        push_to_hub=False, remove_unused_columns=False, disable_tqdm=False,
        use_cpu=not on_gpu, dataloader_pin_memory=on_gpu, dataloader_num_workers=0,
    )


def _log_callback(curve: list[dict], log: Callable[[dict], None] | None):
    from transformers import TrainerCallback

    class _Forward(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "loss" in logs:  # skip the end-of-run summary record
                point = {"step": state.global_step, "loss": float(logs["loss"]),
                         "learning_rate": float(logs.get("learning_rate", 0.0))}
                curve.append(point)
                if log is not None:
                    log(point)

    return _Forward()


def train_lora(spec: ModelSpec, model_dir: str, examples: list[tuple[str, str]],
               cfg: TrainConfig, out_dir: Path, log: Callable[[dict], None] | None = None,
               ) -> dict:
    """Train a LoRA adapter, save it (safetensors only) to out_dir, return training metrics.

    Prompts go through render_prompt here, with the spec's chat-template flag, so training
    sees exactly what prediction will.
    """
    import torch
    from transformers import Trainer, set_seed

    from tunebench.models import load_tokenizer

    if not examples:
        raise ValueError("train_lora got no examples")
    set_seed(cfg.seed)
    tokenizer = load_tokenizer(spec, model_dir, padding_side="right")
    data = [tokenize_example(tokenizer, render_prompt(tokenizer, p, spec.chat_template), c,
                             cfg.max_seq_len) for p, c in examples]
    model = _prepare_peft_model(spec, model_dir, cfg)
    trainable, total = model.get_nb_trainable_parameters()
    collator, curve = CompletionCollator(tokenizer.pad_token_id), []
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    # A plain Trainer rather than trl's SFTTrainer: the data is already tokenized and masked by
    # tokenize_example (tested above), and SFTTrainer would re-apply its own templating,
    # masking and packing rules, which shift between trl releases.
    with tempfile.TemporaryDirectory(prefix="tunebench-train-") as scratch:
        trainer = Trainer(model=model, args=_training_args(cfg, scratch), train_dataset=data,
                          data_collator=collator, callbacks=[_log_callback(curve, log)])
        start = time.perf_counter()
        result = trainer.train()
        wall = time.perf_counter() - start
    _save_adapter(model, spec, Path(out_dir))
    return {
        "train_loss": float(result.training_loss),  # mean over all steps
        "train_loss_final": curve[-1]["loss"] if curve else float("nan"),
        "loss_curve": curve, "wall_time_s": wall, "train_tokens": collator.n_tokens,
        "tokens_per_s": collator.n_tokens / wall if wall > 0 else 0.0,
        "peak_memory_mb": _peak_memory_mb(), "trainable_params": int(trainable),
        "total_params": int(total), "n_examples": len(data),
        "n_truncated": sum(d["truncated"] for d in data), "steps": trainer.state.global_step,
    }


def _save_adapter(model, spec: ModelSpec, out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
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
