"""Unit tests for tunebench.evaluation.parsing: every case is a literal answer and its expected
label."""

import pytest

from tunebench.evaluation.parsing import (
    INVALID,
    PARSERS,
    get_parser,
    parse,
    register_parser,
    strict,
)

SENTIMENT = ["negative", "neutral", "positive"]
SARCASM = ["Sarcasm", "Not Sarcasm"]
BIAS = ["biased", "unbiased"]


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Positive.", "positive"),
        ("positive", "positive"),
        (" NEGATIVE \n", "negative"),
        ("**Neutral**", "neutral"),
        ('"positive"', "positive"),
        ("Answer: Negative", "negative"),
        ("**Sentiment:** neutral.", "neutral"),
        ("The sentiment of this news is positive.", "positive"),
        ("I'd say positive, clearly positive!", "positive"),
        # The first line decides even if the explanation mentions another label.
        ("neutral\nReason: the news is not negative", "neutral"),
        ("not positive", INVALID),
        ("It isn't positive at all", INVALID),
        ("never negative", INVALID),
        ("positive or negative", INVALID),
        ("positive/neutral", INVALID),
        ("non-positive", INVALID),
        ("positively charged", INVALID),  # whole words only
        ("", INVALID),
        ("   ", INVALID),
        ("\n\n", INVALID),
        ("2", INVALID),
        ("I cannot tell.", INVALID),
    ],
)
def test_strict_sentiment(raw: str, expected: str) -> None:
    assert strict(raw, SENTIMENT) == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Sarcasm", "Sarcasm"),
        ("Not Sarcasm", "Not Sarcasm"),
        ("Category: Not Sarcasm", "Not Sarcasm"),
        ("not sarcasm.", "Not Sarcasm"),
        ("This tweet is sarcasm.", "Sarcasm"),
        ("I think this tweet is not sarcasm", "Not Sarcasm"),
        ("The tweet is\nnot   sarcasm", "Not Sarcasm"),  # phrase split across lines
        ("Sarcasm or Not Sarcasm", INVALID),
        ("The tweet is sarcastic", INVALID),
    ],
)
def test_strict_sarcasm_longer_label_wins(raw: str, expected: str) -> None:
    assert strict(raw, SARCASM) == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("unbiased", "unbiased"),
        ("Biased", "biased"),
        ("The statement is unbiased.", "unbiased"),
        ("The statement is biased.", "biased"),
        ("The statement is not biased.", INVALID),
        ("un-biased", INVALID),
    ],
)
def test_strict_bias_whole_words(raw: str, expected: str) -> None:
    assert strict(raw, BIAS) == expected


def test_strict_returns_label_as_spelled_in_labels() -> None:
    assert strict("the news is POSITIVE", ["Negative", "Neutral", "Positive"]) == "Positive"


def test_strict_rejects_bad_label_lists() -> None:
    with pytest.raises(ValueError):
        strict("positive", [])
    with pytest.raises(ValueError):
        strict("positive", ["positive", "Positive"])
    with pytest.raises(ValueError):
        strict("positive", ["positive", INVALID])


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Positive.", "positive"),
        ("negative", "negative"),
        ("not positive", "positive"),  # the lenient published rule, kept on purpose
        ("positive or negative", "positive"),
        ("", "neutral"),  # their silent default
        ("2", "neutral"),
        ("POSITIVE", "neutral"),  # their code checks only "positive"/"Positive"
    ],
)
def test_fingpt_reproduces_published_rule(raw: str, expected: str) -> None:
    assert parse("fingpt", raw, SENTIMENT) == expected


def test_fingpt_only_for_sentiment_labels() -> None:
    with pytest.raises(ValueError, match="fingpt"):
        parse("fingpt", "Sarcasm", SARCASM)


def test_registry() -> None:
    assert {"strict", "fingpt"} <= set(PARSERS)
    assert get_parser("strict") is strict
    assert parse("strict", "Neutral", SENTIMENT) == "neutral"
    with pytest.raises(ValueError, match="fingpt") as err:
        get_parser("lenient")
    assert "strict" in str(err.value)
    with pytest.raises(ValueError, match="already registered"):
        register_parser("strict")(strict)
