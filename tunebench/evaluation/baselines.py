"""Non-LLM reference points: the majority class and TF-IDF + logistic regression for
classification; the lead (first sentences of the source) for summarization.

They answer "is the LLM beating something trivial?" and never produce INVALID. They are
trained on the same examples the LLM was fine-tuned on (the ids of the instructions train
split) and predict the same test ids, so their rows drop into the prediction table beside
the LLMs' (raw = parsed = the predicted label).
"""

from __future__ import annotations

import re
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields

import numpy as np

from tunebench.config import closest
from tunebench.io import DataError
from tunebench.models.generate import prompt_sha256  # the one hash the predict stages use too


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
    C: float = 1.0  # used when cv_folds is 0
    # > 0: choose C from `Cs` by stratified cross-validation on the TRAINING examples only
    # (fixed C=1 over-regularizes unit-norm TF-IDF vectors on ~100 examples and collapses to
    # the majority class; tuning C on the test set would flatter the baseline).
    cv_folds: int = 3
    Cs: tuple[float, ...] = (0.1, 1.0, 10.0, 100.0)
    max_iter: int = 1000  # lbfgs default of 100 stops short on sparse bigram features
    class_weight: str | None = None  # "balanced" for skewed tasks such as HR bias
    seed: int = 0

    @classmethod
    def from_params(cls, params: Mapping[str, object]) -> TfidfLogregConfig:
        """Build from a params mapping; unknown keys are an error, never ignored."""
        known = [f.name for f in fields(cls)]
        for key in params:
            if key not in known:
                hint = closest(key, known) or f"; known keys: {known}"
                raise ValueError(f"unknown TfidfLogregConfig key {key!r}{hint}")
        values = dict(params)
        for key in ("ngram_range", "Cs"):  # YAML has no tuples; scikit-learn wants one.
            if key in values:
                values[key] = tuple(values[key])  # type: ignore[arg-type]
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
    from sklearn.linear_model import LogisticRegression, LogisticRegressionCV
    from sklearn.model_selection import StratifiedKFold
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
        _classifier(cfg, train_labels, LogisticRegression, LogisticRegressionCV, StratifiedKFold),
    )
    start = time.perf_counter()
    model.fit(list(train_texts), list(train_labels))
    chosen_c = float(np.ravel(getattr(model[-1], "C_", cfg.C))[0])
    fitted = time.perf_counter()
    predictions = [str(label) for label in model.predict(list(test_texts))]
    return {
        "C": chosen_c,
        "predictions": predictions,
        "fit_seconds": fitted - start,
        "predict_seconds": time.perf_counter() - fitted,
    }


def join_texts(rows: Sequence[Mapping], frame, where: str) -> list[str]:
    """Input texts for instruction rows, looked up by id in a labeled split (a DataFrame
    with id, text, label). Every id must be there with the row's completion as its label."""
    if not frame["id"].is_unique:
        dup = frame["id"][frame["id"].duplicated()].iloc[0]
        raise DataError(f"{where}: duplicate id {dup!r}")
    by_id = dict(zip(frame["id"], zip(frame["text"], frame["label"], strict=True), strict=True))
    texts = []
    for row in rows:
        if row["id"] not in by_id:
            raise DataError(f"{where}: id {row['id']!r} from the instructions is missing")
        text, label = by_id[row["id"]]
        if label != row["completion"]:
            raise DataError(f"{where}: id {row['id']!r} has label {label!r} but the "
                            f"instructions completion is {row['completion']!r}")
        texts.append(str(text))
    return texts


def prediction_rows(test_rows: Sequence[Mapping], predicted: Sequence[str]) -> list[dict]:
    """Rows in the shared prediction schema: {id, prompt_sha256, raw, parsed, target}."""
    return [
        {"id": row["id"], "prompt_sha256": prompt_sha256(row["prompt"]), "raw": label,
         "parsed": label, "target": row["completion"]}
        for row, label in zip(test_rows, predicted, strict=True)
    ]


def _meta(system: str, n: int, n_train: int, fit_s: float, predict_s: float, **extra) -> dict:
    seconds = fit_s + predict_s
    return {"system": system, "kind": "baseline", "model": None, "n": n, "n_train": n_train,
            "fit_seconds": fit_s, "predict_seconds": predict_s, "seconds": seconds,
            # None rather than inf when the clock did not tick (JSON has no infinity).
            "examples_per_s": n / seconds if seconds > 0 else None, **extra}


_SEGMENT = re.compile(r"(?<=[.!?])\s+|\n+")


def lead(text: str, sentences: int) -> str:
    """The first `sentences` sentences of a text, a line counting as at least one (dialogue
    turns, XSum's one-sentence paragraphs): the classic LEAD summarization baseline."""
    if sentences < 1:
        raise ValueError(f"sentences must be >= 1, got {sentences}")
    parts = [part.strip() for part in _SEGMENT.split(text.strip()) if part.strip()]
    return " ".join(parts[:sentences])


def run_lead(test_rows: Sequence[Mapping], test_texts: Sequence[str],
             sentences: int) -> dict[str, tuple[list[dict], dict]]:
    """{"lead": (prediction rows, meta)}: the summary is the source's lead."""
    start = time.perf_counter()
    summaries = [lead(text, sentences) for text in test_texts]
    elapsed = time.perf_counter() - start
    return {"lead": (prediction_rows(test_rows, summaries),
                     _meta("lead", len(test_rows), 0, 0.0, elapsed, sentences=sentences))}


def _normalized(text: str) -> str:
    return " ".join(text.lower().split())


def drop_test_texts(texts: Sequence[str], labels: Sequence[str],
                    test_texts: Sequence[str]) -> tuple[list[str], list[str], int]:
    """Training texts and labels without those whose text (case- and space-normalised) is
    also a test text, so a floor fitted on a whole split is not flattered by leakage.
    Returns ``(texts, labels, number dropped)``."""
    seen = {_normalized(text) for text in test_texts}
    kept = [(t, lab) for t, lab in zip(texts, labels, strict=True) if _normalized(t) not in seen]
    return [t for t, _ in kept], [lab for _, lab in kept], len(texts) - len(kept)


def run_strong_floor(full_texts: Sequence[str], full_labels: Sequence[str],
                     test_rows: Sequence[Mapping], test_texts: Sequence[str],
                     cfg: TfidfLogregConfig) -> dict[str, tuple[list[dict], dict]]:
    """{"tfidf_full": ...}: TF-IDF + LR fitted on the whole labeled training split, not only
    the examples the LLM was tuned on (the strong floor). Training texts equal to a test
    text are left out and counted in the meta (``n_train_dropped_test_overlap``)."""
    texts, labels, dropped = drop_test_texts(full_texts, full_labels, test_texts)
    fitted = tfidf_logreg(texts, labels, test_texts, cfg)
    meta = _meta("tfidf_full", len(test_rows), len(texts), fitted["fit_seconds"],
                 fitted["predict_seconds"], config=asdict(cfg), chosen_C=fitted["C"],
                 n_train_dropped_test_overlap=dropped)
    return {"tfidf_full": (prediction_rows(test_rows, fitted["predictions"]), meta)}


def run_baselines(
    train_rows: Sequence[Mapping], train_texts: Sequence[str],
    test_rows: Sequence[Mapping], test_texts: Sequence[str], cfg: TfidfLogregConfig,
) -> dict[str, tuple[list[dict], dict]]:
    """Both weak floors on instruction rows (labels = completions) and their joined texts.

    Returns ``{system: (prediction rows, meta)}`` for "majority" and "tfidf_logreg".
    """
    labels = [row["completion"] for row in train_rows]
    n, n_train = len(test_rows), len(train_rows)
    start = time.perf_counter()
    label, predicted = majority_class(labels, n)
    elapsed = time.perf_counter() - start
    out = {"majority": (prediction_rows(test_rows, predicted),
                        _meta("majority", n, n_train, elapsed, 0.0, majority_label=label))}
    fitted = tfidf_logreg(train_texts, labels, test_texts, cfg)
    out["tfidf_logreg"] = (
        prediction_rows(test_rows, fitted["predictions"]),
        _meta("tfidf_logreg", n, n_train, fitted["fit_seconds"], fitted["predict_seconds"],
              config=asdict(cfg), chosen_C=fitted["C"]),
    )
    return out


def _classifier(cfg: TfidfLogregConfig, train_labels, plain, with_cv, folds):
    """Fixed-C logistic regression, or one whose C is cross-validated on the training set
    (folds capped by the rarest class so every fold sees every label)."""
    common = {"max_iter": cfg.max_iter, "class_weight": cfg.class_weight,
              "random_state": cfg.seed}
    n_folds = min(cfg.cv_folds, min(Counter(train_labels).values()))
    if n_folds < 2:
        return plain(C=cfg.C, **common)
    splitter = folds(n_splits=n_folds, shuffle=True, random_state=cfg.seed)
    # Explicit l1_ratios/scoring: plain L2 chosen by accuracy (silences sklearn 1.9's
    # warnings about changing defaults).
    return with_cv(Cs=list(cfg.Cs), cv=splitter, l1_ratios=(0.0,), scoring="accuracy",
                   use_legacy_attributes=False, **common)


# params `baselines`, checked as the baselines stage (and tunebench.running.profile) reads them.
def baseline_config(params: dict) -> TfidfLogregConfig:
    from tunebench.config import ConfigError, check_keys
    from tunebench.running.params import section

    cfg = section(params, "baselines")
    check_keys(cfg, ("tfidf_logreg", "lead"), "params.yaml: baselines")
    try:
        return TfidfLogregConfig.from_params(cfg.get("tfidf_logreg") or {})
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"params.yaml: baselines.tfidf_logreg: {exc}") from None


def lead_sentences(params: dict) -> int:
    from tunebench.config import ConfigError, check_keys
    from tunebench.running.params import section

    cfg = section(params, "baselines").get("lead") or {}
    check_keys(cfg, ("sentences",), "params.yaml: baselines.lead", ("sentences",))
    n = cfg["sentences"]
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ConfigError(f"params.yaml: baselines.lead.sentences: expected an int >= 1, "
                          f"got {n!r}")
    return n
