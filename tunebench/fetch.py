"""Stage logic for `fetch`: read a task's raw splits from the Hub or from a local mirror.

Raw splits keep the source's original columns and labels, plus `source_row`: the row's
position in its source file or Hub split (before any filtering), from which stable
example ids are built later.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from tunebench.io import DataError, read_table, sha256_file
from tunebench.tasks import Task

MIRROR_ENV = "TUNEBENCH_MIRROR"


def resolve_mirror(param: str | None) -> Path | None:
    """The mirror root: the TUNEBENCH_MIRROR environment variable, else the param, else None."""
    value = os.environ.get(MIRROR_ENV) or param
    return Path(value) if value else None


def fetch(task: Task, mirror: Path | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """Return ({raw split name: DataFrame}, provenance) from the mirror if given, else the Hub."""
    if mirror is not None:
        return fetch_mirror(task, mirror)
    return fetch_hub(task)


def fetch_mirror(task: Task, root: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    if task.mirror is None:
        raise DataError(f"{task.path}: no 'source.mirror' entry, but a mirror ({root}) is set")
    folder = Path(root) / task.mirror.dir
    if not folder.is_dir():
        raise DataError(
            f"mirror folder {folder} not found (task {task.path}, source.mirror.dir "
            f"'{task.mirror.dir}' under mirror root {root}; set fetch.mirror or {MIRROR_ENV})"
        )
    frames, splits, files = {}, {}, {}
    for name, spec in task.mirror.splits.items():
        path = folder / spec.file
        digest = sha256_file(path) if path.is_file() else None
        if spec.sha256 is not None and digest is not None and digest != spec.sha256:
            raise DataError(f"{path}: sha256 {digest} differs from the pinned "
                            f"source.mirror.splits.{name}.sha256 {spec.sha256} ({task.path})")
        df = read_table(path, task.raw_columns(name))
        if "source_row" in df.columns:
            raise DataError(f"{path}: has a 'source_row' column, which fetch adds itself")
        df.insert(0, "source_row", range(len(df)))
        in_file = len(df)
        for column, value in spec.where.items():
            if column not in df.columns:
                raise DataError(f"{path}: filter column '{column}' (task {task.path}) is missing")
            df = df[df[column] == value]
        frames[name] = df.reset_index(drop=True)
        files[spec.file] = digest
        # Rows in = rows kept + rows another split's filter takes (none dropped unseen).
        splits[name] = {"file": spec.file, "where": spec.where, "rows": len(df),
                        "rows_in_file": in_file, "filtered_out": in_file - len(df)}
    _check_filters_cover_files(task, splits)
    provenance = {"source": "mirror", "mirror_dir": task.mirror.dir, "file_sha256": files,
                  "splits": splits}
    return frames, provenance


def _check_filters_cover_files(task: Task, splits: dict[str, dict]) -> None:
    """Splits filtered out of one file must together keep every row of it: a row matching
    no split's filter (e.g. a typo'd value) would otherwise vanish without a count."""
    by_file: dict[str, list[dict]] = {}
    for info in splits.values():
        by_file.setdefault(info["file"], []).append(info)
    for file, infos in by_file.items():
        if not any(i["where"] for i in infos):
            continue
        kept, total = sum(i["rows"] for i in infos), infos[0]["rows_in_file"]
        if kept != total:
            raise DataError(f"{task.path}: the split filters on {file} keep {kept} of its "
                            f"{total} rows; {total - kept} match no split's 'where'")


def fetch_hub(task: Task) -> tuple[dict[str, Any], dict[str, Any]]:
    if task.hub is None:
        raise DataError(f"{task.path}: no 'source.hub' entry and no mirror configured")
    import datasets
    import pandas as pd

    hub, frames, splits = task.hub, {}, {}
    for name, hub_splits in hub.splits.items():
        parts = []
        for split in hub_splits:
            try:
                ds = datasets.load_dataset(hub.id, hub.config, split=split, revision=hub.revision)
            except Exception as exc:  # the hub client raises many types; all mean "unreadable"
                raise DataError(
                    f"could not read {hub.id} (config {hub.config}, split {split}, revision "
                    f"{hub.revision}) from the Hugging Face Hub for task {task.path}: {exc}. "
                    f"Offline? Set fetch.mirror or {MIRROR_ENV} to a local mirror."
                ) from None
            parts.append(_to_pandas_with_label_names(ds))
        df = pd.concat(parts, ignore_index=True)
        missing = [c for c in task.raw_columns(name) if c not in df.columns]
        if missing:
            raise DataError(f"{hub.id} ({hub.config}, {'+'.join(hub_splits)} at {hub.revision}): "
                            f"missing column(s) {', '.join(missing)} required by {task.path}; "
                            f"has {', '.join(map(str, df.columns))}")
        df.insert(0, "source_row", range(len(df)))
        frames[name] = df
        splits[name] = {"hub_splits": hub_splits, "rows": len(df)}
    provenance = {"source": "hub", "id": hub.id, "config": hub.config,
                  "revision": hub.revision, "commit": _resolve_commit(hub.id, hub.revision),
                  "splits": splits}
    return frames, provenance


def _to_pandas_with_label_names(ds):
    """Hub ClassLabel columns arrive as integers; keep the dataset's own label names instead
    (-1, the Hub's "no label", becomes missing and is quarantined downstream)."""
    import datasets

    df = ds.to_pandas()
    for column, feature in ds.features.items():
        if isinstance(feature, datasets.ClassLabel):
            df[column] = [feature.names[i] if i >= 0 else None for i in df[column]]
    return df


def _resolve_commit(repo_id: str, revision: str) -> str:
    """The commit a (possibly symbolic) revision points at, recorded so a run can be pinned."""
    from huggingface_hub import HfApi

    return HfApi().dataset_info(repo_id, revision=revision).sha
