"""Completion-only tokenization, dynamic padding, config validation and a real QLoRA run."""

import math

import pytest

from tunebench.models import ModelSpec, load_causal_lm, load_tokenizer, render_prompt
from tunebench.train import (
    IGNORE_INDEX,
    CompletionCollator,
    TrainConfig,
    tokenize_example,
    train_lora,
)

PROMPT = ("Instruction: What is the sentiment of this news? Please choose an answer from "
          "{negative/neutral/positive}.\nInput: Profit rose 12 percent.\nAnswer: ")


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    spec = ModelSpec.from_params("tiny", {"source": "local", "path": str(tiny_model_dir)})
    return load_tokenizer(spec, str(tiny_model_dir), padding_side="right")


def test_config_defaults_and_unknown_key():
    cfg = TrainConfig.from_params({"epochs": 1, "bf16": False})
    assert (cfg.lora_r, cfg.lora_alpha, cfg.lora_dropout, cfg.learning_rate) == (8, 32, 0.1, 1e-4)
    with pytest.raises(ValueError, match=r"train\.lerning_rate .*did you mean 'learning_rate'"):
        TrainConfig.from_params({"lerning_rate": 1e-3})


@pytest.mark.parametrize("params, key", [
    ({"bf16": "yes"}, "bf16"), ({"lora_r": 0}, "lora_r"), ({"warmup_ratio": 1.0}, "warmup_ratio"),
    ({"optim": "sgd"}, "optim"), ({"gradient_checkpointing": "False"}, "gradient_checkpointing"),
    ({"batch_size": 2.5}, "batch_size"),
])
def test_config_rejects_bad_values(params, key):
    with pytest.raises(ValueError, match=rf"train\.{key}"):
        TrainConfig.from_params(params)


def test_prompt_masked_completion_plus_eos(tokenizer):
    out = tokenize_example(tokenizer, PROMPT, "positive", max_seq_len=512)
    prompt_ids = tokenizer(PROMPT)["input_ids"]
    completion_ids = tokenizer("positive", add_special_tokens=False)["input_ids"]
    n = len(prompt_ids)
    assert out["input_ids"] == prompt_ids + completion_ids + [tokenizer.eos_token_id]
    assert out["labels"][:n] == [IGNORE_INDEX] * n
    assert out["labels"][n:] == completion_ids + [tokenizer.eos_token_id]
    assert out["attention_mask"] == [1] * len(out["input_ids"])
    assert out["truncated"] is False


def test_truncation_cuts_prompt_from_left_only(tokenizer):
    completion = "Not Sarcasm"
    full = tokenize_example(tokenizer, PROMPT, completion, max_seq_len=512)
    short = tokenize_example(tokenizer, PROMPT, completion, max_seq_len=10)
    assert short["truncated"] is True and len(short["input_ids"]) == 10
    assert short["input_ids"] == full["input_ids"][-10:]  # prompt's right end kept
    n_answer = sum(label != IGNORE_INDEX for label in full["labels"])
    assert short["labels"][-n_answer:] == full["labels"][-n_answer:]  # completion intact
    with pytest.raises(ValueError, match="max_seq_len"):
        tokenize_example(tokenizer, PROMPT, completion, max_seq_len=n_answer)


def test_collator_pads_to_longest_in_batch(tokenizer):
    rows = [tokenize_example(tokenizer, p, "neutral", 512) for p in ("a b", PROMPT, "Input: x")]
    collator = CompletionCollator(pad_token_id=tokenizer.pad_token_id)
    batch = collator(rows)
    longest = max(len(r["input_ids"]) for r in rows)
    assert batch["input_ids"].shape == (3, longest) and longest < 512
    first = len(rows[0]["input_ids"])
    assert batch["input_ids"][0, first:].tolist() == [tokenizer.pad_token_id] * (longest - first)
    assert batch["labels"][0, first:].tolist() == [IGNORE_INDEX] * (longest - first)
    assert batch["attention_mask"].sum().item() == collator.n_tokens == sum(
        len(r["input_ids"]) for r in rows)


def test_qlora_train_save_reload_generate(tiny_model_dir, tmp_path):
    from tunebench.generate import generate

    spec = ModelSpec.from_params("tiny", {"source": "local", "path": str(tiny_model_dir),
                                          "load_in_4bit": True, "chat_template": True})
    examples = [(PROMPT, "positive"), ("Input: Shares fell.\nAnswer: ", "negative")] * 3
    cfg = TrainConfig(max_steps=3, learning_rate=5e-3, bf16=False)
    logged = []
    metrics = train_lora(spec, str(tiny_model_dir), examples, cfg, tmp_path / "adapter",
                         log=logged.append)
    files = sorted(p.name for p in (tmp_path / "adapter").iterdir())
    assert files == ["adapter_config.json", "adapter_model.safetensors"]
    assert metrics["steps"] == 3 and len(metrics["loss_curve"]) == 3 and logged
    assert logged[0].keys() == {"step", "loss", "learning_rate"}
    assert math.isfinite(metrics["train_loss"]) and metrics["train_loss"] > 0
    assert 0 < metrics["trainable_params"] < metrics["total_params"]
    assert metrics["n_examples"] == 6 and metrics["n_truncated"] == 0
    assert metrics["train_tokens"] > 0 and metrics["tokens_per_s"] > 0
    assert metrics["peak_memory_mb"] > 0 and metrics["wall_time_s"] > 0

    model = load_causal_lm(spec, str(tiny_model_dir), quantize=True,
                           adapter_dir=tmp_path / "adapter")
    tokenizer = load_tokenizer(spec, str(tiny_model_dir))
    prompts = [render_prompt(tokenizer, p, True) for p, _ in examples[:2]]
    outputs = generate(model, tokenizer, prompts, max_new_tokens=4, progress=False)
    assert len(outputs) == 2 and all(isinstance(o, str) for o in outputs)
