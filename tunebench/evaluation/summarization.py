"""Summarization scores: ROUGE-1/2/L and BERTScore F1 per example, bootstrap summaries, box plots.

Multiple references (DialogSum's test split has three per dialogue) follow the usual
multi-reference convention: each prediction is scored against every reference and the best
score is kept, per example and per metric independently (rouge-score's `score_multi` rule: for
each ROUGE type the reference with the highest F-measure; for BERTScore the highest F1). A
single-reference dataset is the one-element case.

An empty (or whitespace-only) prediction scores 0.0 on every metric and is counted
(`n_empty`): BERTScore would otherwise embed just [CLS]/[SEP] and return a misleading
non-zero similarity. ROUGE uses rouge-score's own tokenizer (lowercased, non-alphanumerics
dropped) with Porter stemming on, the setting of the published ROUGE numbers.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

ROUGE_TYPES = ("rouge1", "rouge2", "rougeL")
METRICS = (*ROUGE_TYPES, "bertscore_f1")
REFERENCE_COMBINATION = "max over references, per example and per metric"
REFERENCE = "tuned"  # the system every other one is compared with, as for classification


def _check(predictions: Sequence[str], references_list: Sequence[Sequence[str]]) -> None:
    if len(predictions) != len(references_list):
        raise ValueError(f"{len(predictions)} predictions but {len(references_list)} "
                         "reference lists")
    for i, refs in enumerate(references_list):
        if isinstance(refs, str) or not refs or not all(r.strip() for r in refs):
            raise ValueError(f"references_list[{i}] must be a non-empty list of non-empty "
                             f"strings, got {refs!r}")


def is_empty(prediction: str) -> bool:
    return not prediction.strip()


def rouge_scores(predictions: Sequence[str], references_list: Sequence[Sequence[str]],
                 use_stemmer: bool = True) -> list[dict[str, float]]:
    """Per example {rouge1, rouge2, rougeL} F-measures, best reference per metric."""
    from rouge_score.rouge_scorer import RougeScorer

    _check(predictions, references_list)
    scorer = RougeScorer(list(ROUGE_TYPES), use_stemmer=use_stemmer)
    rows = []
    for prediction, refs in zip(predictions, references_list, strict=True):
        if is_empty(prediction):
            rows.append(dict.fromkeys(ROUGE_TYPES, 0.0))
            continue
        best = scorer.score_multi(list(refs), prediction)
        rows.append({key: float(best[key].fmeasure) for key in ROUGE_TYPES})
    return rows


def bertscore_f1(predictions: Sequence[str], references_list: Sequence[Sequence[str]],
                 model_dir: str | Path, num_layers: int, batch_size: int = 32) -> list[float]:
    """Per example BERTScore F1 (no idf, no baseline rescaling), best reference; empty -> 0.0.

    model_dir is a local encoder folder passed to bert-score as `model_type` (offline), and
    num_layers the layer whose embeddings are compared; record both beside the scores.
    """
    from bert_score import score

    _check(predictions, references_list)
    if not (Path(model_dir) / "config.json").is_file():
        raise FileNotFoundError(f"BERTScore model folder not found (no config.json): {model_dir}")
    # One flat batch of (prediction, reference) pairs so bert-score batches across examples.
    pairs = [(i, p, r) for i, (p, refs) in enumerate(zip(predictions, references_list,
                                                          strict=True))
             if not is_empty(p) for r in refs]
    best = [0.0] * len(predictions)
    if not pairs:
        return best
    _, _, f1 = score([p for _, p, _ in pairs], [r for _, _, r in pairs],
                     model_type=str(model_dir), num_layers=num_layers, batch_size=batch_size,
                     idf=False, rescale_with_baseline=False, verbose=False)
    seen: set[int] = set()
    for (i, _, _), value in zip(pairs, f1.tolist(), strict=True):
        best[i] = value if i not in seen else max(best[i], value)
        seen.add(i)
    return best


def summary_stats(values: Sequence[float], n_boot: int = 1000, seed: int = 0,
                  alpha: float = 0.05) -> dict[str, float]:
    """{n, mean, median, ci95_low, ci95_high}: a percentile bootstrap interval of the mean,
    resampling examples with numpy.random.default_rng(seed), so it is a pure function."""
    data = np.asarray(values, dtype=float)
    if data.size == 0:
        raise ValueError("cannot summarise zero values")
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    rng = np.random.default_rng(seed)
    means = data[rng.integers(0, data.size, size=(n_boot, data.size))].mean(axis=1)
    low, high = np.quantile(means, [alpha / 2, 1 - alpha / 2])
    return {"n": int(data.size), "mean": float(data.mean()), "median": float(np.median(data)),
            "ci95_low": float(low), "ci95_high": float(high)}


def summarization_metrics(predictions: Sequence[str], references_list: Sequence[Sequence[str]],
                          bertscore_model: str | Path, bertscore_layers: int,
                          n_boot: int = 1000, seed: int = 0, batch_size: int = 32) -> dict:
    """Everything `score` needs for one system: per-example scores, stats per metric, counts,
    and how they were computed (reference combination, BERTScore model and layer)."""
    per_example = rouge_scores(predictions, references_list)
    f1 = bertscore_f1(predictions, references_list, bertscore_model, bertscore_layers,
                      batch_size)
    for row, value in zip(per_example, f1, strict=True):
        row["bertscore_f1"] = value
    metrics = [*ROUGE_TYPES, "bertscore_f1"]
    return {
        "n": len(predictions), "n_empty": sum(is_empty(p) for p in predictions),
        "n_references": [len(r) for r in references_list],
        "reference_combination": REFERENCE_COMBINATION,
        "rouge": {"package": "rouge-score", "use_stemmer": True, "measure": "F"},
        "bertscore": {"model": str(bertscore_model), "num_layers": bertscore_layers,
                      "idf": False, "rescale_with_baseline": False},
        "stats": {m: summary_stats([r[m] for r in per_example], n_boot, seed) for m in metrics},
        "per_example": per_example,
    }


def plot_boxplots(per_system: dict[str, dict[str, Sequence[float]]], path: str | Path) -> Path:
    """One panel per metric, one box per system (e.g. base vs tuned), means as markers; PNG."""
    import matplotlib

    matplotlib.use("Agg")  # headless: DVC stages and CI have no display
    import matplotlib.pyplot as plt

    systems = list(per_system)
    if not systems:
        raise ValueError("plot_boxplots got no systems")
    metrics = list(per_system[systems[0]])
    for system in systems:
        if list(per_system[system]) != metrics:
            raise ValueError(f"system {system!r} has metrics {list(per_system[system])}, "
                             f"expected {metrics}")
    fig, axes = plt.subplots(1, len(metrics), figsize=(3.2 * len(metrics), 3.6), squeeze=False)
    for ax, metric in zip(axes[0], metrics, strict=True):
        ax.boxplot([list(per_system[s][metric]) for s in systems], showmeans=True)
        ax.set_xticks(range(1, len(systems) + 1), systems)
        ax.set_title(metric)
        ax.set_ylim(-0.02, 1.02)  # every metric here is a score in [0, 1]
    axes[0][0].set_ylabel("per-example score (line: median, triangle: mean)")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100, metadata={"Software": None})  # no version stamp: stable bytes
    plt.close(fig)
    return path


def paired_difference(a: Sequence[float], b: Sequence[float], n_boot: int = 1000, seed: int = 0,
                      alpha: float = 0.05) -> dict[str, float | int]:
    """Mean of a - b over paired examples, a percentile-bootstrap interval of it (examples
    resampled), and how many examples each side wins."""
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if x.shape != y.shape or x.size == 0:
        raise ValueError(f"need two equally long, non-empty score lists; got {x.size}, {y.size}")
    diff = x - y
    rng = np.random.default_rng(seed)
    means = diff[rng.integers(0, diff.size, size=(n_boot, diff.size))].mean(axis=1)
    low, high = np.quantile(means, [alpha / 2, 1 - alpha / 2])
    return {"mean_diff": float(diff.mean()), "ci95_low": float(low), "ci95_high": float(high),
            "a_better": int((diff > 0).sum()), "b_better": int((diff < 0).sum()),
            "ties": int((diff == 0).sum())}


def compare_systems(per_example: dict[str, list[dict[str, float]]], n_boot: int, seed: int,
                    reference: str = REFERENCE) -> dict[str, dict]:
    """`reference` against every other system, per metric, on the same examples in one order."""
    if reference not in per_example:
        return {}
    out = {}
    for other in sorted(per_example):
        if other == reference:
            continue
        a, b = per_example[reference], per_example[other]
        out[f"{reference}_vs_{other}"] = {"a": reference, "b": other, "n": len(a), **{
            metric: paired_difference([r[metric] for r in a], [r[metric] for r in b],
                                      n_boot, seed) for metric in METRICS}}
    return out
