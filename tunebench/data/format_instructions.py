"""Stage logic for `format-instructions`: capped, seeded samples rendered as instructions.

Each example becomes {"id", "prompt", "completion", "text"}: the prompt as the task file
renders it (FinGPT: "Instruction: ...\\nInput: ...\\nAnswer: "), the canonical label as
completion (summarization: the first reference summary, every reference in "references"; the
sample is then seeded and uniform, as there are no labels) and the input text alone.
Tasks whose base model is prompted few-shot also get "prompt_base". Rendering through a
model's chat template happens in the model stages, since it depends on the model.

A dataset without a validation split may hold a share of its (capped) training rows out as
validation (`hold_out_validation`: seeded, stratified by label), which train-qlora evaluates
every epoch to keep the best one.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tunebench.config import ConfigError, closest
from tunebench.data.tasks import Task, render_prompt
from tunebench.io import DataError, read_json


def stratified_sample(labels: Sequence[str], cap: int | None, seed: int) -> list[int]:
    """Positions of a seeded sample of at most `cap` rows keeping label proportions
    (largest-remainder allocation), returned in their original order."""
    import numpy as np

    n = len(labels)
    if cap is None or cap >= n:
        return list(range(n))
    counts = Counter(labels)
    quotas = {label: cap * count / n for label, count in counts.items()}
    alloc = {label: int(q) for label, q in quotas.items()}
    by_remainder = sorted(quotas, key=lambda lab: (-(quotas[lab] - alloc[lab]), lab))
    for label in by_remainder[: cap - sum(alloc.values())]:
        alloc[label] += 1
    rng = np.random.default_rng(seed)
    chosen = []
    for label in sorted(counts):
        positions = [i for i, lab in enumerate(labels) if lab == label]
        chosen += rng.permutation(positions)[: alloc[label]].tolist()
    return sorted(chosen)


def seeded_sample(n: int, cap: int | None, seed: int) -> list[int]:
    """Positions of a seeded uniform sample of at most `cap` of n rows, in original order
    (summarization: no labels to stratify by)."""
    import numpy as np

    if cap is None or cap >= n:
        return list(range(n))
    return sorted(np.random.default_rng(seed).permutation(n)[:cap].tolist())


def truncate_words(text: str, max_words: int | None) -> tuple[str, bool]:
    """Keep the first `max_words` words; the policy for long inputs (e.g. job descriptions)."""
    words = text.split()
    if max_words is None or len(words) <= max_words:
        return text, False
    return " ".join(words[:max_words]) + " ...", True


def format_instructions(
    task: Task, df, cap: int | None, seed: int, max_words: int | None = None
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Render a split as instruction rows; also return counts for the summary."""
    records = df.to_dict("records")
    summarization = task.type == "summarization"
    if summarization:
        keep = seeded_sample(len(records), cap, seed)
    else:
        keep = stratified_sample([r["label"] for r in records], cap, seed)
    rows, truncated = [], 0
    for position in keep:
        record = dict(records[position])
        record["text"], cut = truncate_words(record["text"], max_words)
        truncated += cut
        # "text" is the (cut) input alone, for models that take no prompt (encoders).
        row = {"id": record["id"], "prompt": render_prompt(task, record),
               "completion": record["label"], "text": record["text"]}
        if summarization:
            row["references"] = [str(r) for r in record["references"]]
        if task.base_prompt == "few_shot":
            row["prompt_base"] = render_prompt(task, record, few_shot=True)
        rows.append(row)
    summary = {"rows_in": len(records), "rows_out": len(rows), "cap": cap, "seed": seed,
               "max_words": max_words, "truncated": truncated}
    if not summarization:
        summary["label_counts"] = dict(sorted(Counter(r["completion"] for r in rows).items()))
    return rows, summary


def hold_out_validation(rows: list[dict[str, Any]], share: float, seed: int,
                        by_label: bool = True, where: str = "validation_share",
                        ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Split instruction rows into (train, validation): a seeded `share` of them (rounded,
    at least one row each side), stratified by completion (largest remainder, as the caps)
    unless `by_label` is false (summaries: uniform). Both keep the rows' original order."""
    from tunebench.io import DataError

    n = len(rows)
    if n < 2:
        raise DataError(f"{where}: {n} training row(s) cannot be split into train and "
                        f"validation (need 2 or more)")
    size = min(max(int(share * n + 0.5), 1), n - 1)
    if by_label:
        picked = stratified_sample([r["completion"] for r in rows], size, seed)
    else:
        picked = seeded_sample(n, size, seed)
    held = set(picked)
    return [r for i, r in enumerate(rows) if i not in held], [rows[i] for i in picked]


def upstream_rows(labeled: Path, splits: list[str]) -> dict[str, int]:
    """{split: rows kept} from label-transform's summary.json, which must describe exactly the
    <split>.parquet files found (a half-replaced folder mixes two runs)."""
    path = labeled / "summary.json"
    summary = read_json(path)
    described = summary.get("splits") if isinstance(summary, dict) else None
    if not isinstance(described, dict):
        raise DataError(f"{path}: no 'splits' counts; is it label-transform's summary?")
    if sorted(described) != sorted(splits):
        raise DataError(f"{path}: describes splits {sorted(described)} but {labeled} holds "
                        f"{sorted(splits)}; rerun label-transform")
    rows = {}
    for split, info in described.items():
        kept = info.get("kept") if isinstance(info, dict) else None
        if isinstance(kept, bool) or not isinstance(kept, int):
            raise DataError(f"{path}: splits.{split}.kept: expected a row count, got {kept!r}")
        rows[split] = kept
    return rows


def check_caps(params: dict, name: str, splits: list[str], params_path: Path) -> None:
    """A cap must name a split: the dataset's own (datasets.<name>.caps), or any split of the
    benchmark for the shared default (format_instructions.caps), so a typo'd split name does
    not silently leave a split uncapped."""
    shared = {"train", "test", "validation", *splits}
    for key, caps, known in (
            ("format_instructions.caps", params["format_instructions"].get("caps"), shared),
            (f"datasets.{name}.caps", (params["datasets"][name] or {}).get("caps"), splits)):
        for split in caps or {}:
            if split not in known:
                raise ConfigError(f"{params_path}: {key}.{split}: {name} has no split "
                                  f"{split!r}{closest(str(split), known)}; its splits: "
                                  f"{', '.join(sorted(splits))}")


def validation_share(entry, splits: list[str], labeled: Path) -> float | None:
    """The share of training rows to hold out, or None: off, or the dataset has its own
    validation split (kept; a share named for this dataset then is an error)."""
    if entry.validation_share is None:
        return None
    if "validation" in splits:
        if entry.validation_share_key.startswith("datasets."):
            raise ConfigError(f"params.yaml: {entry.validation_share_key}: {entry.name} already "
                              f"has a validation split ({labeled}/validation.parquet); remove "
                              f"the key to keep it")
        return None  # the global default applies only to datasets without one
    if "train" not in splits:
        raise ConfigError(f"params.yaml: {entry.validation_share_key}: {entry.name} has no "
                          f"train split to hold validation rows out of")
    return entry.validation_share


def label_counts(task, rows: list[dict]) -> dict:
    """{"label_counts": ...} of classification rows, as format_instructions counts them."""
    if task.type == "summarization":
        return {}
    return {"label_counts": dict(sorted(Counter(r["completion"] for r in rows).items()))}
