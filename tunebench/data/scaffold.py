"""Draft a task file from your own data file(s): columns, label values, a first tasks/<name>.yaml.

Reads one file (it becomes the raw split `all`, split into train/test by a seeded, grouped
`resplit`) or a train and a test file, prints each column (type, distinct values, an example),
guesses the text column (the longest texts) and the label column (few distinct values), and
writes a draft task file that loads: local `source.files` pinned by sha256, the label map from
the values seen (each value to itself, lowercased), an instruction naming the labels, and the
strict parser. Lines to review are marked `# REVIEW`. It also prints the params.yaml lines that
add the dataset and its run. Nothing is overwritten unless --force.

    python -m tunebench.data.scaffold data/mine/all.csv --name mine
    python -m tunebench.data.scaffold data/mine/train.tsv --test data/mine/test.jsonl --name mine \\
        --text tweet --label sentiment
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from tunebench.config import ConfigError
from tunebench.data.fetch import check_name
from tunebench.data.tasks import load_task
from tunebench.io import DataError, read_table, sha256_file

MAX_LABELS = 20  # more distinct values than this: not a label column
LABEL_NAMES = ("label", "labels", "sentiment", "class", "category", "target", "y")


def describe(df) -> list[dict[str, Any]]:
    """Per column: name, dtype, distinct values, mean text length, an example value."""
    out = []
    for column in df.columns:
        values = df[column].dropna()
        text = values.astype(str)
        out.append({"column": str(column), "dtype": str(df[column].dtype),
                    "distinct": int(values.nunique()), "missing": int(len(df) - len(values)),
                    "mean_chars": float(text.str.len().mean()) if len(text) else 0.0,
                    "example": text.iloc[0][:60] if len(text) else ""})
    return out


def guess_text(columns: Sequence[dict]) -> str:
    """The column of the longest texts (names and ids aside: a text varies row to row)."""
    candidates = [c for c in columns if c["distinct"] > MAX_LABELS] or list(columns)
    return max(candidates, key=lambda c: c["mean_chars"])["column"]


def guess_label(columns: Sequence[dict], text: str) -> str:
    """A conventionally named column, else the one with the fewest distinct values (>= 2)."""
    few = [c for c in columns if c["column"] != text and 2 <= c["distinct"] <= MAX_LABELS]
    if not few:
        raise DataError(f"no column has 2 to {MAX_LABELS} distinct values to serve as the label; "
                        "name one with --label")
    named = [c for c in few if c["column"].lower() in LABEL_NAMES]
    return (named or sorted(few, key=lambda c: c["distinct"]))[0]["column"]


def label_name(value: Any) -> str:
    """A label spelled as the model will be asked to answer: lowercased, spaces to `_`."""
    return re.sub(r"\s+", "_", str(value).strip().lower())


def draft(name: str, files: dict[str, Path], frames: dict[str, Any], text: str, label: str,
          repo: Path) -> dict[str, Any]:
    """The task file's content; `files` maps a raw split to a file under `repo`."""
    values = sorted({v for df in frames.values() for v in df[label].dropna().tolist()}, key=str)
    names = [label_name(v) for v in values]
    if len(set(names)) != len(names) or not all(names):
        raise DataError(f"label column {label!r}: values {values} do not make distinct label "
                        "names; write the label map by hand")
    task: dict[str, Any] = {
        "name": name, "version": 1, "type": "classification",
        "description": f"Own data ({', '.join(str(p) for p in files.values())}).",
        "source": {"files": {split: {"file": path.resolve().relative_to(repo.resolve())
                                     .as_posix(), "sha256": sha256_file(path)}
                             for split, path in files.items()}},
        "text_field": text,
        "label": {"field": label, "map": dict(zip(values, names, strict=True))},
        "labels": names,
        "instruction": f"What is the label of this text? Please choose an answer from "
                       f"{{{'/'.join(names)}}}.",
        "template": "Instruction: ${instruction}\nInput: ${text}\nAnswer: ",
        "parser": "strict",
        "metrics": ["accuracy", "f1_weighted", "f1_macro"],
    }
    if "all" in files:
        task["resplit"] = {"from": "all", "test_size": 0.2, "seed": 42, "group": text}
    return task


def render(task: dict[str, Any], columns: dict[str, list[dict]]) -> str:
    """The YAML text, with the guessed lines marked for review and the columns listed."""
    listing = "\n".join(f"#   {split}: " + ", ".join(f"{c['column']} ({c['dtype']}, "
                                                      f"{c['distinct']} distinct)" for c in cols)
                        for split, cols in columns.items())
    head = (f"# Draft task file written by `python -m tunebench.data.scaffold`: review the lines\n"
            f"# marked REVIEW, then `make show-prompts TASK={task['name']}`. Columns seen:\n"
            f"{listing}\n")
    body = yaml.safe_dump(task, sort_keys=False, allow_unicode=True, width=1000)
    marked = []
    for line in body.splitlines():
        if line.startswith(("text_field:", "label:", "instruction:", "description:")):
            line += "  # REVIEW"
        marked.append(line)
    return head + "\n".join(marked) + "\n"


def params_lines(name: str) -> str:
    return (f"# Add to params.yaml (a run of its own; or join a run's mixture instead):\n"
            f"datasets:\n  {name}: {{run: {name}, caps: {{train: 500, test: 400}}}}\n"
            f"runs:\n  {name}:\n    mixture: {{{name}: 1}}\n")


def scaffold(name: str, train: Path, test: Path | None, text: str | None, label: str | None,
             tasks_dir: Path, repo: Path, force: bool = False) -> tuple[Path, str, str]:
    """Write tasks/<name>.yaml; return (its path, its text, the params lines)."""
    check_name(name, "--name")
    out = Path(tasks_dir) / f"{name}.yaml"
    if out.exists() and not force:
        raise DataError(f"{out} exists; pass --force to replace it")
    files = {"train": Path(train), "test": Path(test)} if test else {"all": Path(train)}
    for path in files.values():
        if not path.resolve().is_relative_to(Path(repo).resolve()):
            raise DataError(f"{path} lies outside the repository {repo}: source.files paths "
                            "are relative to it (copy the file in, e.g. under data/)")
    frames = {split: read_table(path) for split, path in files.items()}
    columns = {split: describe(df) for split, df in frames.items()}
    first = next(iter(columns.values()))
    text = text or guess_text(first)
    label = label or guess_label(first, text)
    for split, df in frames.items():
        for column in (text, label):
            if column not in df.columns:
                raise DataError(f"{files[split]}: no column {column!r}; has "
                                f"{', '.join(map(str, df.columns))}")
    body = render(draft(name, files, frames, text, label, Path(repo)), columns)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(body, encoding="utf-8")
    try:
        load_task(out)  # the draft must load as written
    except ConfigError as exc:
        raise DataError(f"{out}: the draft does not load ({exc}); please report this") from None
    return out, body, params_lines(name)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tunebench.data.scaffold", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("train", type=Path, help="the data file (CSV, TSV, JSONL or parquet): the "
                   "train split with --test, else all rows (split 80/20 by a grouped resplit)")
    p.add_argument("--test", type=Path, default=None, help="the test split's file")
    p.add_argument("--name", required=True, help="the dataset name (tasks/<name>.yaml)")
    p.add_argument("--text", default=None, help="the text column (default: guessed)")
    p.add_argument("--label", default=None, help="the label column (default: guessed)")
    p.add_argument("--tasks", type=Path, default=Path("tasks"), help="task files folder")
    p.add_argument("--repo", type=Path, default=Path("."), help="the repository root")
    p.add_argument("--force", action="store_true", help="replace an existing task file")
    args = p.parse_args(argv)
    try:
        out, body, params = scaffold(args.name, args.train, args.test, args.text, args.label,
                                     args.tasks, args.repo, args.force)
    except (ConfigError, DataError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(body)
    print(f"# written to {out}\n")
    print(params, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
