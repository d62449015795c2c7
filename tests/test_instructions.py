"""Sampling and rendering of instruction rows."""

from collections import Counter
from pathlib import Path

import pandas as pd
import pytest

from tunebench.data.format_instructions import (
    format_instructions,
    hold_out_validation,
    stratified_sample,
    truncate_words,
)
from tunebench.data.tasks import load_task

TASKS = Path(__file__).resolve().parents[1] / "tasks"


def test_stratified_sample_keeps_proportions_and_is_seeded():
    labels = ["a"] * 60 + ["b"] * 30 + ["c"] * 10
    picked = stratified_sample(labels, 10, seed=1)
    assert Counter(labels[i] for i in picked) == {"a": 6, "b": 3, "c": 1}
    assert picked == sorted(picked) and picked == stratified_sample(labels, 10, seed=1)
    assert picked != stratified_sample(labels, 10, seed=2)


def test_stratified_sample_largest_remainder_and_no_cap():
    labels = ["a", "a", "b", "b", "c"]  # quotas for cap 3: a 1.2, b 1.2, c 0.6
    assert Counter(labels[i] for i in stratified_sample(labels, 3, 0)) == {"a": 1, "b": 1, "c": 1}
    assert stratified_sample(labels, None, 0) == [0, 1, 2, 3, 4]
    assert stratified_sample(labels, 99, 0) == [0, 1, 2, 3, 4]


def test_truncate_words_reports_cuts():
    assert truncate_words("a b c", 5) == ("a b c", False)
    assert truncate_words("a b c d", 2) == ("a b ...", True)
    assert truncate_words("a b c d", None) == ("a b c d", False)


def test_format_instructions_rows_and_summary():
    task = load_task(TASKS / "tfns.yaml")
    df = pd.DataFrame({"id": ["t:0", "t:1", "t:2"], "text": ["up big", "down", "flat day"],
                       "label": ["positive", "negative", "neutral"]})
    rows, summary = format_instructions(task, df, cap=None, seed=0, max_words=1)
    assert rows[0] == {"id": "t:0", "completion": "positive", "text": "up ...", "prompt": (
        "Instruction: What is the sentiment of this tweet? Please choose an answer from "
        "{negative/neutral/positive}.\nInput: up ...\nAnswer: ")}
    assert summary["truncated"] == 2 and summary["rows_out"] == 3


# --- validation held out of train ----------------------------------------------------------

def _rows(labels):
    return [{"id": f"d:{i}", "completion": label} for i, label in enumerate(labels)]


def test_hold_out_validation_share_stratified_and_seeded():
    rows = _rows(["neutral"] * 60 + ["positive"] * 30 + ["negative"] * 10)
    train, val = hold_out_validation(rows, 0.2, seed=42)
    assert len(val) == 20 and len(train) == 80
    assert Counter(r["completion"] for r in val) == {"neutral": 12, "positive": 6, "negative": 2}
    ids = [r["id"] for r in train], [r["id"] for r in val]
    assert set(ids[0]).isdisjoint(ids[1]) and len(set(ids[0]) | set(ids[1])) == 100
    assert ids[1] == sorted(ids[1], key=lambda i: int(i[2:]))  # original order kept
    assert hold_out_validation(rows, 0.2, seed=42) == (train, val)
    assert hold_out_validation(rows, 0.2, seed=7)[1] != val


def test_hold_out_validation_rounds_keeps_both_sides_and_refuses_tiny_sets():
    from tunebench.io import DataError

    assert len(hold_out_validation(_rows("ab" * 5), 0.25, 0)[1]) == 3  # 2.5 rounds up
    assert len(hold_out_validation(_rows("ab"), 0.01, 0)[1]) == 1
    assert len(hold_out_validation(_rows("ab"), 0.99, 0)[0]) == 1
    uniform = hold_out_validation(_rows(["same summary"] * 10), 0.3, 0, by_label=False)
    assert len(uniform[1]) == 3
    with pytest.raises(DataError, match="datasets.x.validation_share: 1 training row"):
        hold_out_validation(_rows("a"), 0.5, 0, where="datasets.x.validation_share")


PARAMS = {"format_instructions": {"seed": 42, "caps": {"train": 40}},
          "datasets": {"tfns": {"run": "r"}}}


def _params(dataset=None, default=None):
    import copy

    params = copy.deepcopy(PARAMS)
    params["datasets"]["tfns"].update(dataset or {})
    params["format_instructions"].update(default or {})
    return params


def test_validation_share_params_are_read_and_checked():
    from tunebench.config import ConfigError
    from tunebench.running.params import dataset_entry

    assert dataset_entry(_params(), "tfns").validation_share is None
    entry = dataset_entry(_params({"validation_share": 0.2}), "tfns")
    assert (entry.validation_share, entry.validation_share_key) == (
        0.2, "datasets.tfns.validation_share")
    entry = dataset_entry(_params(default={"validation_share": 0.1}), "tfns")
    assert (entry.validation_share, entry.validation_share_key) == (
        0.1, "format_instructions.validation_share")
    off = dataset_entry(_params({"validation_share": None}, {"validation_share": 0.1}), "tfns")
    assert off.validation_share is None  # a dataset's null turns the default off
    for bad in (0, 1, 1.5, -0.2, True, "0.2"):
        with pytest.raises(ConfigError, match=r"^params.yaml: datasets.tfns.validation_share: "
                                              r"expected a share strictly between 0 and 1"):
            dataset_entry(_params({"validation_share": bad}), "tfns")
    with pytest.raises(ConfigError, match="format_instructions.validation_share: expected"):
        dataset_entry(_params(default={"validation_share": 2}), "tfns")
    with pytest.raises(ConfigError, match=r"unknown key 'validation_shar' \(did you mean"):
        dataset_entry(_params({"validation_shar": 0.2}), "tfns")
    with pytest.raises(ConfigError, match=r"format_instructions: unknown key 'validaton_share'"):
        dataset_entry(_params(default={"validaton_share": 0.2}), "tfns")


def _run_stage(tmp_path, monkeypatch, params, splits=("train", "test")):
    """format-instructions on a small labelled TFNS-like set (90 train rows, 2:1 labels)."""
    import json
    import sys

    import yaml

    from stages import format_instructions as stage

    labeled, out = tmp_path / "labeled", tmp_path / "out"
    labeled.mkdir(exist_ok=True)
    kept = {}
    for split in splits:
        n = kept[split] = 90 if split == "train" else 12
        labels = (["neutral", "neutral", "positive"] * n)[:n]
        pd.DataFrame({"id": [f"tfns:{split}:{i}" for i in range(n)],
                      "text": [f"tweet {i}" for i in range(n)], "label": labels}
                     ).to_parquet(labeled / f"{split}.parquet")
    (labeled / "summary.json").write_text(json.dumps(
        {"splits": {split: {"kept": n} for split, n in kept.items()}}))
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    monkeypatch.setattr(sys, "argv", [
        "format_instructions", "--params", str(tmp_path / "params.yaml"), "--dataset", "tfns",
        "--tasks", str(TASKS), "--labeled", str(labeled), "--out", str(out)])
    stage.main()

    def read(name):
        return [json.loads(line) for line in (out / name).read_text().splitlines()]

    return read, json.loads((out / "summary.json").read_text())


def test_stage_writes_validation_held_out_of_the_capped_train(tmp_path, monkeypatch):
    read, summary = _run_stage(tmp_path, monkeypatch, _params({"validation_share": 0.25}))
    train, val = read("train.jsonl"), read("validation.jsonl")
    assert (len(train), len(val)) == (30, 10)  # cap 40 first, then 25% of those
    assert {r["id"] for r in train}.isdisjoint(r["id"] for r in val)
    assert Counter(r["completion"] for r in val) == {"neutral": 7, "positive": 3}
    assert summary["train"]["rows_out"] == 30 and summary["train"]["held_out_validation"] == 10
    assert summary["train"]["label_counts"] == {"neutral": 20, "positive": 10}
    assert summary["validation"] == {"from": "train", "validation_share": 0.25, "seed": 42,
                                     "rows_out": 10, "label_counts": {"neutral": 7,
                                                                      "positive": 3}}
    again, _ = _run_stage(tmp_path, monkeypatch, _params({"validation_share": 0.25}))
    assert again("validation.jsonl") == val  # seeded: the same rows every run


def test_stage_keeps_an_existing_validation_split(tmp_path, monkeypatch):
    from tunebench.config import ConfigError

    splits = ("train", "test", "validation")
    read, summary = _run_stage(tmp_path, monkeypatch, _params(
        default={"validation_share": 0.2}), splits)
    assert len(read("validation.jsonl")) == 12 and "held_out_validation" not in summary["train"]
    with pytest.raises(ConfigError, match=r"datasets.tfns.validation_share: tfns already has "
                                          r"a validation split"):
        _run_stage(tmp_path, monkeypatch, _params({"validation_share": 0.2}), splits)
