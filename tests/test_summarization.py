"""Summarization metrics against hand-computed ROUGE values, multi-reference max, empty
predictions, bootstrap summaries, box plots and (slow) BERTScore with the local MiniLM."""

import math

import pytest

from tests.fixtures import minilm_dir
from tunebench.evaluation.summarization import (
    REFERENCE_COMBINATION,
    bertscore_f1,
    plot_boxplots,
    rouge_scores,
    summarization_metrics,
    summary_stats,
)


def test_identical_and_disjoint():
    same, disjoint = rouge_scores(["the cat sat", "the cat sat"],
                                  [["the cat sat"], ["dogs bark loudly"]])
    assert same == {"rouge1": 1.0, "rouge2": 1.0, "rougeL": 1.0}
    assert disjoint == {"rouge1": 0.0, "rouge2": 0.0, "rougeL": 0.0}


def test_hand_counted_overlap():
    # prediction: the cat sat (3 tokens); reference: the cat lay on the mat (6 tokens).
    # unigrams in common (clipped counts): the, cat -> 2; P = 2/3, R = 2/6, F = 4/9.
    # bigrams: "the cat" of 2 and 5 -> P = 1/2, R = 1/5, F = 2/7. LCS "the cat" = ROUGE-1 here.
    (row,) = rouge_scores(["the cat sat"], [["the cat lay on the mat"]])
    assert row["rouge1"] == pytest.approx(4 / 9)
    assert row["rouge2"] == pytest.approx(2 / 7)
    assert row["rougeL"] == pytest.approx(4 / 9)


def test_stemming_is_on():
    (row,) = rouge_scores(["running dogs"], [["runs dog"]])
    assert row["rouge1"] == 1.0  # run/run, dog/dog after Porter stemming


def test_multi_reference_takes_the_best_reference_per_metric():
    refs = [["dogs bark", "the cat sat on the mat", "the cat sat"]]
    (row,) = rouge_scores(["the cat sat"], refs)
    assert row == {"rouge1": 1.0, "rouge2": 1.0, "rougeL": 1.0}
    # Per metric independently: the reversed reference wins ROUGE-1 (4 of 4 unigrams), the
    # other ROUGE-2 (bigram "a b" of 3 and 3: 1/3) and ROUGE-L (LCS "a b": 2/4).
    (row,) = rouge_scores(["a b c d"], [["d c b a", "a b x y"]])
    assert row == pytest.approx({"rouge1": 1.0, "rouge2": 1 / 3, "rougeL": 0.5})
    assert "max over references" in REFERENCE_COMBINATION


@pytest.mark.parametrize("empty", ["", "   \n"])
def test_empty_prediction_scores_zero(empty):
    assert rouge_scores([empty], [["the cat sat"]]) == [dict.fromkeys(
        ("rouge1", "rouge2", "rougeL"), 0.0)]


@pytest.mark.parametrize("refs, message", [
    ([["x"], ["y"]], "1 predictions but 2"), ([[]], "non-empty list"), (["abc"], "non-empty list"),
    ([[""]], "non-empty strings"),
])
def test_bad_references_are_rejected(refs, message):
    with pytest.raises(ValueError, match=message):
        rouge_scores(["x"], refs)


def test_summary_stats_known_values_and_seed():
    values = [0.0, 0.5, 1.0, 0.25]
    stats = summary_stats(values, n_boot=500, seed=3)
    assert stats["n"] == 4 and stats["mean"] == pytest.approx(0.4375)
    assert stats["median"] == pytest.approx(0.375)
    assert 0.0 <= stats["ci95_low"] <= stats["mean"] <= stats["ci95_high"] <= 1.0
    assert summary_stats(values, n_boot=500, seed=3) == stats
    spread = [i / 37 for i in range(37)]  # enough distinct values for the seed to matter
    assert summary_stats(spread, 200, seed=4) != summary_stats(spread, 200, seed=5)
    constant = summary_stats([0.7] * 10, n_boot=50, seed=0)
    assert math.isclose(constant["ci95_low"], 0.7) and math.isclose(constant["ci95_high"], 0.7)
    with pytest.raises(ValueError, match="zero values"):
        summary_stats([], n_boot=10, seed=0)


def test_boxplots_png_is_stable(tmp_path):
    per_system = {"base": {"rouge1": [0.1, 0.2, 0.3], "bertscore_f1": [0.5, 0.6, 0.7]},
                  "tuned": {"rouge1": [0.3, 0.4, 0.5], "bertscore_f1": [0.6, 0.7, 0.9]}}
    first = plot_boxplots(per_system, tmp_path / "a" / "box.png").read_bytes()
    second = plot_boxplots(per_system, tmp_path / "b.png").read_bytes()
    assert first[:8] == b"\x89PNG\r\n\x1a\n" and first == second
    with pytest.raises(ValueError, match="expected"):
        plot_boxplots({"base": {"rouge1": [0.1]}, "tuned": {"rouge2": [0.1]}}, tmp_path / "c.png")


@pytest.mark.slow
def test_bertscore_with_local_minilm():
    preds = ["The cat sat on the mat.", "", "Stocks fell sharply."]
    refs = [["The cat sat on the mat."], ["Anything at all."],
            ["Shares dropped a lot.", "Stocks fell sharply today.", "Rain in Spain."]]
    scores = bertscore_f1(preds, refs, minilm_dir(), num_layers=6, batch_size=8)
    assert scores[0] == pytest.approx(1.0, abs=1e-4)
    assert scores[1] == 0.0
    alone = bertscore_f1(preds[2:], [refs[2][2:]], minilm_dir(), num_layers=6)[0]
    assert 0.0 < alone < scores[2] < 1.0  # the best of the three references is kept
    report = summarization_metrics(preds, refs, minilm_dir(), 6, n_boot=100, seed=0)
    assert report["n"] == 3 and report["n_empty"] == 1 and report["n_references"] == [1, 1, 3]
    assert report["bertscore"]["num_layers"] == 6
    assert report["per_example"][1] == dict.fromkeys(
        ("rouge1", "rouge2", "rougeL", "bertscore_f1"), 0.0)
    assert report["stats"]["bertscore_f1"]["mean"] == pytest.approx(sum(scores) / 3)
