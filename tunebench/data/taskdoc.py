"""taskdoc: write docs/tasks.md, the reference of every key a task file takes.

The keys, types, defaults and meanings come from tunebench/data/taskkeys.py; every example and
pattern snippet is read from the shipped task files (tasks/*.yaml), so the document shows
what the files say. tests/test_taskdoc.py fails when the key list and the task loader
(tunebench/data/tasks.py) disagree, and when the committed document is out of date.

Usage: python -m tunebench.data.taskdoc [--check] [--out docs/tasks.md] [--tasks tasks]
  (`make docs`). With --check nothing is written; the exit status is 1 when the file
  differs from what would be written.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from tunebench.data.taskkeys import (
    ALWAYS,
    DATASET_PARAMS,
    RUN_PARAMS,
    SECTIONS,
    UNSET,
    Key,
    Section,
)

OUT = Path("docs/tasks.md")
TASKS = Path("tasks")
EXAMPLE_CHARS = 72
KeyPath = tuple[str, ...]


def split_path(dotted: str) -> KeyPath:
    """A dotted path as parts: 'few_shot.examples[]' -> ('few_shot', 'examples', '[]')."""
    return tuple(part for part in dotted.replace("[]", ".[]").split(".") if part)


def _matches(pattern: KeyPath, concrete: KeyPath) -> bool:
    return len(pattern) == len(concrete) and all(
        p == c or p.startswith("<") for p, c in zip(pattern, concrete, strict=True))


def section_for(concrete: KeyPath) -> Section | None:
    """The section documenting the mapping at `concrete`, e.g. ("source", "mirror")."""
    return next((s for s in SECTIONS if _matches(split_path(s.path), concrete)), None)


def key_for(concrete: KeyPath) -> Key | None:
    """The documented key at `concrete` (a named key before a `<placeholder>`)."""
    section = section_for(concrete[:-1])
    if section is None:
        return None
    named = [k for k in section.keys if k.name == concrete[-1]]
    return (named or [k for k in section.keys if k.name.startswith("<")] or [None])[0]


def undocumented(data: Mapping[str, Any], path: KeyPath = ()) -> list[str]:
    """Dotted paths of the keys in a task mapping that no section documents."""
    out = []
    for name, value in data.items():
        child = (*path, str(name))
        if key_for(child) is None:
            out.append(".".join(child))
        elif isinstance(value, Mapping) and section_for(child):
            out += undocumented(value, child)
        elif isinstance(value, list) and section_for((*child, "[]")):
            for item in value:
                if isinstance(item, Mapping):
                    out += undocumented(item, (*child, "[]"))
    return out


def read_shipped(tasks_dir: Path) -> dict[str, dict[str, Any]]:
    """Every task file as written (bases included, `include:` not resolved), by stem."""
    out = {}
    for path in sorted(Path(tasks_dir).glob("*.yaml")):
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        if not isinstance(data, dict):
            raise ValueError(f"{path}: expected a mapping at the top level")
        out[path.stem] = data
    return out


def _walk(value: Any, path: KeyPath = ()) -> Iterator[tuple[KeyPath, Any]]:
    if isinstance(value, Mapping):
        for name, child in value.items():
            yield (*path, str(name)), child
            yield from _walk(child, (*path, str(name)))
    elif isinstance(value, list):
        for item in value:
            yield from _walk(item, (*path, "[]")) if isinstance(item, Mapping) else ()


def shipped_example(pattern: KeyPath, shipped: Mapping[str, Mapping], prefer: str = ""
                    ) -> tuple[str, str, Any] | None:
    """(file stem, key, value) of the first shipped use of `pattern` (`prefer`'s first)."""
    if prefer and prefer not in shipped:
        raise ValueError(f"example_from {prefer!r}: no tasks/{prefer}.yaml")
    order = [prefer] if prefer else sorted(shipped)
    for stem in order:
        for path, value in _walk(shipped[stem]):
            if _matches(pattern, path):
                return stem, path[-1], value
    if prefer:
        raise ValueError(f"example_from {prefer!r}: tasks/{prefer}.yaml has no "
                         f"{'.'.join(pattern)}")
    return None


class _OneLine(yaml.SafeDumper):
    """Strings with line breaks as double-quoted scalars ("a\\nb"), so they stay one line."""


_OneLine.add_representer(str, lambda dumper, text: dumper.represent_scalar(
    "tag:yaml.org,2002:str", text, style='"' if "\n" in text else None))


def flow(value: Any) -> str:
    """A value as one line of YAML flow style (a mapping without its outer braces)."""
    text = yaml.dump(value, Dumper=_OneLine, default_flow_style=True, width=1 << 20,
                     allow_unicode=True, sort_keys=False).strip()
    text = text.removesuffix("...").strip()
    return text[1:-1] if isinstance(value, Mapping) and value else text


def _code(text: str, limit: int = EXAMPLE_CHARS) -> str:
    if len(text) > limit:
        text = text[:limit - 1] + "…"
    return "`" + text.replace("|", "\\|") + "`"


def example_cell(section: Section, key: Key, shipped: Mapping[str, Mapping]) -> str:
    found = shipped_example((*split_path(section.path), key.name), shipped, key.example_from)
    if found is not None:
        stem, name, value = found
        return f"{_code(flow({name: value}))} ({stem})"
    return "—" if key.example is UNSET else _code(flow(key.example))


def default_cell(key: Key) -> str:
    if key.default_text:
        return key.default_text
    if key.required:
        return "required" if key.required == ALWAYS else f"required ({', '.join(key.required)})"
    if key.default is UNSET:
        return "optional"
    return '`""`' if key.default == "" else f"`{flow(key.default)}`"


def _meaning(key: Key) -> str:
    from tunebench.evaluation.parsing import PARSERS

    return key.meaning.replace("{parsers}", ", ".join(f"`{p}`" for p in sorted(PARSERS)))


def section_table(section: Section, shipped: Mapping[str, Mapping]) -> str:
    title = "Top level" if not section.path else f"`{section.path}`"
    closed = ("Unknown keys are rejected." if section.closed
              else "Free-form: the keys are yours to name.")
    lines = [f"### {title}", "", f"{section.note} {closed}".strip(), "",
             "| key | type | required / default | meaning | example (file) |",
             "|---|---|---|---|---|"]
    for key in section.keys:
        cells = [f"`{key.name}`", key.type, default_cell(key), _meaning(key),
                 example_cell(section, key, shipped)]
        lines.append("| " + " | ".join(c.replace("\n", " ") for c in cells) + " |")
    return "\n".join(lines)


def snippet(shipped: Mapping[str, Mapping], stem: str, *paths: str) -> str:
    """A YAML block of `paths` (dotted) of one shipped file, as a fenced code block."""
    picked: dict[str, Any] = {}
    for dotted in paths:
        value: Any = shipped[stem]
        parts = split_path(dotted)
        for part in parts:
            if not isinstance(value, Mapping) or part not in value:
                raise ValueError(f"tasks/{stem}.yaml has no {dotted} (taskdoc snippet)")
            value = value[part]
        node = picked
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    body = yaml.dump(picked, Dumper=_OneLine, sort_keys=False, allow_unicode=True, width=88,
                     default_flow_style=None)
    return f"```yaml\n# tasks/{stem}.yaml\n{body}```"


HEADER = """# Task files: every key

<!-- generated by `python -m tunebench.data.taskdoc` (`make docs`) from \
tunebench/data/taskkeys.py and the shipped task files; do not edit by hand -->

A dataset is one task file, `tasks/<name>.yaml`, plus an entry in `params.yaml`
([below](#paramsyaml-the-datasets-entry-and-its-run)). The loader (`tunebench/data/tasks.py`)
validates the file when any stage or test loads it: an unknown key is refused with the closest
known one, and every error names the file and the key. A dataset's `overrides` in params.yaml
are merged on top of the file with the same rules. Examples below are quoted from the shipped
files (file stem in brackets), cut at {chars} characters."""

PATTERNS = """## Patterns

### One raw split: `all` + `resplit`

A source with a single split (or train and test you do not want) names it as a raw split, by
convention `all`, and `resplit` makes train and test from it exactly as
`datasets.Dataset.train_test_split(test_size=..., seed=...)` does: the first
ceil(test_size * rows) positions of a seeded permutation are test. It applies only when the
raw splits lack `train` or `test`: FPB's mirror has both, so only its Hub source is
re-split. Other raw splits (e.g. `validation`) are kept as they are. The split is row by row:
a text repeated on several rows can land on both sides; label-transform counts test texts
also in train and fails above `label_transform.max_leakage_share`.

{resplit}

### Several splits in one file: `where`

A mirror split may keep only the rows of a file whose columns equal given values. The values
compare with `==` against the values as read from the file. When splits filter one
file, every row of it must be taken by some split, or fetch fails naming the count (a typo'd
value cannot drop rows unseen).

{where}

### Per-split references

Summarization tasks name the reference column(s) per split when they differ: the first column
of a split is its training target; a test prediction is scored against every one, keeping the
best per example and metric. One list (e.g. `references: [summary]`) applies to every split.

{references}

### Label rules

One of three rules, each checked against `labels` at load time (every label produced, nothing
else). Raw values are matched as YAML reads them from the task file and as the data file holds
them: `0` (an integer) does not match `"0"` (a string). Rows whose value the rule does not
cover are quarantined with the reason (`data/labeled/<dataset>/quarantine.jsonl`), and the
stage fails above `label_transform.max_quarantine_share`.

{label_map}

{label_bins}

{label_any}

### Prompt variables

`${{text}}` is the `text_field` column; `fields` adds columns under their own names;
`prompt_vars` adds constants or per-row look-ups; `${{instruction}}` is the rendered
instruction; `${{examples}}` is empty except for a few-shot base prompt. Check the rendered
prompts with `make show-prompts TASK=<dataset> N=3`.

{prompt_vars}"""

PARAMS = """## params.yaml: the dataset's entry and its run

A task file alone is not in the benchmark: `datasets.<name>` in `params.yaml` adds it (the
DVC stages fan out over those keys: `fetch@<name>`, ..., `score@<name>`), and its `run`
names the fine-tuning run it is trained in. **A new dataset needs its own `runs` entry**
(its own adapter, trained on it alone), **or it joins an existing run**, whose `mixture` must
then name it: that changes the run's training data, so the run retrains and every dataset of
it gets new tuned predictions.

```yaml
datasets:
  mydata: {{run: mydata, caps: {{train: 500, test: 400}}}}
runs:
  mydata:
    mixture: {{mydata: 1}}
```

`datasets.<name>` keys (`tunebench.running.params.DATASET_KEYS`):

{dataset_table}

`runs.<run>` keys (`tunebench.running.params.RUN_KEYS`):

{run_table}

## Adding a dataset, step by step

1. Put the data where fetch reads it: a Hub dataset (`source.hub`, pinned to a commit),
   files in the mirror (`source.mirror`: `<mirror>/<dir>/<file>`), or your own files in the
   repository (`source.files`); parquet, CSV, TSV or JSONL. `python -m tunebench.data.pins
   tasks/<name>.yaml` prints the sha256 pins to paste.
2. Write `tasks/<name>.yaml`: `python -m tunebench.data.scaffold <file> [--test <file>]
   --name <name>` shows the columns and label values and writes a draft that loads (guesses
   marked `# REVIEW`), or start from the closest shipped file (`include:` a base to share a
   prompt and label set).
3. Add `datasets.<name>` and a `runs` entry (above) to `params.yaml`.
4. `make show-prompts TASK=<name>` renders prompts; `pytest tests/test_tasks.py` loads every
   task file and checks its label rule covers every raw value of its mirror files (parquet).
5. `make bench DATASETS=<name>` builds only that dataset's stages (and its run's) and the
   report."""


def _params_table(rows: Mapping[str, str]) -> str:
    lines = ["| key | meaning |", "|---|---|"]
    lines += [f"| `{name}` | {meaning} |" for name, meaning in rows.items()]
    return "\n".join(lines)


def render(tasks_dir: Path = TASKS) -> str:
    """The whole of docs/tasks.md."""
    shipped = read_shipped(tasks_dir)
    contents = "\n".join(
        f"- [`{s.path or 'top level'}`](#{_anchor(s)})" for s in SECTIONS)
    tables = "\n\n".join(section_table(s, shipped) for s in SECTIONS)
    patterns = PATTERNS.format(
        resplit=snippet(shipped, "fiqa_sa", "source.hub.splits", "resplit"),
        where=snippet(shipped, "nwgi", "source.mirror"),
        references=snippet(shipped, "dialogsum", "references"),
        label_map=snippet(shipped, "tfns", "label"),
        label_bins=snippet(shipped, "fiqa_sa", "label"),
        label_any=snippet(shipped, "hr_bias", "label", "labels"),
        prompt_vars=snippet(shipped, "fiqa_sa", "prompt_vars"),
    )
    params = PARAMS.format(dataset_table=_params_table(DATASET_PARAMS),
                           run_table=_params_table(RUN_PARAMS))
    parts = [HEADER.format(chars=EXAMPLE_CHARS), "## Keys", contents, tables, patterns, params]
    return "\n\n".join(parts) + "\n"


def _anchor(section: Section) -> str:
    """GitHub's anchor of a section heading: lower case, punctuation dropped, spaces -> -."""
    title = section.path or "top level"
    kept = "".join(c for c in title.lower() if c.isalnum() or c in " -_")
    return kept.replace(" ", "-")


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tunebench.data.taskdoc", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=OUT, help=f"file to write (default: {OUT})")
    p.add_argument("--tasks", type=Path, default=TASKS,
                   help=f"folder of the shipped task files (default: {TASKS})")
    p.add_argument("--check", action="store_true",
                   help="write nothing; exit 1 when --out differs from what would be written")
    args = p.parse_args(argv)
    try:
        text = render(args.tasks)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    current = args.out.read_text(encoding="utf-8") if args.out.is_file() else None
    if args.check:
        if current != text:
            state = "is missing" if current is None else "is out of date"
            print(f"{args.out} {state}: run `python -m tunebench.data.taskdoc` (make docs)",
                  file=sys.stderr)
            return 1
        return 0
    if current != text:
        from tunebench.io import write_text

        args.out.parent.mkdir(parents=True, exist_ok=True)
        write_text(args.out, text)
    print(f"{args.out}: {'written' if current != text else 'up to date'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
