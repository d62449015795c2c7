"""Reading params.yaml: the one place a stage learns its settings.

Sections are named after the stages that read them (`fetch`, `label_transform`,
`format_instructions`, `train_qlora`, `predict`, `score`); `datasets` lists the benchmark's
datasets with per-dataset overrides, `runs` the fine-tuning runs, `models` the models.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tunebench.config import ConfigError, check_keys, closest
from tunebench.tasks import Task, load_task, task_path

DATASET_KEYS = {"run", "task", "caps", "max_words", "overrides"}


@dataclass(frozen=True)
class DatasetEntry:
    """One benchmark dataset: its task file, its fine-tuning run, and its overrides."""

    name: str
    run: str
    task: str  # task file stem; defaults to the dataset name
    caps: dict[str, int | None] = field(default_factory=dict)  # split -> cap
    max_words: int | None = None
    overrides: dict[str, Any] = field(default_factory=dict)  # merged into the task file


def load_params(path: Path = Path("params.yaml")) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: params file not found")
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return data


def section(params: dict[str, Any], name: str) -> dict[str, Any]:
    if name not in params:
        raise ConfigError(f"params.yaml: missing section '{name}'{closest(name, params)}")
    return params[name] or {}


def dataset_entry(params: dict[str, Any], name: str) -> DatasetEntry:
    datasets = section(params, "datasets")
    if name not in datasets:
        raise ConfigError(f"params.yaml: datasets has no '{name}'{closest(name, datasets)}")
    entry = datasets[name] or {}
    where = f"params.yaml: datasets.{name}"
    check_keys(entry, DATASET_KEYS, where, ("run",))
    defaults = section(params, "format_instructions")
    caps = {**(defaults.get("caps") or {}), **(entry.get("caps") or {})}
    return DatasetEntry(name=name, run=entry["run"], task=entry.get("task", name), caps=caps,
                        max_words=entry.get("max_words", defaults.get("max_words")),
                        overrides=entry.get("overrides") or {})


def dataset_task(params: dict[str, Any], name: str, tasks_dir: Path) -> Task:
    """The dataset's task file with its params overrides applied."""
    entry = dataset_entry(params, name)
    return load_task(task_path(tasks_dir, entry.task), entry.overrides)


def benchmark_model(params: dict[str, Any]):
    """The ModelSpec of params `model` (a key of `models`)."""
    from tunebench.models import ModelSpec

    name, models = params.get("model"), section(params, "models")
    if name not in models:
        raise ConfigError(f"params.yaml: model {name!r} is not a key of models {sorted(models)}")
    try:
        return ModelSpec.from_params(name, models[name])
    except ValueError as exc:
        raise ConfigError(f"params.yaml: {exc}") from None
