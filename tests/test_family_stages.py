"""The model families through the stage CLIs: an encoder classifier (tiny BERT) and a seq2seq
summarizer (tiny T5) each train, predict as base and tuned, and are scored; the model is
chosen per run (`runs.<run>.model`)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
REVIEWS = [("The film was wonderful, the acting great.", "positive"),
           ("This movie was terrible and boring.", "negative"),
           ("I loved the story, moving and great.", "positive"),
           ("The worst acting ever, far too long.", "negative")]
DOCS = [("A fire broke out in the city centre on Monday.", "Fire in the city centre."),
        ("The police closed the road after the fire.", "Police closed the road."),
        ("Person1 asks Person2 about the weather.", "They talk about the weather.")]


def _jsonl(path: Path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def _read(path: Path):
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    from tests.fixtures import build_tiny_bert, build_tiny_t5

    root = tmp_path_factory.mktemp("families")
    bert, t5 = build_tiny_bert(root / "bert"), build_tiny_t5(root / "t5")
    reviews = [{"id": f"r{i}", "prompt": f"Review: {t}", "completion": y, "text": t}
               for i, (t, y) in enumerate(REVIEWS)]
    _jsonl(root / "instr/enc/reviews/train.jsonl", reviews)
    _jsonl(root / "instr/enc/reviews/test.jsonl", reviews[:3])
    docs = [{"id": f"d{i}", "prompt": f"summarize: {d}", "completion": s, "text": d,
             "references": [s, "another reference"]} for i, (d, s) in enumerate(DOCS)]
    _jsonl(root / "instr/s2s/docs/train.jsonl", docs)
    _jsonl(root / "instr/s2s/docs/test.jsonl", docs)
    common = {"version": 1, "base_prompt": "zero_shot", "parser": "strict", "notes": "",
              "published": []}
    (root / "instr/enc/reviews/task.json").write_text(json.dumps(
        {**common, "dataset": "reviews", "task": "reviews", "type": "classification",
         "labels": ["negative", "positive"], "run": "enc"}))
    (root / "instr/s2s/docs/task.json").write_text(json.dumps(
        {**common, "dataset": "docs", "task": "docs", "type": "summarization", "labels": [],
         "run": "s2s"}))
    params = {
        "model": "t5",  # the default; the encoder run names its own model
        "models": {
            "bert": {"source": "local", "path": str(bert), "family": "encoder_cls",
                     "lora_targets": ["query", "value"], "load_in_4bit": False},
            "t5": {"source": "local", "path": str(t5), "family": "seq2seq",
                   "lora_targets": ["q", "v"], "load_in_4bit": True}},
        "train_qlora": {"epochs": 2, "learning_rate": 0.01, "batch_size": 2, "max_seq_len": 64,
                        "seed": 0},
        "runs": {"enc": {"mixture": {"reviews": 1}, "model": "bert"},
                 "s2s": {"mixture": {"docs": 1}, "predict": {"modes": ["generate"]}}},
        "predict": {"batch_size": 2, "max_new_tokens": 8, "parser": None,
                    "modes": ["generate"]},
        "score": {"n_boot": 20, "seed": 0, "bertscore": {"model": "bert", "num_layers": 2}},
        "paths": {"model_cache": str(root / "cache")},
    }
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    return root


def stage(root: Path, module: str, *args) -> str:
    result = subprocess.run([sys.executable, "-m", f"stages.{module}", "--params",
                             str(root / "params.yaml"), *map(str, args)], cwd=REPO,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def train_and_predict(root: Path, run: str, dataset: str) -> Path:
    stage(root, "train_qlora", "--run", run, "--instructions", root / "instr" / run,
          "--out", root / "models" / run, "--live", root / "live" / run)
    pred = root / "pred" / dataset
    instructions = root / "instr" / run / dataset
    stage(root, "predict", "--system", "base", "--instructions", instructions,
          "--out-dir", pred / "base")
    stage(root, "predict", "--system", "tuned", "--instructions", instructions,
          "--adapter", root / "models" / run, "--out-dir", pred / "tuned")
    return pred


def test_encoder_run_trains_its_own_model_and_answers_by_argmax(root):
    pred = train_and_predict(root, "enc", "reviews")
    live = json.loads((root / "live/enc/metrics.json").read_text())
    assert live["family"] == "encoder_cls" and live["quantized"] is False
    assert live["n_examples"] == 4 and live["steps"] == 4
    provenance = json.loads((root / "live/enc/provenance.json").read_text())
    assert provenance["model"]["name"] == "bert"
    # CPU here: fp16 is never used on CPU; bf16 autocast only where the CPU has AMX.
    assert provenance["mixed_precision"] == {
        "bf16": "amx_bf16" in provenance["hardware"]["cpu_bf16_flags"], "fp16": False}
    assert provenance["hardware"]["gpu"] is None
    for system in ("base", "tuned"):
        rows = _read(pred / system / f"{system}.jsonl")
        meta = json.loads((pred / system / f"{system}.meta.json").read_text())
        assert [r["id"] for r in rows] == ["r0", "r1", "r2"]
        assert {r["parsed"] for r in rows} <= {"negative", "positive"}
        assert meta["mode"] == "argmax" and meta["invalid"] == 0 and meta["kind"] == system
        assert meta["model"]["family"] == "encoder_cls"
    assert json.loads((pred / "base/base.meta.json").read_text())["adapter"] is None
    out = root / "metrics/reviews.json"
    stage(root, "score", "--dataset", "reviews", "--instructions", root / "instr/enc/reviews",
          "--predictions", pred, "--out", out, "--figures", root / "figures/reviews",
          "--per-example", root / "scores/reviews.jsonl",
          "--timings", root / "timings/reviews.json")
    record = json.loads(out.read_text())
    assert record["type"] == "classification" and set(record["systems"]) == {"base", "tuned"}
    assert len(_read(root / "scores/reviews.jsonl")) == 6


def test_seq2seq_summarizer_is_scored_with_rouge_and_bertscore(root):
    pred = train_and_predict(root, "s2s", "docs")
    live = json.loads((root / "live/s2s/metrics.json").read_text())
    assert live["family"] == "seq2seq" and live["quantized"] is True
    tuned = _read(pred / "tuned/tuned.jsonl")
    assert [r["id"] for r in tuned] == ["d0", "d1", "d2"]
    assert all(r["parsed"] == r["raw"].strip() for r in tuned)
    meta = json.loads((pred / "tuned/tuned.meta.json").read_text())
    assert meta["mode"] == "generate" and meta["max_new_tokens"] == 8 and "n_empty" in meta
    out = root / "metrics/docs.json"
    stage(root, "score", "--dataset", "docs", "--instructions", root / "instr/s2s/docs",
          "--predictions", pred, "--out", out, "--figures", root / "figures/docs",
          "--per-example", root / "scores/docs.jsonl",
          "--timings", root / "timings/docs.json")
    record = json.loads(out.read_text())
    assert record["type"] == "summarization" and set(record["systems"]) == {"base", "tuned"}
    assert record["n_references"] == {"min": 2, "max": 2}
    assert set(record["comparisons"]["tuned_vs_base"]) >= {"rouge1", "bertscore_f1"}
    assert (root / "figures/docs/boxplot.png").stat().st_size > 1000
    examples = _read(root / "scores/docs.jsonl")
    assert len(examples) == 6 and all(0.0 <= e["rougeL"] <= 1.0 for e in examples)


def test_an_encoder_cannot_be_asked_to_summarize(root):
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["runs"]["s2s"]["model"] = "bert"
    bad = root / "bad.yaml"
    bad.write_text(yaml.safe_dump(params))
    result = subprocess.run([sys.executable, "-m", "stages.predict", "--params", str(bad),
                             "--system", "base", "--instructions", str(root / "instr/s2s/docs"),
                             "--out-dir", str(root / "x")], cwd=REPO, capture_output=True,
                            text=True)
    assert result.returncode == 2
    assert "runs.s2s: model bert is an encoder classifier and cannot summarize" in result.stderr
