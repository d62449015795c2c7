"""The `baselines` stage on a tiny hand-made labeled + instructions folder."""

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from tunebench.evaluation.baselines import (
    TfidfLogregConfig,
    drop_test_texts,
    join_texts,
    run_baselines,
    run_strong_floor,
)
from tunebench.io import DataError, read_jsonl, write_json, write_jsonl, write_parquet

REPO = Path(__file__).resolve().parents[1]
POS = ["great gain strong profit", "strong growth great quarter", "profit rose strong",
       "record profit great year", "strong sales gain"]
NEG = ["heavy loss weak sales", "weak demand heavy loss", "loss widened weak",
       "weak outlook heavy cuts"]
# The full labeled train split is mostly negative, but the instructions sample (what the LLM
# is fine-tuned on) holds 3 positive and 2 negative rows: the majority must be "positive".
LABELED_TRAIN = ([(f"tr{i}", text, "positive") for i, text in enumerate(POS)]
                 + [(f"tr{i + 5}", text, "negative") for i, text in enumerate(NEG)]
                 + [(f"tr{i + 9}", "weak loss", "negative") for i in range(6)])
SAMPLE_TRAIN = ["tr0", "tr1", "tr2", "tr5", "tr6"]
LABELED_TEST = [("te0", "strong profit", "positive"), ("te1", "heavy loss", "negative"),
                ("te2", "great growth", "positive"), ("te3", "unused row", "negative")]
SAMPLE_TEST = ["te1", "te0", "te2"]


def frame(rows: list[tuple[str, str, str]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["id", "text", "label"])


def instruction_rows(labeled: list[tuple[str, str, str]], ids: list[str]) -> list[dict]:
    by_id = {rid: (text, label) for rid, text, label in labeled}
    return [{"id": rid, "prompt": f"Input: {by_id[rid][0]}\nAnswer: ",
             "completion": by_id[rid][1]} for rid in ids]


@pytest.fixture
def folders(tmp_path: Path) -> dict[str, Path]:
    labeled, instructions = tmp_path / "labeled", tmp_path / "instructions"
    write_parquet(labeled / "train.parquet", frame(LABELED_TRAIN))
    write_parquet(labeled / "test.parquet", frame(LABELED_TEST))
    write_jsonl(instructions / "train.jsonl", instruction_rows(LABELED_TRAIN, SAMPLE_TRAIN))
    write_jsonl(instructions / "test.jsonl", instruction_rows(LABELED_TEST, SAMPLE_TEST))
    write_json(instructions / "task.json", {"dataset": "toy", "labels": ["negative", "positive"]})
    params = tmp_path / "params.yaml"
    params.write_text("baselines:\n  tfidf_logreg: {ngram_range: [1, 1], C: 10.0}\n",
                      encoding="utf-8")
    return {"labeled": labeled, "instructions": instructions, "params": params}


def test_join_texts_needs_every_id_and_matching_labels() -> None:
    rows = instruction_rows(LABELED_TRAIN, SAMPLE_TRAIN)
    assert join_texts(rows, frame(LABELED_TRAIN), "train.parquet")[0] == POS[0]
    with pytest.raises(DataError, match=r"train\.parquet: id 'tr5' from the instructions"):
        join_texts(rows, frame([r for r in LABELED_TRAIN if r[0] != "tr5"]), "train.parquet")
    relabeled = [(rid, text, "negative") for rid, text, _ in LABELED_TRAIN]
    with pytest.raises(DataError, match="id 'tr0' has label 'negative'"):
        join_texts(rows, frame(relabeled), "train.parquet")


def test_run_baselines_rows_and_meta() -> None:
    train = instruction_rows(LABELED_TRAIN, SAMPLE_TRAIN)
    test = instruction_rows(LABELED_TEST, SAMPLE_TEST)
    texts = [join_texts(rows, frame(LABELED_TRAIN + LABELED_TEST), "x")
             for rows in (train, test)]
    out = run_baselines(train, texts[0], test, texts[1], TfidfLogregConfig(C=10.0))
    rows, meta = out["majority"]
    assert [r["parsed"] for r in rows] == ["positive"] * 3 and meta["majority_label"] == "positive"
    assert rows[0]["prompt_sha256"] == hashlib.sha256(test[0]["prompt"].encode()).hexdigest()
    assert [r["target"] for r in rows] == ["negative", "positive", "positive"]
    rows, meta = out["tfidf_logreg"]
    assert [r["parsed"] for r in rows] == ["negative", "positive", "positive"]
    assert all(r["raw"] == r["parsed"] for r in rows)
    assert (meta["kind"], meta["model"], meta["n"], meta["n_train"]) == ("baseline", None, 3, 5)


def test_strong_floor_fits_the_whole_split_without_test_texts() -> None:
    texts, labels, dropped = drop_test_texts(["Heavy  LOSS", "weak loss", "strong profit"],
                                             ["negative", "negative", "positive"],
                                             ["heavy loss", "great growth"])
    assert (texts, labels, dropped) == (["weak loss", "strong profit"],
                                        ["negative", "positive"], 1)
    test = instruction_rows(LABELED_TEST, SAMPLE_TEST)
    test_texts = join_texts(test, frame(LABELED_TEST), "test.parquet")
    # The whole split (15 rows, mostly negative) rather than the 5-row tuning sample.
    full = LABELED_TRAIN + [("leak", "heavy loss", "negative")]
    rows, meta = run_strong_floor([r[1] for r in full], [r[2] for r in full], test, test_texts,
                                  TfidfLogregConfig(C=10.0))["tfidf_full"]
    assert (meta["system"], meta["kind"], meta["n_train"]) == ("tfidf_full", "baseline", 15)
    assert meta["n_train_dropped_test_overlap"] == 1
    assert [r["id"] for r in rows] == SAMPLE_TEST
    assert [r["parsed"] for r in rows] == ["negative", "positive", "positive"]


def test_cli_help_and_deterministic_runs(folders: dict[str, Path], tmp_path: Path) -> None:
    shown = subprocess.run([sys.executable, "-m", "stages.baselines", "--help"], cwd=REPO,
                           capture_output=True, text=True, check=True)
    assert "majority" in shown.stdout
    outs = [tmp_path / "pred_a", tmp_path / "pred_b"]
    write_jsonl(outs[0] / "tuned.jsonl", [{"id": "keep me"}])  # another stage's file
    procs = [subprocess.Popen(
        [sys.executable, "-m", "stages.baselines", "--params", str(folders["params"]),
         "--dataset", "toy", "--instructions", str(folders["instructions"]),
         "--labeled", str(folders["labeled"]), "--out", str(out)],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for out in outs]
    for proc in procs:
        _, err = proc.communicate()
        assert proc.returncode == 0, err
    names = {f"{system}.{ext}" for system in ("majority", "tfidf_logreg", "tfidf_full")
             for ext in ("jsonl", "meta.json")}
    assert {p.name for p in outs[0].iterdir()} == names | {"tuned.jsonl"}
    assert read_jsonl(outs[0] / "tuned.jsonl") == [{"id": "keep me"}]
    assert {p.name for p in outs[1].iterdir()} == names
    for name in ("majority.jsonl", "tfidf_logreg.jsonl", "tfidf_full.jsonl"):
        assert (outs[0] / name).read_bytes() == (outs[1] / name).read_bytes()
    assert [r["parsed"] for r in read_jsonl(outs[0] / "majority.jsonl")] == ["positive"] * 3
    meta = json.loads((outs[0] / "tfidf_logreg.meta.json").read_text(encoding="utf-8"))
    assert meta["config"]["C"] == 10.0 and meta["config"]["ngram_range"] == [1, 1]
    assert meta["seconds"] >= meta["fit_seconds"] >= 0
