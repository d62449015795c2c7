"""Training throughput for `make perf`: real (non-pad) tokens/s of six loops on the same
examples and model: HF Trainer with every batch padded to 512; train-qlora's Trainer with our
dynamic collation (tunebench.models.causal.CompletionCollator, what train_lora uses by default)
and the
LM head at labelled positions only (train_qlora.head_at_loss_only), the same with full logits,
with length-grouped batches (train_qlora.group_by_length) and with packing
(train_qlora.packing, tunebench.models.causal.PackedCollator); and a bare PyTorch
forward/backward/step loop over the dynamically collated batches.

Each loop's throughput is also given as a fraction of the machine's bound, measured in the
same run: a 2048x2048 matmul probe in the training precision gives FLOP/s, and a LoRA step
costs about 4 FLOP per weight per token (2 forward, 2 for the activation gradients; the frozen
weights get no weight gradients), so bound = FLOP/s / (4 x parameters)."""

from __future__ import annotations

import functools
import json
import tempfile
from pathlib import Path


def _examples(params, cfg, tokenizer, spec, n):
    from tunebench.models.causal import tokenize_example
    from tunebench.models.loading import apply_prompt_format

    ds = cfg["dataset"]
    run = params["datasets"][ds]["run"]
    path = Path("data/instructions") / run / ds / "train.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()][:n]
    fmt = spec.format_for("tuned")  # as train-qlora formats its examples
    return [tokenize_example(tokenizer, apply_prompt_format(tokenizer, r["prompt"], fmt,
                                                            spec.system_prompt),
                             r["completion"], cfg["train_pad_to"]) for r in rows]


def matmul_tflops(dtype_name: str, size: int = 2048, repeats: int = 8) -> float:
    """Measured TFLOP/s of a size x size matmul in torch (float32 or bfloat16)."""
    import time

    import torch

    dtype = getattr(torch, dtype_name)
    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    for _ in range(2):
        a @ b
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * size**3 * repeats / (time.perf_counter() - start) / 1e12


class PadTo:
    """The published-style collator: every batch padded to a fixed length."""

    def __init__(self, pad_id, width):
        from tunebench.models.causal import CompletionCollator

        self.inner, self.width = CompletionCollator(pad_id), width

    @property
    def n_tokens(self):
        return self.inner.n_tokens

    def __call__(self, features):
        pad = {"input_ids": self.inner.pad_token_id, "attention_mask": 0, "labels": -100}
        padded = [{k: f[k] + [pad[k]] * (self.width - len(f[k])) for k in pad} for f in features]
        batch = self.inner(padded)
        self.inner.n_tokens -= len(features) * self.width
        self.inner.n_tokens += sum(len(f["input_ids"]) for f in features)
        return batch


def _trainer_run(model, data, collator, steps, batch_size, group_by_length=False,
                 head_at_loss_only=False, ours=True):
    """train-qlora's Trainer and arguments (tunebench.models.engine); `ours=False`: the plain HF
    Trainer (the published-style loop)."""
    from transformers import Trainer

    from tunebench.models.causal import completion_loss
    from tunebench.models.engine import trainer_class, training_args
    from tunebench.models.train_qlora import TrainConfig

    cfg = TrainConfig(max_steps=steps, batch_size=batch_size, learning_rate=1e-4, seed=0,
                      logging_steps=1000, checkpoint_steps=0, group_by_length=group_by_length)
    loop = trainer_class(completion_loss if head_at_loss_only else None) if ours else Trainer
    with tempfile.TemporaryDirectory() as scratch:
        args = training_args(cfg, scratch)
        args.disable_tqdm = True
        loop(model=model, args=args, train_dataset=data, data_collator=collator).train()


def _bare_run(model, data, collator, steps, batch_size, autocast_dtype=None):
    """Forward/backward/AdamW step, under the same autocast as the Trainer loops get."""
    import torch

    device = next(model.parameters()).device
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    scaler = torch.amp.GradScaler(device.type, enabled=autocast_dtype == torch.float16)
    for s in range(steps):
        batch = collator([data[(s * batch_size + j) % len(data)] for j in range(batch_size)])
        with torch.autocast(device.type, dtype=autocast_dtype or torch.float32,
                            enabled=autocast_dtype is not None):
            loss = model(**{k: v.to(device) for k, v in batch.items()}).loss
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        opt.zero_grad()


def train_figures(spec, model_dir, params, cfg) -> dict:
    import torch

    from tunebench.models.causal import CompletionCollator, PackedCollator, load_for_training
    from tunebench.models.loading import load_tokenizer
    from tunebench.models.train_qlora import TrainConfig
    from tunebench.running.params import section
    from tunebench.running.perf_timing import timed

    tokenizer = load_tokenizer(spec, model_dir, padding_side="right")
    steps, bs = cfg["train_steps"], cfg["train_batch_size"]
    data = _examples(params, cfg, tokenizer, spec, steps * bs)
    pad_id = tokenizer.pad_token_id
    fast = functools.partial(_trainer_run, head_at_loss_only=True)
    grouped = functools.partial(_trainer_run, group_by_length=True, head_at_loss_only=True)
    published = functools.partial(_trainer_run, ours=False)
    train_cfg = TrainConfig.from_params(dict(section(params, "train_qlora"))) \
        if "train_qlora" in params else TrainConfig()
    # The Trainer loops run train-qlora's default mixed precision (bf16/fp16 "auto"); the bare
    # loop gets the same autocast, so the comparison is of the training loop alone.
    bf16, fp16 = TrainConfig().mixed_precision()
    out: dict = {"mixed_precision": "bf16" if bf16 else "fp16" if fp16 else "fp32"}
    bare = functools.partial(_bare_run, autocast_dtype=torch.bfloat16 if bf16
                             else torch.float16 if fp16 else None)
    for name, collator, loop in (
            ("pad_to_512", PadTo(pad_id, cfg["train_pad_to"]), published),
            ("ours_dynamic", CompletionCollator(pad_id), fast),  # the train-qlora default
            ("ours_full_logits", CompletionCollator(pad_id), _trainer_run),  # head everywhere
            ("ours_grouped", CompletionCollator(pad_id), grouped),  # train_qlora.group_by_length
            ("ours_packed", PackedCollator(), fast),  # train_qlora.packing
            ("bare_pytorch", CompletionCollator(pad_id), bare)):
        model = load_for_training(spec, model_dir, train_cfg)  # train-qlora's own model
        _, secs, mem = timed(lambda m=model, c=collator, f=loop: f(m, data, c, steps, bs))
        out[name] = {"tokens_per_s": round(collator.n_tokens / secs, 1),
                     "seconds": round(secs, 2), "real_tokens": collator.n_tokens,
                     "peak_mb": mem}
        print(name, out[name], flush=True)
        del model
    n_params = _n_weights(spec, model_dir)
    probe = matmul_tflops("bfloat16" if bf16 else "float32")
    bound = probe * 1e12 / (4 * n_params)
    out["bound"] = {"matmul_tflops": round(probe, 3), "weights": n_params,
                    "tokens_per_s": round(bound, 1), "flop_per_token": 4 * n_params}
    for name in [k for k in out if isinstance(out[k], dict) and "tokens_per_s" in out[k]
                 and k != "bound"]:
        out[name]["fraction_of_bound"] = float(f"{out[name]['tokens_per_s'] / bound:.4g}")
    out["ours_vs_pad512"] = round(out["ours_dynamic"]["tokens_per_s"]
                                  / out["pad_to_512"]["tokens_per_s"], 2)
    out["head_at_loss_only_vs_full_logits"] = round(
        out["ours_dynamic"]["tokens_per_s"] / out["ours_full_logits"]["tokens_per_s"], 2)
    out["ours_vs_bare"] = round(out["ours_dynamic"]["tokens_per_s"]
                                / out["bare_pytorch"]["tokens_per_s"], 2)
    for name in ("ours_grouped", "ours_packed"):
        out[f"{name}_vs_dynamic"] = round(out[name]["tokens_per_s"]
                                          / out["ours_dynamic"]["tokens_per_s"], 2)
    return out


def _n_weights(spec, model_dir) -> int:
    """Parameters of the unquantized model, from its config (no weights loaded): a 4-bit
    model's own parameters count packed storage, two weights per element."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(model_dir)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    return sum(p.numel() for p in model.parameters())
