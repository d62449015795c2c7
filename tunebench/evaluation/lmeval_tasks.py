"""Export tunebench's classification tasks as lm-evaluation-harness (lm-eval) tasks.

python -m tunebench.evaluation.lmeval_tasks [--datasets fpb ...] [--systems base tuned] [--n N]
                                 [--out .cache/crosscheck/tasks]

For every dataset and system, writes <out>/tunebench_<dataset>_<system>.yaml (an lm-eval
`multiple_choice` task) and <out>/data/<dataset>_<system>.jsonl: the capped test ids of
data/instructions/<run>/<dataset>/test.jsonl (the first --n of them, default all), one row
{"id", "prompt", "label", "target", "prompt_sha256"} each. "prompt" is the exact text
tunebench's predict stage gives the model (rendered through the model's chat template where
its prompt_format says so), "target" the index of the label in doc_to_choice. The YAML reads
the JSONL offline (`dataset_path: json`, an absolute `data_files` path): run it with
`lm_eval --include_path <out> --tasks tunebench_fpb_base ...`.

Systems: base and tuned are asked as predict asks them (params `models.<m>.prompt_format`);
base-raw is the un-tuned model on the raw prompt. The tokens lm-eval then scores are
documented in docs/crosscheck.md: `target_delimiter: ""` keeps prompt + label the same text
as tunebench's, but lm-eval moves the prompt's trailing whitespace into the answer.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tunebench.config import ConfigError
from tunebench.io import DataError, read_json, read_jsonl, write_jsonl, write_text

SYSTEMS = ("base", "tuned", "base-raw")
FINGPT = ("fpb", "fiqa_sa", "tfns", "nwgi")
EXPORT_DIR = Path(".cache/crosscheck/tasks")


@dataclass(frozen=True)
class ExportedTask:
    """One exported lm-eval task: where its files are and what it asks."""

    name: str
    dataset: str
    system: str
    yaml_path: Path
    data_path: Path
    labels: tuple[str, ...]
    prompt_format: str
    n: int


def task_name(dataset: str, system: str) -> str:
    return f"tunebench_{dataset}_{system.replace('-', '_')}"


def system_format(spec, system: str) -> tuple[str, str]:
    """(kind, prompt format) of an exported system: kind is the model tunebench trains
    ("base" or "tuned"), the format the one predict uses for it (base-raw: raw)."""
    if system not in SYSTEMS:
        raise ConfigError(f"unknown system {system!r}; expected one of {list(SYSTEMS)}")
    if system == "base-raw":
        return "base", "raw"
    return system, spec.format_for(system)


def prompt_field(task: dict[str, Any], kind: str) -> str:
    """The instructions field predict reads: the few-shot prompt for a few-shot base model."""
    return "prompt_base" if kind == "base" and task.get("base_prompt") == "few_shot" else "prompt"


def export_rows(rows: list[dict], labels: list[str], prompts: list[str],
                where: str) -> list[dict[str, Any]]:
    """The JSONL rows of one export: test ids with their exact prompt and target index."""
    from tunebench.models.generate import prompt_sha256

    out = []
    for lineno, (row, prompt) in enumerate(zip(rows, prompts, strict=True), start=1):
        label = row["completion"]
        if label not in labels:
            raise DataError(f"{where}:{lineno}: completion {label!r} is not one of {labels}")
        out.append({"id": row["id"], "prompt": prompt, "label": label,
                    "target": labels.index(label), "prompt_sha256": prompt_sha256(prompt)})
    return out


def task_config(name: str, data_path: Path, labels: list[str], info: dict[str, Any],
                version: Any) -> dict[str, Any]:
    """The lm-eval task config. target_delimiter "" because the prompt already ends in the
    separator tunebench uses ("Answer: "), so context + continuation is tunebench's text."""
    return {
        "task": name,
        "dataset_path": "json",
        "dataset_kwargs": {"data_files": {"test": str(Path(data_path).resolve())}},
        "test_split": "test",
        "output_type": "multiple_choice",
        "doc_to_text": "prompt",  # a column name: lm-eval returns the field itself, no Jinja
        "doc_to_choice": list(labels),
        "doc_to_target": "target",
        "target_delimiter": "",
        "num_fewshot": 0,
        "metric_list": [{"metric": "acc", "aggregation": "mean", "higher_is_better": True}],
        "metadata": {"version": version, "tunebench": info},
    }


def write_task(out_dir: Path, dataset: str, system: str, rows: list[dict], labels: list[str],
               info: dict[str, Any], version: Any) -> ExportedTask:
    """Write one task's JSONL and YAML under out_dir."""
    name = task_name(dataset, system)
    data_path = (Path(out_dir) / "data" / f"{dataset}_{system}.jsonl").resolve()
    write_jsonl(data_path, rows)
    config = task_config(name, data_path, labels, {**info, "n": len(rows)}, version)
    head = (f"# lm-eval task exported by `python -m tunebench.evaluation.lmeval_tasks`: "
            f"{dataset}, system {system}.\n"
            "# Regenerate it rather than editing (data_files is an absolute path).\n")
    yaml_path = Path(out_dir) / f"{name}.yaml"
    write_text(yaml_path, head + yaml.safe_dump(config, sort_keys=False, allow_unicode=True,
                                                width=100))
    return ExportedTask(name, dataset, system, yaml_path, data_path, tuple(labels),
                        info["prompt_format"], len(rows))


def load_exported(yaml_path: Path) -> ExportedTask:
    """An exported task read back from its YAML (the ingest and the cross-check use it)."""
    path = Path(yaml_path)
    if not path.is_file():
        raise DataError(f"{path}: task file not found")
    try:
        config = yaml.safe_load(path.read_text(encoding="utf-8"))
        info = config["metadata"]["tunebench"]
        return ExportedTask(config["task"], info["dataset"], info["system"], path,
                            Path(config["dataset_kwargs"]["data_files"]["test"]),
                            tuple(config["doc_to_choice"]), info["prompt_format"], info["n"])
    except (yaml.YAMLError, TypeError, KeyError) as exc:
        raise DataError(f"{path}: not a task exported by tunebench.evaluation.lmeval_tasks "
                        f"(missing or bad {exc})") from None


def causal_model(params: dict, run: str, system: str):
    """The causal LM whose prompts a run's system uses: the run's model, or for an encoder
    run its zero-shot causal LM (base only); None when the system has no causal LM."""
    from tunebench.running.params import model_spec, run_entry, run_model

    spec = run_model(params, run)
    if spec.family == "causal_lm":
        return spec
    zero_shot = run_entry(params, run).get("zero_shot") or {}
    if system == "tuned" or "model" not in zero_shot:
        return None
    return model_spec(params, zero_shot["model"], f"runs.{run}.zero_shot.model")


def export_dataset(params: dict, dataset: str, systems: list[str], instructions_root: Path,
                   out_dir: Path, n: int | None) -> list[ExportedTask]:
    """Export one dataset for each system that a causal LM answers."""
    from tunebench.models.loading import apply_prompt_format, load_tokenizer, resolve_model_dir
    from tunebench.running.params import dataset_entry, section

    run = dataset_entry(params, dataset).run
    folder = Path(instructions_root) / run / dataset
    task = read_json(folder / "task.json")
    if task.get("type", "classification") != "classification":
        raise ConfigError(f"{folder}/task.json: {dataset} is a {task['type']} task; only "
                          f"classification tasks have label choices to export")
    fields = ("id", "completion", "prompt", *(("prompt_base",) if task.get("base_prompt")
                                               == "few_shot" else ()))
    rows = read_jsonl(folder / "test.jsonl", fields)[:n]
    exported = []
    for system in systems:
        spec = causal_model(params, run, system)
        if spec is None:
            print(f"lmeval_tasks: {dataset} {system}: no causal LM answers it; skipped")
            continue
        kind, fmt = system_format(spec, system)
        model_dir = resolve_model_dir(spec, Path(section(params, "paths")["model_cache"]))
        tokenizer = load_tokenizer(spec, model_dir)
        key = prompt_field(task, kind)
        prompts = [apply_prompt_format(tokenizer, r[key], fmt, spec.system_prompt) for r in rows]
        info = {"dataset": dataset, "system": system, "kind": kind, "prompt_format": fmt,
                "prompt_field": key, "model": spec.name, "run": run,
                "instructions": str(folder), "task_version": task.get("version")}
        out_rows = export_rows(rows, list(task["labels"]), prompts, str(folder / "test.jsonl"))
        exported.append(write_task(out_dir, dataset, system, out_rows, list(task["labels"]),
                                   info, task.get("version")))
    return exported


def classification_datasets(params: dict, instructions_root: Path) -> list[str]:
    """Every dataset of params whose instructions say it is a classification task."""
    from tunebench.running.params import dataset_entry

    names = []
    for name in params.get("datasets") or {}:
        path = Path(instructions_root) / dataset_entry(params, name).run / name / "task.json"
        if path.is_file() and read_json(path).get("type", "classification") == "classification":
            names.append(name)
    return names


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--params", type=Path, default=Path("params.yaml"))
    p.add_argument("--datasets", nargs="+", help="keys of params `datasets` (default: every "
                   "classification dataset whose instructions exist)")
    p.add_argument("--systems", nargs="+", choices=SYSTEMS, default=["base", "tuned"])
    p.add_argument("--n", type=int, help="export the first N capped test ids (default: all)")
    p.add_argument("--instructions", type=Path, default=Path("data/instructions"),
                   help="root of the format-instructions outputs (<root>/<run>/<dataset>)")
    p.add_argument("--out", type=Path, default=EXPORT_DIR, help="folder for YAML + JSONL")
    return p


def main(argv: list[str] | None = None) -> int:
    from tunebench.cli import run_command

    args = build_parser().parse_args(argv)
    if args.n is not None and args.n < 1:
        print(f"error: --n must be >= 1, got {args.n}", file=sys.stderr)
        return 2
    return run_command(lambda: _run(args))


def _run(args: argparse.Namespace) -> None:
    from tunebench.running.params import load_params

    params = load_params(args.params)
    names = args.datasets or classification_datasets(params, args.instructions)
    if not names:
        raise DataError(f"{args.instructions}: no classification instructions to export "
                        f"(run `dvc repro format-instructions` first)")
    for dataset in names:
        for task in export_dataset(params, dataset, args.systems, args.instructions,
                                   args.out, args.n):
            print(f"lmeval_tasks: {task.yaml_path} ({task.n} rows, {task.prompt_format})")

if __name__ == "__main__":
    sys.exit(main())
