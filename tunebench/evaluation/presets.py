"""Published recipes as data: profiles/presets/<name>.yaml, one entry per deviations row.

A preset describes one published comparison's recipe (FinGPT v3.3, FinGPT's benchmark recipe,
the HR bias, sarcasm, summarization and IMDB runs). `settings` holds one entry per row of the
deviations table (SETTINGS), each with

- `value`: what the comparison reads; null when the setting was not published,
- `text`: the published setting in words (and `note`: how sure, or from where),
- `how`: the params key(s) that express it in this project, or `missing`: why this
  project's code cannot run it yet (exactly one of the two).

`one_run` says whether the preset's datasets are trained together (FinGPT's mixture) or one
run each (summarization); `adapters` lists published adapters trained by the recipe. Loading
checks every key and value shape and names the file and key of anything wrong.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from tunebench.config import ConfigError, check_keys

PRESETS_DIR = Path("profiles/presets")

# (key in a preset's `settings`, row label), in table order.
SETTINGS = (
    ("base_model", "base model"),
    ("prompt_format", "prompt wrapping"),
    ("parser", "answer parser"),
    ("train_data", "training data (rows × replication)"),
    ("epochs", "epochs"),
    ("learning_rate", "learning rate"),
    ("warmup", "warmup"),
    ("weight_decay", "weight decay"),
    ("effective_batch", "effective batch"),
    ("lora_targets", "LoRA targets"),
    ("lora_r", "LoRA r"),
    ("lora_alpha", "LoRA alpha"),
    ("lora_dropout", "LoRA dropout"),
    ("precision", "base precision"),
    ("max_seq_len", "max sequence length"),
    ("prompt_loss", "prompt-token loss"),
    ("validation", "validation hold-out, checkpoint"),
    ("over_length", "over-length examples"),
    ("label_targets", "training targets (classes)"),
    ("test_split", "test split and size"),
    ("metric", "headline metric"),
)
PRESET_KEYS = {"name", "description", "one_run", "adapters", "settings"}
ENTRY_KEYS = {"value", "text", "how", "missing", "note"}


def load_preset(path: Path) -> dict[str, Any]:
    """One preset file, checked: its keys, its name (the file stem), every row's entry."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: cannot read preset: {' '.join(str(exc).split())}") from None
    check_keys(data, PRESET_KEYS, str(path), PRESET_KEYS)
    if data["name"] != path.stem:
        raise ConfigError(f"{path}: name {data['name']!r} differs from the file name")
    if not isinstance(data["one_run"], bool) or not isinstance(data["adapters"], list):
        raise ConfigError(f"{path}: one_run must be true/false and adapters a list")
    settings = data["settings"]
    check_keys(settings, [k for k, _ in SETTINGS], f"{path}: settings", [k for k, _ in SETTINGS])
    for key, entry in settings.items():
        where = f"{path}: settings.{key}"
        check_keys(entry, ENTRY_KEYS, where, ("value", "text"))
        if ("how" in entry) == ("missing" in entry):
            raise ConfigError(f"{where}: give exactly one of `how` (the params key that "
                              f"expresses it) or `missing` (why it cannot run here)")
        if entry["value"] is not None:
            _check_value(key, entry["value"], f"{where}.value")
    return data


def _check_value(key: str, value: Any, where: str) -> None:
    """The shape each comparison reads (null, checked before, means not published)."""
    numbers = {"epochs", "learning_rate", "weight_decay", "lora_r", "lora_alpha",
               "lora_dropout", "max_seq_len"}
    lists = {"base_model", "lora_targets", "metric"}
    per_dataset = {"train_data": {"rows", "replicate", "same_rows"},
                   "test_split": {"rows", "split", "same_rows"}}
    if key in numbers:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
    elif key in lists:
        ok = isinstance(value, list) and all(isinstance(v, str) for v in value)
    elif key in per_dataset:
        ok = isinstance(value, dict)
        for dataset, spec in (value.items() if ok else ()):
            check_keys(spec, per_dataset[key], f"{where}.{dataset}", per_dataset[key])
    elif key == "warmup":
        ok = isinstance(value, dict) and len({"ratio", "steps"} & set(value)) == 1
    elif key == "effective_batch":
        ok = isinstance(value, dict) and set(value) == {"batch_size", "grad_accum", "processes"}
    elif key == "label_targets":
        ok = isinstance(value, dict) and all(isinstance(v, int) for v in value.values())
    else:  # prompt_format, parser, precision, prompt_loss, over_length, validation
        ok = isinstance(value, str | dict)
    if not ok:
        raise ConfigError(f"{where}: unexpected value {value!r} for {key}")


def load_presets(presets_dir: Path = PRESETS_DIR) -> dict[str, dict[str, Any]]:
    paths = sorted(Path(presets_dir).glob("*.yaml"))
    if not paths:
        raise ConfigError(f"{presets_dir}: no preset files (*.yaml)")
    return {p.stem: load_preset(p) for p in paths}
