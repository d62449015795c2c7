"""Unit tests for tunebench.evaluation.metrics against numbers worked out by hand in the
comments."""

import time

import numpy as np
import pytest
from sklearn.metrics import classification_report

from tunebench.evaluation.metrics import (
    _encode,
    _resampled_metric,
    bootstrap_ci,
    classification_metrics,
    classification_table,
    format_table,
    mcnemar,
    paired_bootstrap_diff,
)
from tunebench.evaluation.parsing import INVALID

LABELS = ["negative", "neutral", "positive"]
NEG, NEU, POS = LABELS
Y_TRUE = [NEG, NEG, NEU, NEU, NEU, POS, POS, POS]
Y_PRED = [NEG, INVALID, NEU, NEU, POS, POS, POS, NEG]
# Correct at 0, 2, 3, 5, 6 -> accuracy 5/8.
# negative: tp 1, predicted 2 (idx 0, 7), support 2 -> P 1/2, R 1/2, F1 1/2
# neutral:  tp 2, predicted 2 (idx 2, 3), support 3 -> P 1,   R 2/3, F1 4/5
# positive: tp 2, predicted 3 (idx 4-6),  support 3 -> P 2/3, R 2/3, F1 2/3
# weighted F1 = (2*0.5 + 3*0.8 + 3*2/3) / 8 = 5.4 / 8 = 0.675
# macro F1 = (0.5 + 0.8 + 2/3) / 3 = 59/90
# micro: tp 5, valid predictions 7, examples 8 -> F1 = 2*5 / (7 + 8) = 2/3


def test_classification_metrics_hand_case() -> None:
    m = classification_metrics(Y_TRUE, Y_PRED, LABELS)
    assert m["n"] == 8
    assert m["accuracy"] == pytest.approx(0.625)
    assert m["f1_weighted"] == pytest.approx(0.675)
    assert m["f1_macro"] == pytest.approx(59 / 90)
    assert m["f1_micro"] == pytest.approx(2 / 3)
    assert m["per_class"][NEG] == pytest.approx(
        {"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2}
    )
    assert m["per_class"][NEU] == pytest.approx(
        {"precision": 1.0, "recall": 2 / 3, "f1": 0.8, "support": 3}
    )
    assert m["per_class"][POS] == pytest.approx(
        {"precision": 2 / 3, "recall": 2 / 3, "f1": 2 / 3, "support": 3}
    )
    assert m["invalid_count"] == 1
    assert m["invalid_rate"] == pytest.approx(0.125)
    assert m["predicted_distribution"] == {NEG: 2, NEU: 2, POS: 3, INVALID: 1}
    assert m["confusion"] == {
        "labels": LABELS,
        "columns": LABELS + [INVALID],
        "matrix": [[1, 0, 0, 1], [0, 2, 1, 0], [1, 0, 2, 0]],
    }


@pytest.mark.parametrize(
    ("y_true", "y_pred", "message"),
    [
        ([NEG, NEU, "mixed"], [NEG, NEU, POS], r"y_true\[2\] = 'mixed'"),
        ([NEG, NEU, POS], [NEG, "Positive", POS], r"y_pred\[1\] = 'Positive'"),
        ([NEG, NEU], [NEG], "2 items"),
        ([], [], "zero examples"),
    ],
)
def test_validation_names_the_problem(y_true, y_pred, message) -> None:
    with pytest.raises(ValueError, match=message):
        classification_metrics(y_true, y_pred, LABELS)


def test_bootstrap_contains_point_and_is_deterministic() -> None:
    point = classification_metrics(Y_TRUE * 5, Y_PRED * 5, LABELS)
    for metric in ("accuracy", "f1_weighted", "f1_macro"):
        low, high = bootstrap_ci(Y_TRUE * 5, Y_PRED * 5, LABELS, metric=metric, seed=1)
        assert low <= point[metric] <= high
        assert (low, high) == bootstrap_ci(Y_TRUE * 5, Y_PRED * 5, LABELS, metric=metric, seed=1)
    assert bootstrap_ci(Y_TRUE * 5, Y_PRED * 5, LABELS, seed=1) != bootstrap_ci(
        Y_TRUE * 5, Y_PRED * 5, LABELS, seed=2
    )


def test_bootstrap_narrows_with_n() -> None:
    small = bootstrap_ci(Y_TRUE * 2, Y_PRED * 2, LABELS, metric="f1_weighted")
    large = bootstrap_ci(Y_TRUE * 50, Y_PRED * 50, LABELS, metric="f1_weighted")
    assert large[1] - large[0] < (small[1] - small[0]) / 3


def test_bootstrap_all_correct_is_degenerate() -> None:
    assert bootstrap_ci(Y_TRUE, Y_TRUE, LABELS) == (1.0, 1.0)
    # With 60 examples per class every resample holds every class, so F1 is 1 throughout.
    assert bootstrap_ci(Y_TRUE * 20, Y_TRUE * 20, LABELS, metric="f1_macro") == (1.0, 1.0)


def test_bootstrap_f1_scores_a_missing_class_zero() -> None:
    # Same rule as sklearn with labels= and zero_division=0: a label absent from both
    # y_true and y_pred of a resample has F1 0, so perfect tiny samples can dip below 1.
    # Two examples, two resample outcomes with one class only: macro F1 (1 + 0) / 2.
    low, high = bootstrap_ci([NEG, POS], [NEG, POS], [NEG, POS], metric="f1_macro", seed=0)
    assert (low, high) == (0.5, 1.0)


def test_bootstrap_rejects_unknown_metric() -> None:
    with pytest.raises(ValueError, match="f1_micro"):
        bootstrap_ci(Y_TRUE, Y_PRED, LABELS, metric="f1_micro")


def test_numpy_f1_matches_sklearn_on_random_predictions() -> None:
    # The bootstrap recomputes F1 from confusion counts; it must agree with sklearn,
    # including classes that are never predicted or absent from y_true.
    rng = np.random.default_rng(3)
    labels = ["a", "b", "c", "d"]
    y_true = list(rng.choice(["a", "b", "c"], size=60))
    y_pred = list(rng.choice(["a", "b", "d", INVALID], size=60))
    point = classification_metrics(y_true, y_pred, labels)
    true_idx, pred_idx = _encode(y_true, y_pred, labels)
    for metric in ("accuracy", "f1_weighted", "f1_macro"):
        ours = _resampled_metric(true_idx[None, :], pred_idx[None, :], len(labels), metric)
        assert ours[0] == pytest.approx(point[metric])


def test_bootstrap_f1_is_fast() -> None:
    rng = np.random.default_rng(0)
    y_true = list(rng.choice(LABELS, size=1000))
    y_pred = list(rng.choice(LABELS + [INVALID], size=1000))
    start = time.perf_counter()
    bootstrap_ci(y_true, y_pred, LABELS, metric="f1_weighted", n_boot=1000)
    assert time.perf_counter() - start < 2.0


def test_mcnemar_hand_case() -> None:
    # b = 8 (A only), c = 2 (B only): P(X >= 8 | n=10, p=1/2) = (45 + 10 + 1) / 1024,
    # doubled for two sides -> 112 / 1024 = 0.109375.
    a = [True] * 5 + [True] * 8 + [False] * 2 + [False] * 3
    b = [True] * 5 + [False] * 8 + [True] * 2 + [False] * 3
    assert mcnemar(a, b) == {
        "n": 18,
        "both_correct": 5,
        "a_only": 8,
        "b_only": 2,
        "both_wrong": 3,
        "p_value": pytest.approx(0.109375),
        "test": "mcnemar-exact",
    }


def test_mcnemar_no_discordant_pairs() -> None:
    result = mcnemar([True, False, True], [True, False, True])
    assert (result["a_only"], result["b_only"], result["p_value"]) == (0, 0, 1.0)


def test_mcnemar_rejects_non_bools_and_mismatch() -> None:
    with pytest.raises(ValueError, match=r"correct_b\[1\]"):
        mcnemar([True, True], [True, "False"])
    with pytest.raises(ValueError, match="2 items"):
        mcnemar([True, True], [True])


SARCASM = ["Sarcasm", "Not Sarcasm"]
S, N = SARCASM
# Sarcasm:     tp 1, predicted 1, support 3 -> P 1,   R 1/3, F1 1/2
# Not Sarcasm: tp 2, predicted 3, support 3 -> P 2/3, R 2/3, F1 2/3
# Invalid:     tp 0, predicted 2, support 0 -> 0, 0, 0
# accuracy 3/6
# macro over 3 rows: P (1 + 2/3)/3 = 5/9, R (1/3 + 2/3)/3 = 1/3, F1 (1/2 + 2/3)/3 = 7/18
# weighted (supports 3, 3, 0): P 5/6, R 1/2, F1 (1.5 + 2)/6 = 7/12
TABLE_TRUE = [S, S, S, N, N, N]
TABLE_PRED = [S, INVALID, N, N, N, INVALID]


def test_classification_table_hand_case() -> None:
    rows = classification_table(TABLE_TRUE, TABLE_PRED, SARCASM, invalid_name="Invalid")
    expected = [
        ("Sarcasm", 1.0, 1 / 3, 0.5, 3),
        ("Not Sarcasm", 2 / 3, 2 / 3, 2 / 3, 3),
        ("Invalid", 0.0, 0.0, 0.0, 0),
        ("accuracy", None, None, 0.5, 6),
        ("macro avg", 5 / 9, 1 / 3, 7 / 18, 6),
        ("weighted avg", 5 / 6, 0.5, 7 / 12, 6),
    ]
    got = [(r["name"], r["precision"], r["recall"], r["f1"], r["support"]) for r in rows]
    assert got == [pytest.approx(row) for row in expected]


def test_classification_table_matches_sklearn_report() -> None:
    report = classification_report(
        Y_TRUE, Y_PRED, labels=LABELS + [INVALID], zero_division=0, output_dict=True
    )
    for row in classification_table(Y_TRUE, Y_PRED, LABELS):
        ref = report[row["name"]]
        if row["name"] == "accuracy":
            assert row["f1"] == pytest.approx(ref)
            continue
        assert row["precision"] == pytest.approx(ref["precision"])
        assert row["recall"] == pytest.approx(ref["recall"])
        assert row["f1"] == pytest.approx(ref["f1-score"])


def test_classification_table_rejects_colliding_invalid_name() -> None:
    with pytest.raises(ValueError, match="collides"):
        classification_table(TABLE_TRUE, TABLE_PRED, SARCASM, invalid_name="Sarcasm")


def test_format_table() -> None:
    text = format_table(classification_table(TABLE_TRUE, TABLE_PRED, SARCASM))
    lines = text.splitlines()
    assert lines[0] == "| class | precision | recall | f1-score | support |"
    assert lines[2] == "| Sarcasm | 1.00 | 0.33 | 0.50 | 3 |"
    assert lines[4] == "| INVALID | 0.00 | 0.00 | 0.00 | 0 |"
    assert lines[5] == "| accuracy |  |  | 0.50 | 6 |"
    assert lines[6] == "| macro avg | 0.56 | 0.33 | 0.39 | 6 |"
    assert lines[7] == "| weighted avg | 0.83 | 0.50 | 0.58 | 6 |"


def test_bca_degenerate_and_deterministic() -> None:
    assert bootstrap_ci(Y_TRUE, Y_TRUE, LABELS, method="bca") == (1.0, 1.0)
    a = bootstrap_ci(Y_TRUE * 5, Y_PRED * 5, LABELS, "f1_weighted", seed=1, method="bca")
    assert a == bootstrap_ci(Y_TRUE * 5, Y_PRED * 5, LABELS, "f1_weighted", seed=1, method="bca")
    with pytest.raises(ValueError, match="method must be one of"):
        bootstrap_ci(Y_TRUE, Y_PRED, LABELS, method="normal")


def test_bca_matches_scipy_within_monte_carlo_error() -> None:
    """Our BCa (ties counted half in z0) against scipy.stats.bootstrap's on weighted F1 of a
    skewed case; endpoints from 4000 resamples each agree to about 0.02."""
    from scipy.stats import bootstrap

    rng = np.random.default_rng(3)
    y_true = list(rng.choice(LABELS, size=80, p=[0.6, 0.3, 0.1]))
    y_pred = [t if rng.random() < 0.8 else LABELS[0] for t in y_true]
    t, p = _encode(y_true, y_pred, LABELS)
    ref = bootstrap((t, p), lambda a, b, axis=-1: _resampled_metric(a, b, 3, "f1_weighted"),
                    paired=True, vectorized=True, n_resamples=4000, method="BCa",
                    random_state=0).confidence_interval
    low, high = bootstrap_ci(y_true, y_pred, LABELS, "f1_weighted", n_boot=4000, method="bca")
    assert low == pytest.approx(ref.low, abs=0.02) and high == pytest.approx(ref.high, abs=0.02)


def test_paired_difference_uses_the_same_resamples() -> None:
    y_true = Y_TRUE * 10
    better = list(y_true[:-6]) + list(Y_PRED * 10)[-6:]
    for method in ("percentile", "bca"):
        d = paired_bootstrap_diff(y_true, better, Y_PRED * 10, LABELS, n_boot=500, method=method)
        point = (classification_metrics(y_true, better, LABELS)["f1_weighted"]
                 - classification_metrics(y_true, Y_PRED * 10, LABELS)["f1_weighted"])
        assert d["diff"] == pytest.approx(point)
        assert 0 < d["low"] <= d["diff"] <= d["high"]
    # A system against itself: every paired resample differs by exactly 0.
    assert paired_bootstrap_diff(y_true, better, better, LABELS, n_boot=50, method="bca") == {
        "diff": 0.0, "low": 0.0, "high": 0.0}
