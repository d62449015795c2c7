"""Training settings and training data, shared by every model family: the `train_qlora`
params section (TrainConfig), the mixed precision it resolves to on this machine, and a run's
training mixture read from format-instructions' output. The engine is engine.py; each family
module (causal.py, seq2seq.py, encoder.py) tokenizes its examples and calls it.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from tunebench.config import ConfigError, closest
from tunebench.io import DataError, check_unique_ids, read_json, read_jsonl
from tunebench.running.params import run_entry, section

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
                raise ValueError(f"unknown key {where}.{key}{closest(key, known)}")
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


def pad_rows(rows: list[list[int]], value: int) -> list[list[int]]:
    """Right-pad every row with `value` to the longest row's length."""
    width = max(len(row) for row in rows)
    return [row + [value] * (width - len(row)) for row in rows]


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




def mixture_examples(instructions: Path, mixture: dict[str, int], where: str,
                     split: str = "train") -> tuple[list[dict], dict]:
    """Rows ({id, prompt, completion, text}) of every mixture dataset's `split`, each
    repeated `factor` times; a dataset without that split file is skipped for
    split != "train" (validation is optional, training data is not)."""
    present = sorted(p.name for p in instructions.iterdir() if p.is_dir())
    if sorted(mixture) != present:
        raise ConfigError(f"{where}.mixture names {sorted(mixture)} but {instructions} holds "
                          f"{present}: every dataset of the run needs a replication factor")
    examples, counts = [], {}
    for name, factor in sorted(mixture.items()):
        if not isinstance(factor, int) or factor < 1:
            raise ConfigError(
                f"{where}.mixture.{name}: expected a positive integer, got {factor!r}")
        path = instructions / name / f"{split}.jsonl"
        if split != "train" and not path.is_file():
            continue
        rows = read_jsonl(path, ("id", "prompt", "completion"))
        check_unique_ids([r["id"] for r in rows], str(path))
        for lineno, r in enumerate(rows, start=1):
            if not isinstance(r["completion"], str) or not r["completion"].strip():
                raise DataError(f"{path}:{lineno}: field 'completion' is empty or not a string")
        # Validation is for measuring, so it is never replicated.
        examples += rows * (factor if split == "train" else 1)
        counts[name] = {"examples": len(rows), "factor": factor if split == "train" else 1}
    if len(examples) != sum(c["examples"] * c["factor"] for c in counts.values()):
        raise DataError(f"{instructions}: mixture examples do not add up to {counts}")
    return examples, counts


def label_list(instructions: Path, mixture: dict[str, int]) -> list[str]:
    """The labels every mixture dataset shares (an encoder head has one label set)."""
    found = {name: read_json(instructions / name / "task.json")["labels"] for name in mixture}
    distinct = {tuple(labels) for labels in found.values()}
    if len(distinct) != 1 or not next(iter(distinct)):
        raise ConfigError(f"{instructions}: an encoder classifier needs one shared label set, "
                          f"got {found}")
    return list(next(iter(distinct)))


# The training metrics train-qlora logs to its DVCLive summary (those a family returns).
SUMMARY_KEYS = ("train_loss", "train_loss_final", "wall_time_s", "tokens_per_s", "train_tokens",
                "peak_memory_mb", "trainable_params", "total_params", "n_examples",
                "n_truncated", "steps", "resumed_from_step", "n_eval_examples",
                "eval_loss_best", "best_step", "best_epoch")


def train_settings(params: dict[str, Any], run: str) -> TrainConfig:
    """The TrainConfig of a run: params `train_qlora` with `runs.<run>.train_qlora` on top
    (a run may override any training setting, e.g. the published sarcasm recipe)."""
    settings = {**section(params, "train_qlora"), **(run_entry(params, run).get("train_qlora")
                                                     or {})}
    try:
        return TrainConfig.from_params(settings, f"train_qlora (+ runs.{run}.train_qlora)")
    except ValueError as exc:
        raise ConfigError(f"params.yaml: {exc}") from None
