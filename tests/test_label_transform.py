"""Label mappings on hand-written rows, quarantine, and FinGPT's split."""

from pathlib import Path

import pandas as pd
import pytest

from tunebench.data.label_transform import apply_label_rule, label_transform, resplit_indices
from tunebench.data.tasks import load_task
from tunebench.io import DataError

TASKS = Path(__file__).resolve().parents[1] / "tasks"


def task(name):
    return load_task(TASKS / f"{name}.yaml")


@pytest.mark.parametrize(("score", "label"), [
    (-1.0, "negative"), (-0.1001, "negative"), (-0.1, "neutral"), (0.0, "neutral"),
    (0.0999, "neutral"), (0.1, "positive"), (0.85, "positive"),
])
def test_fiqa_score_bins_at_the_boundaries(score, label):
    assert apply_label_rule(task("fiqa_sa").label, {"sentiment_score": score}) == (label, None)


@pytest.mark.parametrize(("raw", "label"), [(0, "negative"), (1, "positive"), (2, "neutral")])
def test_tfns_bullish_is_positive_and_2_is_neutral(raw, label):
    assert apply_label_rule(task("tfns").label, {"label": raw}) == (label, None)


@pytest.mark.parametrize(("raw", "label"), [
    ("strong positive", "positive"), ("moderately positive", "positive"),
    ("mildly positive", "neutral"), ("neutral", "neutral"), ("mildly negative", "neutral"),
    ("moderately negative", "negative"), ("strong negative", "negative"),
])
def test_nwgi_seven_levels_collapse_to_three(raw, label):
    assert apply_label_rule(task("nwgi").label, {"label": raw}) == (label, None)


@pytest.mark.parametrize(("row", "reason"), [
    ({"label": None}, "missing label"),
    ({"label": float("nan")}, "missing label"),
    ({"label": 7}, "unknown label 7"),
])
def test_bad_labels_give_reasons(row, reason):
    label, why = apply_label_rule(task("tfns").label, row)
    assert label is None and why.startswith(reason)


def test_non_numeric_score_is_not_binned():
    label, why = apply_label_rule(task("fiqa_sa").label, {"sentiment_score": "0.3"})
    assert label is None and "non-numeric" in why


def _raw(rows):
    df = pd.DataFrame(rows)
    df.insert(0, "source_row", range(len(df)))
    return df


def test_quarantine_counts_every_bad_row_and_keeps_the_rest():
    train = _raw([{"text": "up", "label": 1}, {"text": " ", "label": 0},
                  {"text": "flat", "label": 9}, {"text": "down", "label": 0}])
    test = _raw([{"text": "meh", "label": 2}, {"text": None, "label": 2}])
    raw = {"train": train, "test": test}
    splits, quarantine, summary = label_transform(task("tfns"), raw, 0.5)
    assert list(splits["train"]["label"]) == ["positive", "negative"]
    assert list(splits["train"]["id"]) == ["tfns:train:0", "tfns:train:3"]
    assert [q["id"] for q in quarantine] == ["tfns:train:1", "tfns:train:2", "tfns:test:1"]
    assert summary["quarantined"] == 3 and summary["rows_in"] == 6
    reasons = summary["splits"]["train"]["quarantine_reasons"]
    assert reasons == {"empty text": 1, "unknown label 9": 1}


def test_too_many_quarantined_rows_fail_with_the_first_reasons():
    train = _raw([{"text": "", "label": 1}] + [{"text": "ok", "label": 1}] * 9)
    test = _raw([{"text": "ok", "label": 2}] * 10)
    with pytest.raises(DataError, match=r"1 of 20 rows quarantined \(5.00%\).*tfns:train:0: empty"):
        label_transform(task("tfns"), {"train": train, "test": test}, 0.01)


def test_missing_column_names_split_and_column():
    with pytest.raises(DataError, match="tfns/train: missing column.*label"):
        label_transform(task("tfns"), {"train": _raw([{"text": "x"}]),
                                        "test": _raw([{"text": "x", "label": 1}])}, 0.5)


def test_resplit_matches_datasets_train_test_split_on_fpb(mirror_dir):
    """The mirror carries FinGPT's FPB split (checked upstream against a published test file);
    rebuilding it from all 4,846 rows in line order must give the same test rows, in order."""
    parts = [pd.read_parquet(mirror_dir / "fpb" / f) for f in ("train.parquet", "test.parquet")]
    whole = pd.concat(parts).sort_values("line_idx").reset_index(drop=True)
    assert list(whole["line_idx"]) == list(range(4846))
    train, test = resplit_indices(len(whole), 0.25, 42)
    assert len(test) == 1212 and len(train) == 3634
    assert test == list(parts[1]["line_idx"])
    assert train == list(parts[0]["line_idx"])


def test_resplit_is_used_when_the_source_has_one_split():
    rows = [{"sentence": f"s{i}", "label": ["negative", "neutral", "positive"][i % 3]}
            for i in range(20)]
    splits, _, summary = label_transform(task("fpb"), {"all": _raw(rows)}, 0.0)
    assert len(splits["test"]) == 5 and len(splits["train"]) == 15
    assert set(splits["test"]["id"]).isdisjoint(splits["train"]["id"])
    assert all(i.startswith("fpb:all:") for i in splits["test"]["id"])
