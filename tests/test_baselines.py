"""Unit tests for tunebench.evaluation.baselines on tiny inline data."""

import pytest

from tunebench.evaluation.baselines import TfidfLogregConfig, majority_class, tfidf_logreg


def test_majority_class() -> None:
    assert majority_class(["x", "y", "y"], 2) == ("y", ["y", "y"])


def test_majority_class_tie_goes_to_first_sorted_label() -> None:
    # "b" and "a" both appear twice; "a" sorts first whatever the training order.
    assert majority_class(["b", "c", "b", "a", "a"], 3) == ("a", ["a", "a", "a"])


def test_majority_class_rejects_empty_training_set() -> None:
    with pytest.raises(ValueError, match="empty"):
        majority_class([], 3)


def test_config_from_params() -> None:
    cfg = TfidfLogregConfig.from_params({"C": 0.5, "ngram_range": [1, 1]})
    assert cfg.C == 0.5
    assert cfg.ngram_range == (1, 1)
    assert cfg.max_iter == 1000


def test_config_rejects_unknown_key_with_suggestion() -> None:
    with pytest.raises(ValueError, match="'ngram'.*did you mean 'ngram_range'"):
        TfidfLogregConfig.from_params({"ngram": [1, 2]})


TRAIN_TEXTS = [
    "great gain strong profit",
    "strong growth great quarter",
    "profit rose strong",
    "heavy loss weak sales",
    "weak demand heavy loss",
    "loss widened weak",
]
TRAIN_LABELS = ["positive"] * 3 + ["negative"] * 3
TEST_TEXTS = ["strong profit", "weak loss", "great growth", "heavy loss"]


def test_tfidf_logreg_learns_separable_toy_set() -> None:
    out = tfidf_logreg(TRAIN_TEXTS, TRAIN_LABELS, TEST_TEXTS, TfidfLogregConfig())
    assert out["predictions"] == ["positive", "negative", "positive", "negative"]
    assert out["fit_seconds"] >= 0 and out["predict_seconds"] >= 0


def test_tfidf_logreg_is_deterministic_for_a_seed() -> None:
    cfg = TfidfLogregConfig(seed=7, C=0.1)
    texts = TEST_TEXTS + ["strong loss", "great weak quarter"]
    first = tfidf_logreg(TRAIN_TEXTS, TRAIN_LABELS, texts, cfg)["predictions"]
    assert tfidf_logreg(TRAIN_TEXTS, TRAIN_LABELS, texts, cfg)["predictions"] == first


def test_tfidf_logreg_rejects_length_mismatch() -> None:
    with pytest.raises(ValueError, match="6 items"):
        tfidf_logreg(TRAIN_TEXTS, TRAIN_LABELS[:-1], TEST_TEXTS, TfidfLogregConfig())
