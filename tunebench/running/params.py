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
from tunebench.data.tasks import TASK_KEYS, Task, load_task, task_path

DATASET_KEYS = {"run", "task", "caps", "max_words", "overrides", "validation_share"}
RUN_KEYS = {"mixture", "model", "train_qlora", "predict", "zero_shot", "adapter", "launch"}
LABEL_TRANSFORM_KEYS = {"max_quarantine_share": 0.01, "max_leakage_share": 1.0}  # -> default
FORMAT_KEYS = {"seed", "caps", "max_words", "validation_share"}


@dataclass(frozen=True)
class DatasetEntry:
    """One benchmark dataset: its task file, its fine-tuning run, and its overrides."""

    name: str
    run: str
    task: str  # task file stem; defaults to the dataset name
    caps: dict[str, int | None] = field(default_factory=dict)  # split -> cap
    max_words: int | None = None
    overrides: dict[str, Any] = field(default_factory=dict)  # merged into the task file
    # Share of the (capped) training rows held out as validation.jsonl, or None (off), and
    # the params key it came from: datasets.<name>.validation_share, else the global default
    # format_instructions.validation_share.
    validation_share: float | None = None
    validation_share_key: str | None = None


def load_params(path: Path = Path("params.yaml")) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: params file not found")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid YAML: {' '.join(str(exc).split())}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return data


def section(params: dict[str, Any], name: str) -> dict[str, Any]:
    """params[name], a mapping (empty when the section is empty)."""
    if name not in params:
        raise ConfigError(f"params.yaml: missing section '{name}'{closest(name, params)}")
    value = params[name] or {}
    if not isinstance(value, dict):
        raise ConfigError(f"params.yaml: {name}: expected a mapping, got "
                          f"{type(value).__name__} {value!r}")
    return value


def label_transform_params(params: dict[str, Any]) -> dict[str, float]:
    """The `label_transform` section, checked: known keys, shares as numbers in [0, 1]."""
    where = "params.yaml: label_transform"
    values = section(params, "label_transform")
    check_keys(values, LABEL_TRANSFORM_KEYS, where, ("max_quarantine_share",))
    out = {**LABEL_TRANSFORM_KEYS, **values}
    for key, value in out.items():
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
            raise ConfigError(f"{where}.{key}: expected a share in [0, 1], got {value!r}")
    return out


def fetch_mirror_param(params: dict[str, Any]) -> str | None:
    """`fetch.mirror`: a folder path or null."""
    values = section(params, "fetch")
    check_keys(values, {"mirror"}, "params.yaml: fetch")
    mirror = values.get("mirror")
    if mirror is not None and not isinstance(mirror, str):
        raise ConfigError(f"params.yaml: fetch.mirror: expected a folder path or null, "
                          f"got {mirror!r}")
    return mirror


def _optional_positive_int(value: Any, where: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{where}: expected a positive integer or null, got {value!r}")
    return value


def _optional_share(value: Any, where: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < 1:
        raise ConfigError(f"{where}: expected a share strictly between 0 and 1, or null (off), "
                          f"got {value!r}")
    return float(value)


def dataset_entry(params: dict[str, Any], name: str) -> DatasetEntry:
    datasets = section(params, "datasets")
    if name not in datasets:
        raise ConfigError(f"params.yaml: datasets has no '{name}'{closest(name, datasets)}")
    entry = datasets[name] or {}
    where = f"params.yaml: datasets.{name}"
    check_keys(entry, DATASET_KEYS, where, ("run",))
    defaults = section(params, "format_instructions")
    check_keys(defaults, FORMAT_KEYS, "params.yaml: format_instructions", ("seed",))
    seed = defaults["seed"]
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ConfigError(f"params.yaml: format_instructions.seed: expected an integer, "
                          f"got {seed!r}")
    caps = {}
    for key, values in (("format_instructions.caps", defaults.get("caps")),
                        (f"datasets.{name}.caps", entry.get("caps"))):
        if values is not None and not isinstance(values, dict):
            raise ConfigError(f"params.yaml: {key}: expected a mapping split -> cap")
        for split, cap in (values or {}).items():
            caps[split] = _optional_positive_int(cap, f"params.yaml: {key}.{split}")
    max_words = _optional_positive_int(entry.get("max_words", defaults.get("max_words")),
                                       f"params.yaml: datasets.{name}.max_words")
    overrides = entry.get("overrides") or {}
    if not isinstance(overrides, dict):
        raise ConfigError(f"{where}.overrides: expected a mapping merged into the task file")
    share_key = (f"datasets.{name}.validation_share" if "validation_share" in entry
                 else "format_instructions.validation_share")
    share = _optional_share(entry.get("validation_share", defaults.get("validation_share")),
                            f"params.yaml: {share_key}")
    return DatasetEntry(name=name, run=entry["run"], task=entry.get("task", name), caps=caps,
                        max_words=max_words, overrides=overrides, validation_share=share,
                        validation_share_key=share_key if share is not None else None)


def dataset_task(params: dict[str, Any], name: str, tasks_dir: Path) -> Task:
    """The dataset's task file with its params overrides applied."""
    entry = dataset_entry(params, name)
    if not entry.overrides:
        return load_task(task_path(tasks_dir, entry.task), entry.overrides)
    where = f"params.yaml: datasets.{name}.overrides"
    check_keys(entry.overrides, TASK_KEYS - {"include"}, where)  # a top-level typo is ours
    try:
        return load_task(task_path(tasks_dir, entry.task), entry.overrides)
    except ConfigError as exc:  # deeper: the merged file is wrong, and either side may be
        raise ConfigError(f"{exc} (the task file merged with {where})") from None


def model_spec(params: dict[str, Any], name: Any, where: str = "model"):
    """The ModelSpec of `models.<name>`; `where` names the key that chose it."""
    from tunebench.models.loading import ModelSpec

    models = section(params, "models")
    if name not in models:
        raise ConfigError(f"params.yaml: {where} {name!r} is not a key of models "
                          f"{sorted(models)}")
    try:
        return ModelSpec.from_params(name, models[name])
    except ValueError as exc:
        raise ConfigError(f"params.yaml: {exc}") from None


def benchmark_model(params: dict[str, Any]):
    """The ModelSpec of params `model` (a key of `models`)."""
    return model_spec(params, params.get("model"))


def run_entry(params: dict[str, Any], run: str) -> dict[str, Any]:
    """`runs.<run>`, checked: a mixture and optional model / train / predict overrides."""
    runs = section(params, "runs")
    if run not in runs:
        raise ConfigError(f"params.yaml: runs has no '{run}'{closest(run, runs)}")
    entry = runs[run] or {}
    check_keys(entry, RUN_KEYS, f"params.yaml: runs.{run}", ("mixture",))
    for key in ("train_qlora", "predict", "zero_shot"):
        if entry.get(key) is not None and not isinstance(entry[key], dict):
            raise ConfigError(f"params.yaml: runs.{run}.{key}: expected a mapping")
    return entry


def run_model(params: dict[str, Any], run: str):
    """The ModelSpec a run fine-tunes: `runs.<run>.model`, else params `model`."""
    entry = run_entry(params, run)
    if "model" in entry:
        return model_spec(params, entry["model"], f"runs.{run}.model")
    return benchmark_model(params)


def predict_settings(params: dict[str, Any], run: str) -> dict[str, Any]:
    """The `predict` section with the run's `runs.<run>.predict` overrides on top."""
    return {**section(params, "predict"), **(run_entry(params, run).get("predict") or {})}

