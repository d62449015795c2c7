"""Non-LLM reference points: the majority class and TF-IDF + logistic regression.

They answer "is the LLM beating something trivial?" and never produce INVALID.
"""

from __future__ import annotations

import difflib
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields


def majority_class(train_labels: Sequence[str], n_test: int) -> tuple[str, list[str]]:
    """Predict the most frequent training label for all ``n_test`` examples.

    Ties go to the label that sorts first (``sorted`` order of the strings), so the
    result does not depend on the order of the training set.
    Returns ``(label, [label] * n_test)``.
    """
    if not train_labels:
        raise ValueError("train_labels is empty; there is no majority class")
    if n_test < 0:
        raise ValueError(f"n_test must be >= 0; got {n_test}")
    counts = Counter(train_labels)
    top = max(counts.values())
    label = min(label for label, count in counts.items() if count == top)
    return label, [label] * n_test


@dataclass
class TfidfLogregConfig:
    """Settings for :func:`tfidf_logreg` (the ``baseline`` section of params.yaml)."""

    ngram_range: tuple[int, int] = (1, 2)  # bigrams catch "not good"-style phrases
    min_df: int = 1
    max_features: int | None = 50_000  # caps memory on the larger sentiment sets
    C: float = 1.0
    max_iter: int = 1000  # lbfgs default of 100 stops short on sparse bigram features
    class_weight: str | None = None  # "balanced" for skewed tasks such as HR bias
    seed: int = 0

    @classmethod
    def from_params(cls, params: Mapping[str, object]) -> TfidfLogregConfig:
        """Build from a params mapping; unknown keys are an error, never ignored."""
        known = [f.name for f in fields(cls)]
        for key in params:
            if key not in known:
                close = difflib.get_close_matches(key, known, n=1)
                hint = f"; did you mean {close[0]!r}?" if close else f"; known keys: {known}"
                raise ValueError(f"unknown TfidfLogregConfig key {key!r}{hint}")
        values = dict(params)
        if "ngram_range" in values:
            # YAML has no tuples; scikit-learn wants one.
            values["ngram_range"] = tuple(values["ngram_range"])  # type: ignore[arg-type]
        return cls(**values)  # type: ignore[arg-type]


def tfidf_logreg(
    train_texts: Sequence[str],
    train_labels: Sequence[str],
    test_texts: Sequence[str],
    cfg: TfidfLogregConfig,
) -> dict:
    """Fit TF-IDF + logistic regression on the training split and label the test texts.

    Deterministic for a given ``cfg.seed`` (single-threaded lbfgs, seeded estimator).
    Returns ``{"predictions": list[str], "fit_seconds": float, "predict_seconds": float}``.
    """
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    if len(train_texts) != len(train_labels):
        raise ValueError(
            f"train_texts has {len(train_texts)} items but train_labels has {len(train_labels)}"
        )
    if len(set(train_labels)) < 2:
        raise ValueError("tfidf_logreg needs at least two distinct training labels")
    model = make_pipeline(
        TfidfVectorizer(
            ngram_range=tuple(cfg.ngram_range), min_df=cfg.min_df, max_features=cfg.max_features
        ),
        LogisticRegression(
            C=cfg.C, max_iter=cfg.max_iter, class_weight=cfg.class_weight, random_state=cfg.seed
        ),
    )
    start = time.perf_counter()
    model.fit(list(train_texts), list(train_labels))
    fitted = time.perf_counter()
    predictions = [str(label) for label in model.predict(list(test_texts))]
    return {
        "predictions": predictions,
        "fit_seconds": fitted - start,
        "predict_seconds": time.perf_counter() - fitted,
    }
