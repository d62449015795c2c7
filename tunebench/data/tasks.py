"""The task registry: one YAML file per dataset, validated on load.

A task file says where the data comes from (a Hugging Face dataset pinned to a commit, or
explicitly ``pinned: false``; or a local mirror laid out as ``<mirror>/<dir>/<file>.parquet``,
each file pinned by sha256), how raw rows become
canonical examples (text field, label rule, extra prompt fields), and how an example is
rendered as an instruction. ``type`` is ``classification`` (a label rule and label names;
the default) or ``summarization`` (``references``: the column(s) holding the reference
summaries, one list for every split or a mapping split -> list, e.g. DialogSum's test split
has three references per dialogue and its training split one). Files may ``include:`` a
shared base (e.g. the four financial-sentiment datasets share ``_fin_sentiment.yaml``); the
including file wins key by key. Every error names the file and the field.
"""

from __future__ import annotations

import codecs
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from string import Template
from typing import Any

import yaml

from tunebench.config import ConfigError, check_keys, deep_merge

TASK_KEYS = {
    "include", "name", "version", "description", "license", "notes", "type", "source",
    "resplit", "text_field", "fields", "label", "labels", "instruction", "template",
    "prompt_vars", "few_shot", "base_prompt", "truncate", "parser", "metrics", "published",
    "references", "rename",
}
TASK_TYPES = ("classification", "summarization")
COMMON_KEYS = ("name", "version", "source", "text_field", "instruction", "template", "metrics")
REQUIRED_KEYS = {"classification": (*COMMON_KEYS, "label", "labels", "parser"),
                 "summarization": (*COMMON_KEYS, "references")}


@dataclass(frozen=True)
class HubFile:
    """A raw split read from one file of a Hub dataset repo rather than through `datasets`
    (which runs no loading scripts since 4.0): a text file, or `member` of a zip, one row per
    line, split at the last `sep`s into `columns` (the last field stripped of whitespace)."""

    file: str  # path inside the repo, e.g. data/FinancialPhraseBank-v1.0.zip
    columns: tuple[str, ...]
    sep: str
    member: str | None = None  # a zip member's path; None: `file` itself is the text
    encoding: str = "utf-8"
    sha256: str | None = None  # pins the downloaded file's content


@dataclass(frozen=True)
class HubSource:
    id: str
    revision: str  # a 40-hex commit, unless pinned is false (then a branch, e.g. main)
    config: str | None = None
    # raw split name -> one hub split, or several concatenated in order
    splits: dict[str, list[str]] = field(default_factory=dict)
    files: dict[str, HubFile] = field(default_factory=dict)  # raw split -> a file of the repo
    pinned: bool = True  # false: read `revision` as it is now (the commit is recorded)


@dataclass(frozen=True)
class MirrorSplit:
    file: str  # .parquet, .csv, .tsv or .jsonl
    where: dict[str, Any] = field(default_factory=dict)  # column -> required value
    sha256: str | None = None  # pins the file's content; fetch refuses another


@dataclass(frozen=True)
class MirrorSource:
    dir: str
    splits: dict[str, MirrorSplit] = field(default_factory=dict)


@dataclass(frozen=True)
class Resplit:
    """Make train/test from one raw split the way `datasets.Dataset.train_test_split` does."""

    source: str
    test_size: float
    seed: int
    # A column whose (case- and space-folded) value keeps its rows together on one side; None
    # splits row by row.
    group: str | None = None


@dataclass(frozen=True)
class LabelRule:
    """Exactly one of: a value map on `field`, right-open bins on `field`, or any-of booleans."""

    field: str | None = None
    map: dict[Any, str] | None = None
    bin_edges: tuple[float, ...] | None = None
    bin_labels: tuple[str, ...] | None = None
    any_of: tuple[str, ...] | None = None


@dataclass(frozen=True)
class Task:
    name: str
    path: Path
    version: int
    hub: HubSource | None
    mirror: MirrorSource | None
    resplit: Resplit | None
    text_field: str
    fields: dict[str, str]  # prompt variable -> raw column, copied beside the text
    label: LabelRule | None  # classification only
    labels: tuple[str, ...]  # classification only; () for summarization
    instruction: str
    template: str
    prompt_vars: dict[str, Any]  # variable -> constant, or {field, map} looked up per row
    parser: str
    metrics: tuple[str, ...]
    type: str = "classification"
    # summarization: split -> reference columns ("*" = every split without its own entry)
    references: dict[str, tuple[str, ...]] = field(default_factory=dict)
    description: str = ""
    license: str = ""
    notes: str = ""
    truncate: dict[str, Any] = field(default_factory=dict)
    few_shot: dict[str, Any] = field(default_factory=dict)
    base_prompt: str = "zero_shot"
    # Published reference results: [{system, metric: value..., source}], shown in the report.
    published: tuple[dict[str, Any], ...] = ()
    # Local data files (source.files), relative to the repository, each pinned by sha256.
    files: MirrorSource | None = None
    # raw split (or "*": every split) -> {column in the source: column name the task uses}
    rename: dict[str, dict[str, str]] = field(default_factory=dict)

    def raw_columns(self, split: str | None = None) -> list[str]:
        """Columns a raw split (canonical name `split`) must have for this task."""
        cols = [self.text_field, *self.fields.values()]
        if self.label is not None:
            cols += [self.label.field] if self.label.field else list(self.label.any_of or ())
        if self.type == "summarization":
            cols += list(self.reference_columns(split))
        cols += [v["field"] for v in self.prompt_vars.values() if isinstance(v, Mapping)]
        if self.resplit is not None and self.resplit.group and split == self.resplit.source:
            cols.append(self.resplit.group)
        return list(dict.fromkeys(cols))

    def renames(self, split: str) -> dict[str, str]:
        """{source column: task column} for a raw split: the `"*"` entry, then the split's."""
        return {**self.rename.get("*", {}), **self.rename.get(split, {})}

    def reference_columns(self, split: str | None) -> tuple[str, ...]:
        """The reference-summary columns of a split (the first one is the training target)."""
        if split in self.references:
            return self.references[split]
        if "*" in self.references:
            return self.references["*"]
        raise ConfigError(f"{self.path}: references has no entry for split {split!r} "
                          f"(give a list for every split, or one per split)")


def read_task_yaml(path: Path) -> dict[str, Any]:
    """Read a task file and resolve its `include:` chain (relative to the including file)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: task file not found")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    include = data.pop("include", None)
    if include is None:
        return data
    return deep_merge(read_task_yaml(path.parent / include), data)


def _check_types(data: Mapping[str, Any], where: str) -> None:
    """The list, mapping and string fields of a task file have those types."""
    for key, kind in (("labels", list), ("metrics", list), ("fields", dict),
                      ("prompt_vars", dict), ("published", list), ("truncate", dict),
                      ("few_shot", dict)):
        if data.get(key) is not None and not isinstance(data[key], kind):
            noun = "a list" if kind is list else "a mapping"
            raise ConfigError(f"{where}: {key}: expected {noun}, got "
                              f"{type(data[key]).__name__} {data[key]!r}")
    for key in ("text_field", "instruction", "template", "parser"):
        if not isinstance(data[key], str):
            raise ConfigError(f"{where}: {key}: expected a string, got {data[key]!r}")


def load_task(path: Path, overrides: Mapping[str, Any] | None = None) -> Task:
    """Load, merge `overrides` (from params.yaml) and validate one task file."""
    path = Path(path)
    data = read_task_yaml(path)
    if overrides:
        data = deep_merge(data, overrides)
    where = str(path)
    task_type = data.get("type", "classification")
    if task_type not in TASK_TYPES:
        raise ConfigError(f"{where}: type: expected one of {list(TASK_TYPES)}, got {task_type!r}")
    check_keys(data, TASK_KEYS - {"include"}, where, REQUIRED_KEYS[task_type])
    if task_type == "summarization":
        for key in ("label", "labels"):
            if key in data:
                raise ConfigError(f"{where}: {key}: a summarization task has references, "
                                  "not labels")
        data.setdefault("parser", "summary")
    if data["name"] != path.stem:
        raise ConfigError(f"{where}: name '{data['name']}' must match the file name '{path.stem}'")
    _check_types(data, where)
    labels = tuple(str(x) for x in data.get("labels") or ())
    if task_type == "classification" and (len(set(labels)) != len(labels) or not labels):
        raise ConfigError(f"{where}: labels must be a non-empty list of distinct names")
    hub, mirror, files = _parse_source(data["source"], f"{where}: source")
    task = Task(
        name=data["name"],
        path=path,
        version=_int(data["version"], f"{where}: version"),
        hub=hub,
        mirror=mirror,
        files=files,
        resplit=_parse_resplit(data.get("resplit"), f"{where}: resplit"),
        text_field=str(data["text_field"]),
        fields=dict(data.get("fields") or {}),
        label=_parse_label(data["label"], labels, f"{where}: label") if labels else None,
        labels=labels,
        instruction=str(data["instruction"]),
        template=str(data["template"]),
        prompt_vars=dict(data.get("prompt_vars") or {}),
        parser=str(data["parser"]),
        metrics=tuple(data["metrics"]),
        description=str(data.get("description", "")),
        license=str(data.get("license", "")),
        notes=str(data.get("notes", "")),
        truncate=dict(data.get("truncate") or {}),
        few_shot=dict(data.get("few_shot") or {}),
        base_prompt=str(data.get("base_prompt", "zero_shot")),
        published=tuple(data.get("published") or ()),
        type=task_type,
        references=_parse_references(data.get("references"), f"{where}: references"),
        rename=_parse_rename(data.get("rename"), f"{where}: rename"),
    )
    _check_prompt(task, where)
    return task


def _int(value: Any, where: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise ConfigError(f"{where}: expected an integer, got {value!r}")
    return value


def _parse_source(src: Any, where: str) -> tuple[HubSource | None, MirrorSource | None,
                                                 MirrorSource | None]:
    check_keys(src, {"hub", "mirror", "files"}, where)
    hub = mirror = files = None
    if "hub" in src:
        hub = _parse_hub(src["hub"], f"{where}.hub")
    if "mirror" in src:
        m = src["mirror"]
        check_keys(m, {"dir", "splits"}, f"{where}.mirror", ("dir", "splits"))
        mirror = MirrorSource(dir=m["dir"], splits=_parse_file_splits(
            m["splits"], f"{where}.mirror.splits", pinned=False))
    if "files" in src:
        if hub is not None or mirror is not None:
            raise ConfigError(f"{where}: 'files' (local data) is the only source of its task; "
                              "drop 'hub' and 'mirror'")
        files = MirrorSource(dir=".", splits=_parse_file_splits(src["files"], f"{where}.files",
                                                                pinned=True))
    if hub is None and mirror is None and files is None:
        raise ConfigError(f"{where}: needs a 'hub', a 'mirror' or a 'files' source")
    return hub, mirror, files


def _parse_file_splits(spec: Any, where: str, pinned: bool) -> dict[str, MirrorSplit]:
    """{raw split: {file, sha256, where}}; `pinned`: every file must carry its sha256."""
    if not isinstance(spec, Mapping) or not spec:
        raise ConfigError(f"{where}: expected a mapping split -> {{file}}, got {spec!r}")
    splits = {}
    for name, entry in spec.items():
        at = f"{where}.{name}"
        if pinned and isinstance(entry, Mapping) and "sha256" not in entry:
            raise ConfigError(f"{at}: a local file needs its sha256 pin; `python -m "
                              "tunebench.data.pins <task file>` prints them to paste")
        check_keys(entry, {"file", "where", "sha256"}, at, ("file",))
        digest = entry.get("sha256")
        if digest is not None and not re.fullmatch(r"[0-9a-f]{64}", str(digest)):
            raise ConfigError(f"{at}.sha256: expected 64 lowercase hex digits, got {digest!r}; "
                              "`python -m tunebench.data.pins <task file>` prints them")
        if not isinstance(entry.get("where") or {}, Mapping):
            raise ConfigError(f"{at}.where: expected a mapping column -> value")
        splits[name] = MirrorSplit(file=str(entry["file"]), sha256=digest,
                                   where=dict(entry.get("where") or {}))
    return splits


def _parse_hub(h: Any, where: str) -> HubSource:
    """`source.hub`: id, a pinned revision (or `pinned: false`), and per raw split a hub
    split name, a list of them, or a file of the repo (see HubFile)."""
    check_keys(h, {"id", "config", "revision", "pinned", "splits"}, where,
               ("id", "revision", "splits"))
    pinned, revision = h.get("pinned", True), str(h["revision"])
    if not isinstance(pinned, bool):
        raise ConfigError(f"{where}.pinned: expected true or false, got {pinned!r}")
    if pinned and not re.fullmatch(r"[0-9a-f]{40}", revision):
        raise ConfigError(
            f"{where}.revision: expected a 40-hex commit, got {revision!r}; look it up at "
            f"https://huggingface.co/datasets/{h['id']}/commits/main, or set pinned: false "
            f"(a branch read as it is, its commit recorded)")
    if not pinned and re.fullmatch(r"[0-9a-f]{40}", revision):
        raise ConfigError(f"{where}: revision {revision} is a commit, so the source is pinned; "
                          f"remove pinned: false")
    if not isinstance(h["splits"], Mapping) or not h["splits"]:
        raise ConfigError(f"{where}.splits: expected a mapping raw split -> hub split(s)")
    splits, files = {}, {}
    for name, spec in h["splits"].items():
        if isinstance(spec, Mapping):
            files[name] = _parse_hub_file(spec, f"{where}.splits.{name}")
        elif isinstance(spec, str) or (isinstance(spec, list) and spec
                                       and all(isinstance(s, str) for s in spec)):
            splits[name] = [spec] if isinstance(spec, str) else list(spec)
        else:
            raise ConfigError(f"{where}.splits.{name}: expected a hub split, a list of them or "
                              f"a file mapping, got {spec!r}")
    return HubSource(id=h["id"], revision=revision, config=h.get("config"), splits=splits,
                     files=files, pinned=pinned)


def _parse_hub_file(spec: Mapping[str, Any], where: str) -> HubFile:
    check_keys(spec, {"file", "member", "encoding", "sep", "columns", "sha256"}, where,
               ("file", "sep", "columns"))
    columns = spec["columns"]
    if (not isinstance(columns, list) or len(columns) < 2
            or not all(isinstance(c, str) and c for c in columns)
            or len(set(columns)) != len(columns)):
        raise ConfigError(f"{where}.columns: expected two or more distinct column names, "
                          f"got {columns!r}")
    if not isinstance(spec["sep"], str) or not spec["sep"]:
        raise ConfigError(f"{where}.sep: expected a non-empty string, got {spec['sep']!r}")
    encoding = str(spec.get("encoding", "utf-8"))
    try:
        codecs.lookup(encoding)
    except LookupError:
        raise ConfigError(f"{where}.encoding: unknown encoding {encoding!r}") from None
    digest = spec.get("sha256")
    if digest is not None and not re.fullmatch(r"[0-9a-f]{64}", str(digest)):
        raise ConfigError(f"{where}.sha256: expected 64 lowercase hex digits, got {digest!r}")
    member = spec.get("member")
    return HubFile(file=str(spec["file"]), columns=tuple(columns), sep=spec["sep"],
                   member=None if member is None else str(member), encoding=encoding,
                   sha256=digest)


def _parse_references(spec: Any, where: str) -> dict[str, tuple[str, ...]]:
    """A list of columns (every split) or a mapping split -> list of columns."""
    if spec is None:
        return {}
    by_split = {"*": spec} if isinstance(spec, list) else spec
    if not isinstance(by_split, Mapping) or not by_split:
        raise ConfigError(f"{where}: expected a list of columns or a mapping split -> list")
    out = {}
    for split, columns in by_split.items():
        if (not isinstance(columns, list) or not columns
                or not all(isinstance(c, str) and c for c in columns)
                or len(set(columns)) != len(columns)):
            raise ConfigError(f"{where}{'' if split == '*' else '.' + str(split)}: expected a "
                              f"non-empty list of distinct column names, got {columns!r}")
        out[str(split)] = tuple(columns)
    return out


def _parse_resplit(spec: Any, where: str) -> Resplit | None:
    if spec is None:
        return None
    check_keys(spec, {"from", "test_size", "seed", "group"}, where, ("from", "test_size", "seed"))
    size = spec["test_size"]
    if not isinstance(size, float) or not 0 < size < 1:
        raise ConfigError(f"{where}.test_size: expected a fraction in (0, 1), got {size!r}")
    group = spec.get("group")
    if group is not None and (not isinstance(group, str) or not group):
        raise ConfigError(f"{where}.group: expected a column name, got {group!r}")
    return Resplit(source=spec["from"], test_size=size, seed=_int(spec["seed"], f"{where}.seed"),
                   group=group)


def _parse_rename(spec: Any, where: str) -> dict[str, dict[str, str]]:
    """`rename: {<raw split or "*">: {<source column>: <task column>}}`, strings only, and no
    two source columns of a split renamed to one name."""
    if spec is None:
        return {}
    if not isinstance(spec, Mapping):
        raise ConfigError(f"{where}: expected a mapping raw split -> {{source column: column}}, "
                          f"got {spec!r}")
    out = {}
    for split, columns in spec.items():
        if not isinstance(split, str) or not isinstance(columns, Mapping) or not columns:
            raise ConfigError(f"{where}.{split}: expected a non-empty mapping source column -> "
                              f"column, got {columns!r}")
        for old, new in columns.items():
            if not isinstance(old, str) or not isinstance(new, str) or not old or not new:
                raise ConfigError(f"{where}.{split}: {old!r}: {new!r}: column names are "
                                  "non-empty strings")
        if len(set(columns.values())) != len(columns):
            raise ConfigError(f"{where}.{split}: two columns renamed to one name: {columns}")
        out[split] = dict(columns)
    return out


def _parse_label(spec: Any, labels: tuple[str, ...], where: str) -> LabelRule:
    check_keys(spec, {"field", "map", "bins", "any_of"}, where)
    if "map" in spec and not isinstance(spec["map"], Mapping):
        raise ConfigError(f"{where}.map: expected a mapping raw value -> label, got "
                          f"{type(spec['map']).__name__} {spec['map']!r}")
    if "any_of" in spec:
        mapping = spec.get("map") or {}
        if set(mapping) != {True, False} or "bins" in spec or "field" in spec:
            raise ConfigError(f"{where}: any_of takes only a map with keys true and false")
        rule = LabelRule(any_of=tuple(spec["any_of"]), map=dict(mapping))
    elif "bins" in spec:
        bins = spec["bins"]
        check_keys(bins, {"edges", "labels"}, f"{where}.bins", ("edges", "labels"))
        edges, names = tuple(float(e) for e in bins["edges"]), tuple(bins["labels"])
        if len(names) != len(edges) + 1 or list(edges) != sorted(edges) or "map" in spec:
            raise ConfigError(f"{where}.bins: need sorted edges, one more label than edges, no map")
        rule = LabelRule(field=_need(spec, "field", where), bin_edges=edges, bin_labels=names)
    elif "map" in spec:
        rule = LabelRule(field=_need(spec, "field", where), map=dict(spec["map"]))
    else:
        raise ConfigError(f"{where}: give one of map (with field), bins (with field) or any_of")
    produced = set(rule.map.values()) if rule.map else set(rule.bin_labels or ())
    unknown = produced - set(labels)
    if unknown:
        raise ConfigError(f"{where}: maps to {sorted(unknown)}, not in labels {list(labels)}")
    missing = set(labels) - produced
    if missing:
        raise ConfigError(f"{where}: no raw value maps to label(s) {sorted(missing)}")
    return rule


def _need(spec: Mapping[str, Any], key: str, where: str) -> Any:
    if key not in spec:
        raise ConfigError(f"{where}: missing required field '{key}'")
    return spec[key]


def _check_prompt(task: Task, where: str) -> None:
    """Render a dummy row so a template typo fails at load time, not mid-run."""
    row = {"text": "x", **{name: "x" for name in task.fields}}
    for name, spec in task.prompt_vars.items():
        if isinstance(spec, Mapping):
            check_keys(spec, {"field", "map"}, f"{where}: prompt_vars.{name}", ("field", "map"))
            row[spec["field"]] = next(iter(spec["map"]))
    if task.base_prompt not in ("zero_shot", "few_shot"):
        raise ConfigError(f"{where}: base_prompt must be zero_shot or few_shot")
    if task.base_prompt == "few_shot":
        check_keys(task.few_shot, {"examples", "example_template"}, f"{where}: few_shot",
                   ("examples", "example_template"))
        if "${examples}" not in task.template:
            raise ConfigError(f"{where}: a few_shot task's template needs ${{examples}}")
        for i, shot in enumerate(task.few_shot["examples"]):
            if shot.get("label") not in task.labels:
                raise ConfigError(f"{where}: few_shot.examples[{i}].label must be one of "
                                  f"{list(task.labels)}, got {shot.get('label')!r}")
    try:
        render_prompt(task, row, few_shot=task.base_prompt == "few_shot")
    except KeyError as exc:
        raise ConfigError(
            f"{where}: template or instruction uses undefined ${{{exc.args[0]}}}") from None


def prompt_variables(task: Task, row: Mapping[str, Any]) -> dict[str, str]:
    """The variables a row's prompt is rendered with: text, extra fields and prompt_vars."""
    values = {"text": str(row["text"]), "examples": ""}
    values.update({name: str(row[name]) for name in task.fields})
    for name, spec in task.prompt_vars.items():
        if isinstance(spec, Mapping):
            raw = row[spec["field"]]
            if raw not in spec["map"]:
                raise KeyError(f"prompt_vars.{name}: value {raw!r} of '{spec['field']}' not mapped")
            values[name] = str(spec["map"][raw])
        else:
            values[name] = str(spec)
    return values


def render_prompt(task: Task, row: Mapping[str, Any], few_shot: bool = False) -> str:
    """Render the task's instruction and template (`${var}` placeholders) for one row.

    With `few_shot`, `${examples}` holds the task's worked examples, each rendered with
    `few_shot.example_template`; otherwise it is empty (the zero-shot / fine-tuned prompt).
    """
    values = prompt_variables(task, row)
    if few_shot:
        shots = task.few_shot.get("examples") or []
        template = Template(task.few_shot["example_template"])
        values["examples"] = "".join(template.substitute(shot) for shot in shots)
    values["instruction"] = Template(task.instruction).substitute(values)
    return Template(task.template).substitute(values)


def task_path(tasks_dir: Path, name: str) -> Path:
    return Path(tasks_dir) / f"{name}.yaml"


def list_tasks(tasks_dir: Path) -> list[str]:
    """Dataset task names: every YAML file not starting with '_' (those are shared bases)."""
    return sorted(p.stem for p in Path(tasks_dir).glob("*.yaml") if not p.name.startswith("_"))
