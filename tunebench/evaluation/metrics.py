"""Scores for parsed predictions: point metrics, bootstrap intervals, paired tests, tables.

Every function takes ``y_true`` (canonical labels), ``y_pred`` (canonical labels or
:data:`~tunebench.evaluation.parsing.INVALID`) and ``labels`` (the task's ordered label list).

How INVALID is scored: it is never a correct prediction and never a class of its own
in the headline numbers. An INVALID answer to a true-``k`` example counts as a false
negative of ``k`` (lowering ``k``'s recall) and as a false positive of no label. So
accuracy counts it wrong; per-class and macro/weighted F1 come from scikit-learn with
``labels=labels`` (INVALID left out of the label list) and ``zero_division=0``. Micro
F1 under that rule differs from accuracy: its precision divides by the valid answers
only, its recall by all examples. :func:`classification_table` is the one exception:
it reproduces the published form where INVALID is an extra row.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np
from sklearn.metrics import precision_recall_fscore_support

from tunebench.evaluation.parsing import INVALID

BOOTSTRAP_METRICS = ("accuracy", "f1_weighted", "f1_macro")
# Resamples per chunk are bounded so that chunk * n stays near this many cells in memory.
_BOOTSTRAP_CELLS = 2_000_000


def _encode(y_true: Sequence[str], y_pred: Sequence[str], labels: Sequence[str]):
    """Check inputs and return (true_idx, pred_idx); INVALID predictions get index k."""
    if len(labels) == 0 or len(set(labels)) != len(labels) or INVALID in labels:
        raise ValueError(f"labels must be distinct, non-empty and exclude {INVALID!r}: {labels}")
    if len(y_true) != len(y_pred):
        raise ValueError(f"y_true has {len(y_true)} items but y_pred has {len(y_pred)}")
    if len(y_true) == 0:
        raise ValueError("cannot score zero examples")
    index = {label: i for i, label in enumerate(labels)}
    for i, value in enumerate(y_true):
        if value not in index:
            raise ValueError(f"y_true[{i}] = {value!r} is not one of the labels {list(labels)}")
    pred_index = {**index, INVALID: len(labels)}
    for i, value in enumerate(y_pred):
        if value not in pred_index:
            raise ValueError(f"y_pred[{i}] = {value!r} is neither a label nor {INVALID!r}")
    true_idx = np.fromiter((index[v] for v in y_true), dtype=np.int64, count=len(y_true))
    pred_idx = np.fromiter((pred_index[v] for v in y_pred), dtype=np.int64, count=len(y_pred))
    return true_idx, pred_idx


def _confusion(true_idx: np.ndarray, pred_idx: np.ndarray, k: int) -> np.ndarray:
    """Counts of shape (..., k, k + 1): rows true label, columns label or INVALID (last)."""
    cells = true_idx * (k + 1) + pred_idx
    lead = cells.shape[:-1]
    # Offset each resample into its own block so one bincount counts them all at once.
    offsets = np.arange(int(np.prod(lead, dtype=np.int64))).reshape(lead + (1,)) * (k * (k + 1))
    counts = np.bincount((cells + offsets).ravel(), minlength=offsets.size * k * (k + 1))
    return counts.reshape(lead + (k, k + 1))


def _f1_from_confusion(conf: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-class F1 and support from confusion counts; matches sklearn's zero_division=0."""
    k = conf.shape[-2]
    tp = np.diagonal(conf[..., :k], axis1=-2, axis2=-1)
    support = conf.sum(axis=-1)
    predicted = conf[..., :k].sum(axis=-2)
    # F1 = 2tp / (2tp + fp + fn) = 2tp / (predicted + support); 0 when both are 0.
    denom = predicted + support
    f1 = np.divide(2.0 * tp, denom, out=np.zeros(tp.shape), where=denom > 0)
    return f1, support


def classification_metrics(
    y_true: Sequence[str], y_pred: Sequence[str], labels: Sequence[str]
) -> dict:
    """Point metrics for one set of predictions; INVALID scored as in the module docstring.

    Returns ``{n, accuracy, f1_weighted, f1_macro, f1_micro, per_class, invalid_count,
    invalid_rate, predicted_distribution, confusion}`` where ``per_class[label]`` is
    ``{precision, recall, f1, support}``, ``predicted_distribution`` counts every label
    and INVALID (zeros included), and ``confusion`` is ``{"labels": rows (true labels),
    "columns": labels + [INVALID], "matrix": list of rows of ints}``.
    """
    true_idx, pred_idx = _encode(y_true, y_pred, labels)
    labels = list(labels)
    n = len(true_idx)
    prec, rec, f1, support = precision_recall_fscore_support(
        y_true, y_pred, labels=labels, zero_division=0
    )

    def averaged(average: str) -> float:
        return float(
            precision_recall_fscore_support(
                y_true, y_pred, labels=labels, average=average, zero_division=0
            )[2]
        )

    invalid_count = int(np.sum(pred_idx == len(labels)))
    counts = Counter(y_pred)
    return {
        "n": n,
        "accuracy": float(np.mean(true_idx == pred_idx)),
        "f1_weighted": averaged("weighted"),
        "f1_macro": averaged("macro"),
        "f1_micro": averaged("micro"),
        "per_class": {
            label: {
                "precision": float(prec[i]),
                "recall": float(rec[i]),
                "f1": float(f1[i]),
                "support": int(support[i]),
            }
            for i, label in enumerate(labels)
        },
        "invalid_count": invalid_count,
        "invalid_rate": invalid_count / n,
        "predicted_distribution": {label: counts.get(label, 0) for label in labels + [INVALID]},
        "confusion": {
            "labels": labels,
            "columns": labels + [INVALID],
            "matrix": _confusion(true_idx, pred_idx, len(labels)).tolist(),
        },
    }


def _resampled_metric(
    true_idx: np.ndarray, pred_idx: np.ndarray, k: int, metric: str
) -> np.ndarray:
    """``metric`` for each row of index arrays of shape (n_resamples, n)."""
    if metric == "accuracy":
        return (true_idx == pred_idx).mean(axis=-1)
    f1, support = _f1_from_confusion(_confusion(true_idx, pred_idx, k))
    if metric == "f1_macro":
        return f1.mean(axis=-1)
    return (f1 * support).sum(axis=-1) / support.sum(axis=-1)


CI_METHODS = ("bca", "percentile")


def _resample_rows(n: int, n_boot: int, seed: int):
    """Bootstrap index rows in chunks of shape (m, n), drawn from default_rng(seed): the same
    seed gives the same resampled examples for every system (paired resamples)."""
    rng = np.random.default_rng(seed)
    chunk = max(1, _BOOTSTRAP_CELLS // n)
    for start in range(0, n_boot, chunk):
        yield rng.integers(0, n, size=(min(chunk, n_boot - start), n))


def _jackknife_rows(n: int):
    """Leave-one-out index rows in chunks of shape (m, n - 1); row i leaves out example i."""
    full = np.arange(n)
    chunk = max(1, _BOOTSTRAP_CELLS // max(n - 1, 1))
    for start in range(0, n, chunk):
        drop = np.arange(start, min(n, start + chunk))
        keep = full[None, :] != drop[:, None]
        yield np.broadcast_to(full, keep.shape)[keep].reshape(len(drop), n - 1)


def bootstrap_interval(statistic, n: int, n_boot: int = 1000, alpha: float = 0.05,
                       seed: int = 0, method: str = "percentile") -> tuple[float, float]:
    """``(low, high)`` of ``statistic`` over examples 0..n-1, by percentile or BCa bootstrap.

    ``statistic(rows)`` maps index rows of shape (m, k) to m values. Both methods read the same
    resamples (:func:`_resample_rows`). BCa (Efron 1987) shifts the percentiles by a bias
    correction z0, from the share of resampled values below the point estimate (ties count
    half: accuracy and F1 on ~100 examples take few distinct values, and scipy's strict ``<``
    then biases z0 down), and an acceleration a from the jackknife's skewness. The share is
    kept within [1/(2B), 1 - 1/(2B)] so a point estimate outside every resample still gives a
    finite interval (the extreme resample).
    """
    if method not in CI_METHODS:
        raise ValueError(f"method must be one of {CI_METHODS}; got {method!r}")
    if n_boot < 1 or not 0.0 < alpha < 1.0:
        raise ValueError(f"need n_boot >= 1 and 0 < alpha < 1; got {n_boot=}, {alpha=}")
    boot = np.concatenate([statistic(rows) for rows in _resample_rows(n, n_boot, seed)])
    levels = np.array([alpha / 2, 1 - alpha / 2])
    if method == "bca":
        from scipy.special import ndtr, ndtri

        point = float(statistic(np.arange(n)[None, :])[0])
        tied = np.abs(boot - point) <= 1e-12
        share = (np.sum((boot < point) & ~tied) + 0.5 * np.sum(tied)) / len(boot)
        z0 = ndtri(np.clip(share, 0.5 / len(boot), 1 - 0.5 / len(boot)))
        accel = 0.0
        if n > 2:
            jack = np.concatenate([statistic(rows) for rows in _jackknife_rows(n)])
            dev = jack.mean() - jack
            denom = 6.0 * float(np.sum(dev**2)) ** 1.5
            accel = float(np.sum(dev**3)) / denom if denom > 0 else 0.0
        z = ndtri(levels)
        levels = ndtr(z0 + (z0 + z) / (1 - accel * (z0 + z)))
    low, high = np.quantile(boot, levels)
    return float(low), float(high)


def bootstrap_ci(
    y_true: Sequence[str],
    y_pred: Sequence[str],
    labels: Sequence[str],
    metric: str = "accuracy",
    n_boot: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
    method: str = "percentile",
) -> tuple[float, float]:
    """Bootstrap ``(low, high)`` for ``metric``, resampling examples (``method``: percentile
    or bca, see :func:`bootstrap_interval`).

    ``metric`` is one of :data:`BOOTSTRAP_METRICS`, scored like
    :func:`classification_metrics` (F1 recomputed from confusion counts in numpy so that
    1000 resamples stay fast). Resamples come from ``numpy.random.default_rng(seed)``,
    so the interval is a pure function of the inputs and the seed. As in sklearn with
    ``labels=`` and ``zero_division=0``, a label missing from a resample (in both y_true
    and y_pred) has F1 0 there; this only matters when a class has a handful of examples.
    """
    if metric not in BOOTSTRAP_METRICS:
        raise ValueError(f"metric must be one of {BOOTSTRAP_METRICS}; got {metric!r}")
    true_idx, pred_idx = _encode(y_true, y_pred, labels)
    k = len(labels)
    return bootstrap_interval(
        lambda rows: _resampled_metric(true_idx[rows], pred_idx[rows], k, metric),
        len(true_idx), n_boot, alpha, seed, method)


def paired_bootstrap_diff(
    y_true: Sequence[str],
    pred_a: Sequence[str],
    pred_b: Sequence[str],
    labels: Sequence[str],
    metric: str = "f1_weighted",
    n_boot: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
    method: str = "percentile",
) -> dict:
    """``metric(a) - metric(b)`` on the same examples, with a paired bootstrap interval: each
    resample draws one set of example ids and scores both systems on it (the ids of
    :func:`bootstrap_ci` with the same seed). Returns ``{"diff", "low", "high"}``."""
    if metric not in BOOTSTRAP_METRICS:
        raise ValueError(f"metric must be one of {BOOTSTRAP_METRICS}; got {metric!r}")
    true_idx, a_idx = _encode(y_true, pred_a, labels)
    _, b_idx = _encode(y_true, pred_b, labels)
    k = len(labels)

    def diff(rows: np.ndarray) -> np.ndarray:
        truth = true_idx[rows]
        return (_resampled_metric(truth, a_idx[rows], k, metric)
                - _resampled_metric(truth, b_idx[rows], k, metric))

    low, high = bootstrap_interval(diff, len(true_idx), n_boot, alpha, seed, method)
    return {"diff": float(diff(np.arange(len(true_idx))[None, :])[0]), "low": low, "high": high}


def _as_bools(values: Sequence[bool], name: str) -> np.ndarray:
    # Only real booleans: np.asarray(dtype=bool) would read the string "False" as True.
    for i, value in enumerate(values):
        if not isinstance(value, bool | np.bool_):
            raise ValueError(f"{name}[{i}] = {value!r} is not a bool")
    return np.asarray(values, dtype=bool)


def mcnemar(correct_a: Sequence[bool], correct_b: Sequence[bool]) -> dict:
    """Paired McNemar test of two systems scored on the same examples.

    ``a_only`` (b) counts examples A got right and B wrong, ``b_only`` (c) the reverse.
    The p-value is the exact two-sided binomial test of b successes in b + c trials at
    p = 0.5 (``scipy.stats.binomtest``), used at every size rather than switching to
    the chi-squared approximation for large b + c; it is 1.0 when b + c == 0.
    Returns ``{n, both_correct, a_only, b_only, both_wrong, p_value, test}``.
    """
    from scipy.stats import binomtest

    a, b = _as_bools(correct_a, "correct_a"), _as_bools(correct_b, "correct_b")
    if len(a) != len(b):
        raise ValueError(f"correct_a has {len(a)} items but correct_b has {len(b)}")
    if len(a) == 0:
        raise ValueError("cannot compare systems on zero examples")
    a_only, b_only = int(np.sum(a & ~b)), int(np.sum(~a & b))
    discordant = a_only + b_only
    p_value = 1.0 if discordant == 0 else float(binomtest(a_only, discordant, 0.5).pvalue)
    return {
        "n": len(a),
        "both_correct": int(np.sum(a & b)),
        "a_only": a_only,
        "b_only": b_only,
        "both_wrong": int(np.sum(~a & ~b)),
        "p_value": p_value,
        "test": "mcnemar-exact",
    }


def classification_table(
    y_true: Sequence[str],
    y_pred: Sequence[str],
    labels: Sequence[str],
    invalid_name: str = INVALID,
) -> list[dict]:
    """The published sklearn-style report, with the invalid answers as one more class.

    Rows are ``{"name", "precision", "recall", "f1", "support"}``: one per label, then
    one named ``invalid_name``, then "accuracy", "macro avg", "weighted avg" -- exactly
    what ``sklearn.metrics.classification_report(labels=labels + [INVALID],
    zero_division=0)`` prints. Conventions that follow from that: the invalid row has
    support 0 (no true label is INVALID) and precision = recall = f1 = 0; "macro avg"
    averages over len(labels) + 1 rows, so invalid answers pull it down twice (lower
    recall of the true class and a zero row); "weighted avg" gives the invalid row
    weight 0; the accuracy row has precision and recall None, f1 = accuracy and
    support = n. Unlike :func:`classification_metrics`, this is for reproducing tables.
    """
    true_idx, pred_idx = _encode(y_true, y_pred, labels)
    if invalid_name in labels:
        raise ValueError(f"invalid_name {invalid_name!r} collides with a label")
    names = list(labels) + [invalid_name]
    y_pred_named = [invalid_name if p == INVALID else p for p in y_pred]
    prec, rec, f1, support = precision_recall_fscore_support(
        y_true, y_pred_named, labels=names, zero_division=0
    )
    rows = [
        {"name": name, "precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
        for name, p, r, f, s in zip(names, prec, rec, f1, support, strict=True)
    ]
    n = len(true_idx)
    rows.append(
        {
            "name": "accuracy",
            "precision": None,
            "recall": None,
            "f1": float(np.mean(true_idx == pred_idx)),
            "support": n,
        }
    )
    stacked = np.array([prec, rec, f1])
    for name, weights in (("macro avg", np.ones(len(names))), ("weighted avg", support)):
        p, r, f = stacked @ weights / weights.sum()
        rows.append(
            {"name": name, "precision": float(p), "recall": float(r), "f1": float(f), "support": n}
        )
    return rows


def format_table(rows: Sequence[dict]) -> str:
    """Render :func:`classification_table` rows as Markdown, numbers to 2 decimals."""

    def cell(value: float | None) -> str:
        return "" if value is None else f"{value:.2f}"

    lines = ["| class | precision | recall | f1-score | support |", "|---|---:|---:|---:|---:|"]
    for row in rows:
        lines.append(
            f"| {row['name']} | {cell(row['precision'])} | {cell(row['recall'])} "
            f"| {cell(row['f1'])} | {row['support']} |"
        )
    return "\n".join(lines)
