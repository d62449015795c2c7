"""Completion-only tokenization, dynamic padding, config validation, a real QLoRA run, and
validation: loss per epoch, selection of the best epoch, also across an interrupted run."""

import json
import math
import os
import signal

import pytest

import tunebench.models.causal as causal_module
import tunebench.models.train_qlora as train_module
from tunebench.io import Interrupted
from tunebench.models.causal import CompletionCollator, PackedCollator, tokenize_example, train_lora
from tunebench.models.engine import fingerprint
from tunebench.models.engine import training_args as _training_args
from tunebench.models.loading import ModelSpec, apply_prompt_format, load_causal_lm, load_tokenizer
from tunebench.models.train_qlora import IGNORE_INDEX, TrainConfig, pad_rows, reject_packing

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
    ({"batch_size": 2.5}, "batch_size"), ({"select_best": "yes"}, "select_best"),
    ({"packing": 1}, "packing"), ({"group_by_length": "true"}, "group_by_length"),
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


def test_pad_rows():
    assert pad_rows([[1, 2, 3], [4], []], 0) == [[1, 2, 3], [4, 0, 0], [0, 0, 0]]


def test_packed_batch_has_the_loss_and_gradients_of_the_padded_batch(tokenizer, tiny_model_dir):
    """Packing must not let an example attend to its neighbour: the loss (mean over completion
    tokens) and the gradients of one packed row equal those of the right-padded batch."""
    import torch

    spec = ModelSpec.from_params("tiny", {"source": "local", "path": str(tiny_model_dir)})
    model = load_causal_lm(spec, str(tiny_model_dir), quantize=False)
    rows = [tokenize_example(tokenizer, p, c, 512) for p, c in
            ((PROMPT, "positive"), ("Input: Shares fell.\nAnswer: ", "negative"),
             ("a b c", "neutral"))]
    packer, padder = PackedCollator(), CompletionCollator(tokenizer.pad_token_id)
    packed, padded = packer(rows), padder(rows)
    total = sum(len(r["input_ids"]) for r in rows)
    assert packed["input_ids"].shape == (1, total) and "attention_mask" not in packed
    assert packed["use_cache"] is False
    assert packed["position_ids"][0, :len(rows[0]["input_ids"])].tolist() == list(
        range(len(rows[0]["input_ids"])))
    assert packer.n_tokens == padder.n_tokens == total
    grads = []
    for batch in (packed, padded):
        model.zero_grad()
        loss = model(**batch).loss
        loss.backward()
        grads.append((loss.item(), [p.grad.clone() for p in model.parameters()]))
    (loss_packed, g_packed), (loss_padded, g_padded) = grads
    assert loss_packed == pytest.approx(loss_padded, rel=1e-5)
    for a, b in zip(g_packed, g_padded, strict=True):
        assert torch.allclose(a, b, atol=1e-5)
    # Without the position-id restarts, examples would see each other: the loss differs.
    leaky = dict(packed, position_ids=torch.arange(total)[None])
    assert model(**leaky).loss.item() != pytest.approx(loss_padded, rel=1e-3)


def test_group_by_length_and_packing_reach_the_trainer(tiny_model_dir, tmp_path):
    assert _training_args(TrainConfig(), "unused").train_sampling_strategy == "random"
    grouped = _training_args(TrainConfig(group_by_length=True), "unused")
    assert grouped.train_sampling_strategy == "group_by_length"
    spec = ModelSpec.from_params("tiny", {"source": "local", "path": str(tiny_model_dir),
                                          "load_in_4bit": True})
    examples = [(PROMPT, "positive"), ("Input: Shares fell.\nAnswer: ", "negative"),
                ("Input: x\nAnswer: ", "neutral")] * 2
    cfg = TrainConfig(max_steps=3, batch_size=2, bf16=False, group_by_length=True, packing=True)
    metrics = train_lora(spec, str(tiny_model_dir), examples, cfg, tmp_path / "adapter")
    assert metrics["steps"] == 3 and math.isfinite(metrics["train_loss"])
    assert metrics["train_tokens"] > 0  # counted by the packing collator


def test_packing_is_refused_outside_causal_lms():
    reject_packing(TrainConfig(), "encoder_cls")  # off: nothing to refuse
    with pytest.raises(ValueError, match=r"train_qlora\.packing is for causal LMs.*encoder_cls"):
        reject_packing(TrainConfig(packing=True), "encoder_cls")


def test_qlora_train_save_reload_generate(tiny_model_dir, tmp_path):
    from tunebench.models.generate import generate

    spec = ModelSpec.from_params("tiny", {"source": "local", "path": str(tiny_model_dir),
                                          "load_in_4bit": True, "chat_template": True})
    examples = [(PROMPT, "positive"), ("Input: Shares fell.\nAnswer: ", "negative")] * 3
    cfg = TrainConfig(max_steps=3, learning_rate=5e-3, bf16=False)
    logged = []
    metrics = train_lora(spec, str(tiny_model_dir), examples, cfg, tmp_path / "adapter",
                         log=logged.append)
    files = sorted(p.name for p in (tmp_path / "adapter").iterdir())
    assert files == ["adapter_config.json", "adapter_model.safetensors"]
    # Byte-stable: peft keeps target_modules in a set; the saved list is sorted.
    saved = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert len(saved["target_modules"]) > 1
    assert saved["target_modules"] == sorted(saved["target_modules"])
    assert metrics["steps"] == 3 and len(metrics["loss_curve"]) == 3 and logged
    assert logged[0].keys() == {"step", "loss", "learning_rate"}
    assert math.isfinite(metrics["train_loss"]) and metrics["train_loss"] > 0
    assert 0 < metrics["trainable_params"] < metrics["total_params"]
    assert metrics["n_examples"] == 6 and metrics["n_truncated"] == 0
    assert metrics["train_tokens"] > 0 and metrics["tokens_per_s"] > 0
    assert metrics["peak_memory_mb"] > 0 and metrics["wall_time_s"] > 0
    assert (metrics["n_eval_examples"], metrics["n_eval_truncated"]) == (0, 0)
    assert metrics["eval_loss_curve"] == [] and metrics["selected"] == "last"
    assert metrics["eval_loss_best"] is metrics["best_step"] is metrics["best_epoch"] is None

    model = load_causal_lm(spec, str(tiny_model_dir), quantize=True,
                           adapter_dir=tmp_path / "adapter")
    tokenizer = load_tokenizer(spec, str(tiny_model_dir))
    prompts = [apply_prompt_format(tokenizer, p, "chat") for p, _ in examples[:2]]
    outputs = generate(model, tokenizer, prompts, max_new_tokens=4, progress=False)
    assert len(outputs) == 2 and all(isinstance(o, str) for o in outputs)


# --- validation --------------------------------------------------------------------------------

# 6 examples, batch 2: 3 steps an epoch. Dropout (0.1 by default) stays on, so an evaluation that
# disturbed the RNG would change the training losses.
TRAIN = [(PROMPT, "positive"), ("Input: Shares fell.\nAnswer: ", "negative"),
         ("Input: Results in line.\nAnswer: ", "neutral")] * 2
VALIDATION = [("Input: Sales jumped.\nAnswer: ", "positive"),
              ("Input: The bank cut jobs.\nAnswer: ", "negative"),
              ("Input: No change this quarter.\nAnswer: ", "neutral")]


def _spec(model_dir) -> ModelSpec:
    return ModelSpec.from_params("tiny", {"source": "local", "path": str(model_dir),
                                          "chat_template": True,
                                          "lora_targets": ["q_proj", "v_proj"]})


def _config(**overrides) -> TrainConfig:
    return TrainConfig(**{"epochs": 3, "batch_size": 2, "learning_rate": 5e-3, "bf16": False,
                          "seed": 3, **overrides})


def _adapter(folder):
    from safetensors.torch import load_file

    return load_file(folder / "adapter_model.safetensors")


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(a[k].equal(b[k]) for k in a)


@pytest.fixture
def snapshots(monkeypatch):
    """Records the adapter weights at every evaluation: snapshots.log is the `log` to pass;
    snapshots.weights[step] the adapter state (keys as saved) evaluated at that step."""
    from peft import get_peft_model_state_dict

    class Recorder:
        def __init__(self):
            self.models, self.weights, self.logged = [], {}, []

        def log(self, point):
            self.logged.append(point)
            if "eval_loss" in point:
                state = get_peft_model_state_dict(self.models[-1])
                self.weights[point["step"]] = {k: v.detach().clone() for k, v in state.items()}

    recorder = Recorder()
    prepare = causal_module.load_for_training

    def capture(*args, **kwargs):
        recorder.models.append(prepare(*args, **kwargs))
        return recorder.models[-1]

    monkeypatch.setattr(causal_module, "load_for_training", capture)
    return recorder


def _script_eval_losses(monkeypatch, losses: dict[int, float]) -> None:
    """The evaluation still runs, but reports losses[step] as its loss."""
    from transformers import Trainer

    evaluation_loop = Trainer.evaluation_loop

    def scripted(self, *args, **kwargs):
        output = evaluation_loop(self, *args, **kwargs)
        output.metrics["eval_loss"] = losses[self.state.global_step]
        return output

    monkeypatch.setattr(Trainer, "evaluation_loop", scripted)


def _completion_loss(spec, model_dir, adapter_dir, pairs, batch_size) -> float:
    """The Trainer's evaluation loss, recomputed: completion-token mean per batch, averaged
    over the examples."""
    import torch

    model = load_causal_lm(spec, str(model_dir), quantize=False, adapter_dir=adapter_dir).eval()
    tokenizer = load_tokenizer(spec, str(model_dir), padding_side="right")
    rows = [tokenize_example(tokenizer, apply_prompt_format(tokenizer, p, "chat"), c, 512)
            for p, c in pairs]
    collator, total = CompletionCollator(tokenizer.pad_token_id), 0.0
    with torch.no_grad():
        for i in range(0, len(rows), batch_size):
            batch = collator(rows[i:i + batch_size])
            total += model(**batch).loss.item() * len(rows[i:i + batch_size])
    return total / len(rows)


def test_validation_loss_every_epoch_and_best_adapter_saved(tiny_model_dir, tmp_path, snapshots):
    spec = _spec(tiny_model_dir)
    metrics = train_lora(spec, str(tiny_model_dir), TRAIN, _config(), tmp_path / "adapter",
                         log=snapshots.log, eval_examples=VALIDATION)
    evals = [p for p in snapshots.logged if "eval_loss" in p]
    assert [(p["step"], p["epoch"]) for p in evals] == [(3, 1.0), (6, 2.0), (9, 3.0)]
    assert all(p.keys() == {"step", "epoch", "eval_loss"} for p in evals)
    assert metrics["eval_loss_curve"] == evals and len(metrics["loss_curve"]) == 9
    losses = [p["eval_loss"] for p in evals]
    best = losses.index(min(losses))
    assert metrics["eval_loss_best"] == losses[best] and math.isfinite(losses[best])
    assert (metrics["best_step"], metrics["best_epoch"]) == (evals[best]["step"], best + 1.0)
    assert (metrics["n_eval_examples"], metrics["n_eval_truncated"]) == (3, 0)
    assert metrics["selected"] == "best" and metrics["n_examples"] == 6
    assert _same(_adapter(tmp_path / "adapter"), snapshots.weights[metrics["best_step"]])
    # The reported loss is the completion-only loss of the saved adapter on the validation set.
    recomputed = _completion_loss(spec, tiny_model_dir, tmp_path / "adapter", VALIDATION, 2)
    assert abs(recomputed - metrics["eval_loss_best"]) < 1e-5


def test_max_steps_evaluates_at_epoch_ends_and_at_the_end(tiny_model_dir, tmp_path):
    logged = []
    metrics = train_lora(_spec(tiny_model_dir), str(tiny_model_dir), TRAIN, _config(max_steps=4),
                         tmp_path / "adapter", log=logged.append, eval_examples=VALIDATION)
    evals = [(p["step"], p["epoch"]) for p in logged if "eval_loss" in p]
    assert evals == [(3, 1.0), (4, pytest.approx(4 / 3))] and metrics["steps"] == 4


@pytest.mark.parametrize("select_best", [True, False])
def test_select_best_or_last(tiny_model_dir, tmp_path, monkeypatch, snapshots, select_best):
    # Epoch 2 is best and epoch 3 ties with it: the earlier one wins.
    _script_eval_losses(monkeypatch, {3: 2.0, 6: 1.0, 9: 1.0})
    metrics = train_lora(_spec(tiny_model_dir), str(tiny_model_dir), TRAIN,
                         _config(select_best=select_best), tmp_path / "adapter",
                         log=snapshots.log, eval_examples=VALIDATION)
    assert [p["eval_loss"] for p in metrics["eval_loss_curve"]] == [2.0, 1.0, 1.0]
    assert (metrics["best_step"], metrics["best_epoch"], metrics["eval_loss_best"]) == (6, 2.0, 1.0)
    assert metrics["selected"] == ("best" if select_best else "last")
    assert not _same(snapshots.weights[6], snapshots.weights[9])  # the choice matters
    assert _same(_adapter(tmp_path / "adapter"), snapshots.weights[6 if select_best else 9])


def test_validation_leaves_training_unchanged(tiny_model_dir, tmp_path):
    spec, cfg = _spec(tiny_model_dir), _config(epochs=2, select_best=False)
    plain = train_lora(spec, str(tiny_model_dir), TRAIN, cfg, tmp_path / "plain")
    validated = train_lora(spec, str(tiny_model_dir), TRAIN, cfg, tmp_path / "validated",
                           eval_examples=VALIDATION)
    assert len(validated["eval_loss_curve"]) == 2
    assert validated["loss_curve"] == plain["loss_curve"]  # exactly: same data, order, dropout
    assert validated["train_tokens"] == plain["train_tokens"]  # validation tokens not counted
    assert _same(_adapter(tmp_path / "validated"), _adapter(tmp_path / "plain"))


def test_resume_keeps_the_best_from_before_the_interruption(tiny_model_dir, tmp_path,
                                                            monkeypatch, snapshots):
    _script_eval_losses(monkeypatch, {3: 1.0, 6: 2.0, 9: 3.0})  # epoch 1 is best
    spec, root = _spec(tiny_model_dir), tmp_path / "ck"
    cfg = _config(checkpoint_steps=100)  # the only checkpoint: the one SIGTERM saves

    def interrupt(point):
        snapshots.log(point)
        if point.get("step") == 6 and "eval_loss" in point:
            os.kill(os.getpid(), signal.SIGTERM)  # stops after step 7, with a checkpoint

    with pytest.raises(Interrupted):
        train_lora(spec, str(tiny_model_dir), TRAIN, cfg, tmp_path / "adapter", log=interrupt,
                   checkpoint_root=root, eval_examples=VALIDATION)
    [folder] = root.iterdir()
    assert sorted(p.name for p in folder.glob("checkpoint-*")) == ["checkpoint-7"]
    before = snapshots.weights
    snapshots.weights, snapshots.logged = {}, []

    metrics = train_lora(spec, str(tiny_model_dir), TRAIN, cfg, tmp_path / "adapter",
                         log=snapshots.log, checkpoint_root=root, eval_examples=VALIDATION)
    assert metrics["resumed_from_step"] == 7 and metrics["steps"] == 9
    assert [p["step"] for p in snapshots.logged if "eval_loss" in p] == [3, 6, 9]  # replayed
    assert [p["eval_loss"] for p in metrics["eval_loss_curve"]] == [1.0, 2.0, 3.0]
    assert (metrics["best_step"], metrics["best_epoch"], metrics["selected"]) == (3, 1.0, "best")
    assert not _same(before[3], snapshots.weights[9])
    assert _same(_adapter(tmp_path / "adapter"), before[3])
    assert not list(root.iterdir())  # checkpoints and snapshots go once the adapter is saved


def test_fingerprint_covers_validation_data_and_select_best(tokenizer, tiny_model_dir):
    spec = _spec(tiny_model_dir)
    rows = [tokenize_example(tokenizer, p, c, 512) for p, c in TRAIN[:3] + VALIDATION]
    train, validation, cfg = rows[:3], rows[3:], TrainConfig()

    def fp(data, eval_data=None, config=cfg):
        return fingerprint(spec, str(tiny_model_dir), data, config, eval_data)

    assert fp(train) == fp(train, []) == fp(train, None)
    prints = [fp(train), fp(train, validation), fp(train, validation[:2]),
              fp(train, validation, TrainConfig(select_best=False)),
              fp(train + validation), fp(train + validation[:1], validation[1:])]
    assert len(set(prints)) == len(prints)


@pytest.mark.parametrize("packed", [False, True])
def test_completion_loss_equals_full_logit_loss(tiny_model_dir, tokenizer, packed):
    """The LM head applied at labelled positions only gives the model's own loss (mean over
    labelled tokens, or sum / num_items_in_batch) and the same gradients."""
    import torch

    from tunebench.models.causal import completion_loss

    spec = ModelSpec.from_params("tiny", {"source": "local", "path": str(tiny_model_dir)})
    model = load_causal_lm(spec, str(tiny_model_dir), quantize=False)
    rows = [tokenize_example(tokenizer, PROMPT, c, 512) for c in ("positive", "neutral")]
    rows.append(tokenize_example(tokenizer, PROMPT + "More words here.", "negative", 512))
    collate = PackedCollator() if packed else CompletionCollator(tokenizer.pad_token_id)
    batch = collate(rows)
    ours, logits = completion_loss(model, batch)
    theirs = model(**batch).loss
    n = int((batch["labels"][:, 1:] != IGNORE_INDEX).sum())
    assert logits.shape[0] == n  # one row of logits per labelled token, no more
    assert torch.allclose(ours, theirs, atol=1e-6)
    summed, _ = completion_loss(model, batch, num_items_in_batch=torch.tensor(n * 2))
    assert torch.allclose(summed * 2, theirs, atol=1e-6)
    ours.backward()
    grads = [p.grad.clone() for p in model.parameters() if p.grad is not None]
    model.zero_grad()
    theirs = model(**batch).loss
    theirs.backward()
    for ours_grad, p in zip(grads, [p for p in model.parameters() if p.grad is not None],
                            strict=True):
        assert torch.allclose(ours_grad, p.grad, atol=1e-5)


def test_head_at_loss_only_trains_like_full_logits(tiny_model_dir, tmp_path, monkeypatch):
    """A short run with the head at labelled positions only matches a full-logit run."""
    calls = []
    original = causal_module.completion_loss
    monkeypatch.setattr(causal_module, "completion_loss",
                        lambda *a, **k: calls.append(1) or original(*a, **k))
    spec = _spec(tiny_model_dir)
    fast = train_lora(spec, str(tiny_model_dir), TRAIN, _config(max_steps=3), tmp_path / "a")
    assert len(calls) == 3  # one per step: the fast path ran
    full = train_lora(spec, str(tiny_model_dir), TRAIN,
                      _config(max_steps=3, head_at_loss_only=False), tmp_path / "b")
    assert len(calls) == 3
    assert [p["loss"] for p in fast["loss_curve"]] == pytest.approx(
        [p["loss"] for p in full["loss_curve"]], rel=1e-4)


@pytest.mark.parametrize(("flags", "expected"), [
    ({"avx512f", "avx512_bf16", "amx_bf16", "amx_tile"}, True),
    ({"avx512f", "avx512_bf16"}, False),  # bf16 matmuls slower than fp32 there (measured)
    (set(), False)])
def test_cpu_bf16_auto_needs_amx(monkeypatch, flags, expected):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(train_module, "cpu_flags", lambda: flags)
    assert train_module.resolve_bf16("auto") is expected
    assert train_module.resolve_bf16(True) is True


def test_cpu_flags_reads_the_flags_line():
    flags = train_module.cpu_flags()
    assert isinstance(flags, set)
    if os.path.exists("/proc/cpuinfo"):
        assert "fpu" in flags or not flags  # x86 lists fpu; other CPUs may list "Features"
