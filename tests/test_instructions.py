"""Sampling and rendering of instruction rows."""

from collections import Counter
from pathlib import Path

import pandas as pd

from tunebench.instructions import format_instructions, stratified_sample, truncate_words
from tunebench.tasks import load_task

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
