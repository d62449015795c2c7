"""LoRA / QLoRA fine-tuning on (prompt, completion) pairs, with the loss on the completion only.

Heavy libraries are imported inside the functions that need them.

Interrupted runs resume: with a checkpoint folder (train-qlora passes one outside its DVC
output, which DVC deletes before a rerun), the Trainer saves its state every
`checkpoint_steps` steps into <folder>/<fingerprint>, where the fingerprint hashes the
tokenized data, the training config and the model; a later run with the same fingerprint
resumes from the newest complete checkpoint, and the folder is deleted once the adapter is
saved. SIGTERM stops training after the current step, saves a checkpoint and raises
Interrupted.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
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
    # Save a resumable checkpoint (adapter + optimizer + RNG state) every this many steps
    # (0 = never). LoRA checkpoints are small; on the CPU default a step takes ~1 s.
    checkpoint_steps: int = 25

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
    save = {"save_strategy": "no"}
    if checkpoints and cfg.checkpoint_steps > 0:
        # Two kept: should the newest be cut short by a kill, the one before still resumes.
        save = {"save_strategy": "steps", "save_steps": cfg.checkpoint_steps,
                "save_total_limit": 2, "save_only_model": False}
    return TrainingArguments(
        output_dir=scratch,  # checkpoints/optimizer state never land in the adapter folder
        num_train_epochs=cfg.epochs, max_steps=cfg.max_steps,
        per_device_train_batch_size=cfg.batch_size, gradient_accumulation_steps=cfg.grad_accum,
        learning_rate=cfg.learning_rate, weight_decay=cfg.weight_decay,
        lr_scheduler_type=cfg.lr_scheduler, warmup_steps=cfg.warmup_ratio, optim=cfg.optim,
        bf16=resolve_bf16(cfg.bf16), logging_steps=cfg.logging_steps, logging_first_step=True,
        seed=cfg.seed, data_seed=cfg.seed, report_to="none", **save,
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
               checkpoint_root: Path | None = None, run_name: str = "run") -> dict:
    """Train a LoRA adapter, save it (safetensors only) to out_dir, return training metrics.

    Prompts go through render_prompt here, with the spec's chat-template flag, so training
    sees exactly what prediction will. With `checkpoint_root`, checkpoints go to
    <checkpoint_root>/<run_name>-<fingerprint> and an interrupted run resumes from them.
    """
    import torch
    from transformers import set_seed

    from tunebench.models import load_tokenizer

    if not examples:
        raise ValueError("train_lora got no examples")
    set_seed(cfg.seed)
    tokenizer = load_tokenizer(spec, model_dir, padding_side="right")
    data = [tokenize_example(tokenizer, render_prompt(tokenizer, p, spec.chat_template), c,
                             cfg.max_seq_len) for p, c in examples]
    model = _prepare_peft_model(spec, model_dir, cfg)
    trainable, total = model.get_nb_trainable_parameters()
    collator = CompletionCollator(tokenizer.pad_token_id)
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    folder = None
    if checkpoint_root is not None:
        folder = Path(checkpoint_root) / f"{run_name}-{fingerprint(spec, model_dir, data, cfg)}"
    # A plain Trainer rather than trl's SFTTrainer: the data is already tokenized and masked by
    # tokenize_example (tested above), and SFTTrainer would re-apply its own templating,
    # masking and packing rules, which shift between trl releases.
    run = run_trainer(model, data, collator, cfg, log, folder)
    _save_adapter(model, spec, Path(out_dir))
    if folder is not None:
        shutil.rmtree(folder, ignore_errors=True)  # the adapter is out: nothing left to resume
    wall = run["wall_time_s"]
    # Throughput of this process: after a resume, tokens and wall time count from the resume.
    return {
        **run, "tokens_per_s": collator.n_tokens / wall if wall > 0 else 0.0,
        "train_tokens": collator.n_tokens, "peak_memory_mb": _peak_memory_mb(),
        "trainable_params": int(trainable), "total_params": int(total), "n_examples": len(data),
        "n_truncated": sum(d["truncated"] for d in data),
    }


def run_trainer(model, data: list[dict], collator, cfg: TrainConfig,
                log: Callable[[dict], None] | None, checkpoint_dir: Path | None) -> dict:
    """Run a transformers Trainer, resuming from `checkpoint_dir` when it holds a complete
    checkpoint; SIGTERM saves a checkpoint and raises Interrupted. Returns the loss metrics,
    identical whether or not the run was resumed (they come from the trainer's log history,
    which checkpoints carry)."""
    from transformers import Trainer

    curve: list[dict] = []
    with _trainer_dir(checkpoint_dir) as scratch:
        resume = latest_checkpoint(Path(scratch)) if checkpoint_dir is not None else None
        if resume is not None and log is not None:
            for point in _curve(json.loads((resume / "trainer_state.json").read_text())
                                ["log_history"]):
                log(point)  # replay the steps before the interruption (e.g. into DVCLive)
        stop = _StopOnSignal()
        trainer = Trainer(model=model, train_dataset=data, data_collator=collator,
                          args=_training_args(cfg, scratch, checkpoints=checkpoint_dir is not None),
                          callbacks=[_log_callback(curve, log), stop.callback])
        start = time.perf_counter()
        with stop.installed():
            result = trainer.train(resume_from_checkpoint=str(resume) if resume else None)
        wall = time.perf_counter() - start
        if stop.signalled:
            where = f"; checkpoint in {checkpoint_dir}" if checkpoint_dir is not None else ""
            raise Interrupted(f"training stopped by signal {stop.signalled} at step "
                              f"{trainer.state.global_step}{where}; run again to resume",
                              signum=stop.signalled)
    curve = _curve(trainer.state.log_history)
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
    }


def _curve(log_history: list[dict]) -> list[dict]:
    return [{"step": int(r["step"]), "loss": float(r["loss"]),
             "learning_rate": float(r.get("learning_rate", 0.0))}
            for r in log_history if "loss" in r]


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


def fingerprint(spec: ModelSpec, model_dir: str, data: list[dict], cfg: TrainConfig) -> str:
    """16 hex digits identifying a training run: tokenized data, config, model spec and the
    model folder's files (name, size, mtime). A checkpoint resumes only the same run."""
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
