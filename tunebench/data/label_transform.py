"""Stage logic for `label-transform`: canonical labels, fixed splits, stable ids.

Splits are fixed here, once: nothing downstream re-splits. A row that cannot be used
(empty text or text of invisible characters only, text that is not valid Unicode, missing
or unknown label) is never dropped
silently: it goes to the quarantine with its reason, is counted in the summary, and the stage
fails when the quarantined share passes a threshold. Duplicate example ids fail outright;
test texts that also occur in train (leakage) are counted, listed, and fail the stage above
`max_leakage_share`. An empty split, or one whose every row is quarantined, fails.
"""

from __future__ import annotations

import math
import unicodedata
from collections import Counter
from typing import Any

from tunebench.config import ConfigError
from tunebench.data.tasks import LabelRule, Task
from tunebench.io import DataError, check_unique_ids

REQUIRED_SPLITS = ("train", "test")


def apply_label_rule(rule: LabelRule, row: dict[str, Any]) -> tuple[str | None, str | None]:
    """(canonical label, None) or (None, reason) for one raw row."""
    if rule.any_of is not None:
        values = [row.get(column) for column in rule.any_of]
        if any(not isinstance(v, bool) for v in values):
            return None, f"non-boolean value in {list(rule.any_of)}: {values!r}"
        return rule.map[any(values)], None
    value = row.get(rule.field)
    if _missing(value):
        return None, f"missing label in '{rule.field}'"
    if rule.bin_edges is not None:
        return _bin(rule, value)
    if value not in rule.map:
        return None, f"unknown label {value!r} in '{rule.field}'"
    return rule.map[value], None


def _bin(rule: LabelRule, value: Any) -> tuple[str | None, str | None]:
    """Right-open bins: label i covers edges[i-1] <= value < edges[i]."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None, f"non-numeric score {value!r} in '{rule.field}'"
    index = sum(value >= edge for edge in rule.bin_edges)
    return rule.bin_labels[index], None


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def resplit_indices(n: int, test_size: float, seed: int) -> tuple[list[int], list[int]]:
    """(train, test) positions exactly as `datasets.Dataset.train_test_split(seed=...)` makes
    them: test = the first ceil(test_size * n) entries of default_rng(seed).permutation(n)."""
    import numpy as np

    perm = np.random.default_rng(seed).permutation(n).tolist()
    n_test = math.ceil(test_size * n)
    return perm[n_test:], perm[:n_test]


def fold(text: Any) -> str:
    """Text compared case- and space-folded: the key of groups, repeats and leakage."""
    return " ".join(str(text).lower().split())


def group_keys(df, column: str, where: str) -> list[str]:
    """Each row's group: the column's value as text, case- and space-folded (so one headline
    written twice with other spacing is one group). An empty value is an error, not a group."""
    if column not in df.columns:
        raise DataError(f"{where}: no column {column!r}; has {', '.join(map(str, df.columns))}")
    keys = []
    for row, value in enumerate(df[column].tolist()):
        key = fold(value) if not _missing(value) else ""
        if not key:
            raise DataError(f"{where}: row {row} has no {column!r} value to group it by")
        keys.append(key)
    return keys


def grouped_resplit_indices(keys: list[str], test_size: float,
                            seed: int) -> tuple[list[int], list[int]]:
    """(train, test) positions with every row of a group on one side: groups are taken in the
    order of default_rng(seed).permutation(n_groups) (groups numbered by first appearance) until
    the test side holds at least ceil(test_size * rows) rows. Positions keep the source order."""
    import numpy as np

    groups = list(dict.fromkeys(keys))
    sizes = Counter(keys)
    target, count, test_groups = math.ceil(test_size * len(keys)), 0, set()
    for g in np.random.default_rng(seed).permutation(len(groups)).tolist():
        if count >= target:
            break
        test_groups.add(groups[g])
        count += sizes[groups[g]]
    if len(test_groups) == len(groups):
        raise DataError(f"resplit: {len(groups)} group(s) cannot make both a train and a test "
                        f"side of test_size {test_size}")
    test = [i for i, k in enumerate(keys) if k in test_groups]
    train = [i for i, k in enumerate(keys) if k not in test_groups]
    return train, test


def canonical_splits(task: Task, raw: dict[str, Any]
                     ) -> tuple[dict[str, tuple[str, Any]], dict[str, Any] | None]:
    """({split: (raw split it comes from, DataFrame)}, grouped): the raw splits as they are, or
    train/test made by the task's `resplit` when the source does not carry them; `grouped` is
    a grouped resplit's summary (its settings, the groups and rows on each side), else None."""
    if all(name in raw for name in REQUIRED_SPLITS):
        return {name: (name, df) for name, df in raw.items()}, None
    if task.resplit is None or task.resplit.source not in raw:
        raise DataError(
            f"{task.path}: raw splits {sorted(raw)} lack {list(REQUIRED_SPLITS)} and the task "
            "has no matching 'resplit'"
        )
    source, spec, grouped = raw[task.resplit.source], task.resplit, None
    if spec.group is None:
        train, test = resplit_indices(len(source), spec.test_size, spec.seed)
    else:
        keys = group_keys(source, spec.group, f"{task.path}: resplit.group")
        train, test = grouped_resplit_indices(keys, spec.test_size, spec.seed)
        grouped = {"from": spec.source, "test_size": spec.test_size, "seed": spec.seed,
                   "group": spec.group,
                   "groups": {"train": len({keys[i] for i in train}),
                              "test": len({keys[i] for i in test})},
                   "rows": {"train": len(train), "test": len(test)}}
    out = {k: (k, v) for k, v in raw.items() if k != task.resplit.source}
    for name, rows in (("train", train), ("test", test)):
        out[name] = (task.resplit.source, source.iloc[rows].reset_index(drop=True))
    return out, grouped


def repeats(df, text_field: str) -> dict[str, int]:
    """Rows that repeat an earlier row of the same split: `duplicate_rows`, equal in every
    source column (an appended copy: ids are positional, so the id check cannot see it), and
    `repeated_texts`, the same text once case and spaces are folded (one headline for several
    companies). Counted in the summary and the report; the rows are kept."""
    columns = [c for c in df.columns if c != "source_row"]
    texts = [fold(t) for t in df[text_field].tolist()]
    # repr: lists or dicts from JSON Lines are not hashable, and bytes may not be UTF-8
    as_text = df[columns].map(repr)
    return {"duplicate_rows": int(as_text.duplicated().sum()) if columns else 0,
            "repeated_texts": len(texts) - len(set(texts))}


def label_split(task: Task, df, split: str, raw_split: str):
    """(kept DataFrame, quarantined rows) for one split. Columns of kept rows: id, text,
    label, then the task's extra fields and prompt-variable source columns."""
    import pandas as pd

    missing = [c for c in task.raw_columns(split) if c not in df.columns]
    if missing:
        raise DataError(f"{task.name}/{raw_split}: missing column(s) {', '.join(missing)} "
                        f"(required by {task.path}); has {', '.join(map(str, df.columns))}")
    extra = [v["field"] for v in task.prompt_vars.values() if isinstance(v, dict)]
    summarization = task.type == "summarization"
    kept, quarantined = [], []
    for row in df.to_dict("records"):
        example_id = f"{task.name}:{raw_split}:{row['source_row']}"
        text, text_reason = _text(row[task.text_field], task.text_field)
        if summarization:
            references, reason = _references(row, task.reference_columns(split))
            label = references[0] if references else None
        else:
            label, reason = apply_label_rule(task.label, row)
        reason = text_reason or reason
        if reason is not None:
            quarantined.append({"id": example_id, "split": split, "reason": reason,
                                "row": _jsonable(row)})
            continue
        out = {"id": example_id, "text": str(text), "label": label}
        if summarization:
            out["references"] = references
        out.update({name: row[column] for name, column in task.fields.items()})
        out.update({column: row[column] for column in extra})
        kept.append(out)
    columns = ["id", "text", "label", *(["references"] if summarization else []),
               *task.fields, *extra]
    return pd.DataFrame(kept, columns=columns), quarantined


def _references(row: dict[str, Any], columns: tuple[str, ...]) -> tuple[list[str] | None,
                                                                         str | None]:
    """(reference summaries, None) or (None, reason): every listed column must hold text.
    For summarization the canonical `label` is the first reference (the training target)."""
    references = []
    for column in columns:
        text, reason = _text(row.get(column), column)
        if reason is not None:
            return None, reason.replace("empty text", "empty reference")
        references.append(text.strip())
    return references, None


def _text(value: Any, field: str) -> tuple[str | None, str | None]:
    """(text, None) or (None, reason): empty, non-UTF-8 bytes or unencodable text is refused
    (str() of bytes would otherwise turn them into the literal "b'...'")."""
    if isinstance(value, bytes):
        try:
            value = value.decode("utf-8")
        except UnicodeDecodeError as exc:
            return None, f"non-UTF-8 bytes in '{field}' at byte {exc.start}"
    if _missing(value) or not str(value).strip():
        return None, f"empty text in '{field}'"
    text = str(value)
    if all(c.isspace() or unicodedata.category(c) in INVISIBLE for c in text):
        return None, f"empty text in '{field}' (only control, format or zero-width characters)"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:  # lone surrogates: no file could store them as UTF-8
        return None, f"invalid Unicode in '{field}' at character {exc.start}"
    return text, None


# Unicode categories that print nothing: control, format (zero-width space, joiners, BOM) and
# separators; a text made only of these is empty.
INVISIBLE = {"Cc", "Cf", "Zs", "Zl", "Zp"}


def _jsonable(row: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for key, value in row.items():
        if _missing(value):
            out[key] = None
        elif hasattr(value, "item"):  # numpy scalar
            out[key] = value.item()
        elif isinstance(value, bytes):
            out[key] = value.decode("utf-8", errors="backslashreplace")
        elif isinstance(value, str):
            out[key] = value.encode("utf-8", errors="backslashreplace").decode("utf-8")
        else:
            out[key] = value if isinstance(value, int | float | bool) else str(value)
    return out


def label_transform(task: Task, raw: dict[str, Any], max_quarantine_share: float,
                    max_leakage_share: float = 1.0):
    """Return ({split: DataFrame}, quarantined rows, summary); raise when too much is bad:
    more than `max_quarantine_share` of all rows quarantined, or more than
    `max_leakage_share` of test rows whose text also occurs in train."""
    if isinstance(max_quarantine_share, bool) or not 0 <= max_quarantine_share < 1:
        raise ConfigError(f"params.yaml: label_transform.max_quarantine_share: expected a share "
                          f"below 1 (0.01 = 1%), got {max_quarantine_share!r}; 1 would let "
                          "a dataset whose every row is quarantined through")
    splits, quarantine, summary = {}, [], {"task": task.name, "version": task.version,
                                            "splits": {}}
    canonical, grouped = canonical_splits(task, raw)
    for split, (raw_split, df) in canonical.items():
        if len(df) == 0:
            raise DataError(f"{task.name}/{split}: no rows (raw split {raw_split!r} of "
                            f"{task.path} is empty); every split needs examples")
        kept, bad = label_split(task, df, split, raw_split)
        if len(kept) == 0:
            raise DataError(f"{task.name}/{split}: all {len(df)} rows quarantined; first "
                            f"reason: {bad[0]['id']}: {bad[0]['reason']}")
        if len(kept) + len(bad) != len(df):  # every row is accounted for, by construction
            raise DataError(f"{task.name}/{split}: {len(df)} rows in but {len(kept)} kept + "
                            f"{len(bad)} quarantined")
        splits[split], quarantine = kept, quarantine + bad
        summary["splits"][split] = {
            "rows_in": len(df), "kept": len(kept), "quarantined": len(bad),
            "label_counts": (dict(sorted(Counter(kept["label"]).items()))
                             if task.type == "classification" else {}),
            "quarantine_reasons": dict(Counter(r["reason"].split(" in ")[0] for r in bad)),
            **repeats(df, task.text_field),
        }
    check_unique_ids([i for df in splits.values() for i in df["id"]]
                     + [r["id"] for r in quarantine], f"{task.name} (label-transform)")
    total = sum(s["rows_in"] for s in summary["splits"].values())
    share = len(quarantine) / total if total else 0.0
    leaked = leaked_ids(splits)
    n_test = len(splits["test"])
    leak_share = len(leaked) / n_test if n_test else 0.0
    summary.update(rows_in=total, quarantined=len(quarantine), quarantined_share=share,
                   max_quarantine_share=max_quarantine_share,
                   test_texts_in_train=len(leaked), test_texts_in_train_share=leak_share,
                   test_texts_in_train_ids=leaked[:20], max_leakage_share=max_leakage_share)
    if grouped is not None:
        summary["resplit"] = grouped
    if leak_share > max_leakage_share:
        raise DataError(
            f"{task.name}: {len(leaked)} of {n_test} test texts also occur in train "
            f"({leak_share:.2%}) > label_transform.max_leakage_share {max_leakage_share:.2%}; "
            f"first: {', '.join(leaked[:3])}")
    if share > max_quarantine_share:
        raise DataError(
            f"{task.name}: {len(quarantine)} of {total} rows quarantined ({share:.2%}) > "
            f"label_transform.max_quarantine_share {max_quarantine_share:.2%}; first reasons: "
            + "; ".join(f"{r['id']}: {r['reason']}" for r in quarantine[:3])
        )
    return splits, quarantine, summary


def leaked_ids(splits: dict[str, Any]) -> list[str]:
    """Ids of test rows whose text (case- and space-folded) also occurs in train."""
    train = {fold(t) for t in splits["train"]["text"]}
    test = splits["test"]
    return [i for i, t in zip(test["id"], test["text"], strict=True) if fold(t) in train]
