"""docs/tasks.md against the task loader: the key list (tunebench/data/taskkeys.py) must be what
tunebench/data/tasks.py accepts, section by section, and the committed document must be current."""

import ast
import dataclasses
from collections.abc import Mapping
from pathlib import Path

import pytest

from tunebench.config import ConfigError
from tunebench.data import tasks as tasks_module
from tunebench.data.taskdoc import (
    flow,
    key_for,
    main,
    read_shipped,
    render,
    shipped_example,
    split_path,
    undocumented,
)
from tunebench.data.taskkeys import ALWAYS, DATASET_PARAMS, RUN_PARAMS, SECTIONS, UNSET
from tunebench.data.tasks import TASK_KEYS, load_task
from tunebench.running import params as params_module
from tunebench.running.params import load_params

REPO = Path(__file__).resolve().parents[1]
TASKS = REPO / "tasks"
UNKNOWN = "zz_not_a_key"

# Where each closed section is probed: a shipped task and the concrete path of that section.
PROBES = {
    "": ("fpb", ()),
    "source": ("fpb", ("source",)),
    "source.hub": ("fpb", ("source", "hub")),
    "source.hub.splits.<split>": ("fpb", ("source", "hub", "splits", "all")),
    "source.mirror": ("nwgi", ("source", "mirror")),
    "source.mirror.splits.<split>": ("nwgi", ("source", "mirror", "splits", "train")),
    "resplit": ("fpb", ("resplit",)),
    "label": ("tfns", ("label",)),
    "label.bins": ("fiqa_sa", ("label", "bins")),
    "prompt_vars.<name>": ("fiqa_sa", ("prompt_vars", "kind")),
    "few_shot": ("sarc", ("few_shot",)),
}
# Sections whose keys are fields of a loader dataclass of the same name (defaults compared).
DATACLASSES = {
    "": tasks_module.Task,
    "source.hub": tasks_module.HubSource,
    "source.hub.splits.<split>": tasks_module.HubFile,
    "source.mirror.splits.<split>": tasks_module.MirrorSplit,
}
CLOSED = [s for s in SECTIONS if s.closed]


def _key_set(node: ast.expr) -> frozenset[str]:
    """The key set a check_keys call passes: a literal, a tasks.py constant, or a - b."""
    if isinstance(node, ast.Name):
        return frozenset(getattr(tasks_module, node.id))
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Sub):
        return _key_set(node.left) - _key_set(node.right)
    return frozenset(ast.literal_eval(node))


def loader_key_sets() -> list[tuple[int, frozenset[str], tuple[str, ...] | None]]:
    """(line, allowed keys, required keys or None when not a literal) of every check_keys
    call in tunebench/data/tasks.py."""
    tree = ast.parse(Path(tasks_module.__file__).read_text(encoding="utf-8"))
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "check_keys":
            keyword = [k.value for k in node.keywords if k.arg == "required"]
            required = node.args[3] if len(node.args) > 3 else (keyword or [None])[0]
            try:
                needed = None if required is None else tuple(ast.literal_eval(required))
            except ValueError:
                needed = None  # e.g. REQUIRED_KEYS[task_type]: checked separately below
            out.append((node.lineno, _key_set(node.args[1]), needed if required else ()))
    return sorted(out, key=lambda item: item[0])


def _doc_set(section) -> frozenset[str]:
    # `include` is resolved (popped) by read_task_yaml before the top-level check.
    keys = {k.name for k in section.keys}
    return frozenset(keys - {"include"} if section.path == "" else keys)


def _nest(path: tuple[str, ...], leaf: Mapping) -> dict:
    for part in reversed(path):
        leaf = {part: leaf}
    return dict(leaf)


def test_every_key_set_the_loader_checks_is_one_documented_section():
    doc = {_doc_set(s): s for s in CLOSED}
    assert len(doc) == len(CLOSED), "two closed sections list the same keys"
    found = loader_key_sets()
    assert len(found) >= len(CLOSED) > 5  # the AST walk found the calls
    for line, allowed, required in found:
        section = doc.get(allowed)
        assert section is not None, (f"tasks.py:{line} accepts {sorted(allowed)}, which no "
                                     f"section of tunebench/data/taskkeys.py lists exactly")
        if required is not None:
            listed = {k.name for k in section.keys if k.required == ALWAYS}
            assert listed == set(required), (section.path, line)
    checked = {allowed for _, allowed, _ in found}
    stale = [s.path for s in CLOSED if _doc_set(s) not in checked]
    assert not stale, f"documented as closed, but the loader checks no such key set: {stale}"


def test_top_level_keys_and_their_requirements_are_the_loaders():
    top = next(s for s in SECTIONS if s.path == "")
    assert {k.name for k in top.keys} == TASK_KEYS
    for task_type, required in tasks_module.REQUIRED_KEYS.items():
        listed = {k.name for k in top.keys if k.required == ALWAYS or task_type in k.required}
        assert listed == set(required), task_type
    type_key = next(k for k in top.keys if k.name == "type")
    assert all(f"`{t}`" in type_key.meaning for t in tasks_module.TASK_TYPES)


@pytest.mark.parametrize("section", CLOSED, ids=lambda s: s.path or "top")
def test_closed_section_rejects_an_unknown_key_where_documented(section):
    stem, path = PROBES[section.path]
    with pytest.raises(ConfigError) as err:
        load_task(TASKS / f"{stem}.yaml", _nest(path, {UNKNOWN: 1}))
    where = f"{'.'.join(path)}: " if path else ".yaml: "
    assert f"{where}unknown key '{UNKNOWN}'" in str(err.value)


@pytest.mark.parametrize("section", CLOSED, ids=lambda s: s.path or "top")
def test_every_documented_key_is_accepted_where_documented(section):
    stem, path = PROBES[section.path]
    shipped = read_shipped(TASKS)
    for key in section.keys:
        if key.name == "include":
            continue  # a file-only key: params overrides cannot carry it
        found = shipped_example((*split_path(section.path), key.name), shipped,
                                key.example_from)
        value = found[2] if found else (1 if key.example is UNSET else key.example[key.name])
        try:
            load_task(TASKS / f"{stem}.yaml", _nest(path, {key.name: value}))
        except ConfigError as exc:  # another complaint (a rule clash) is fine; unknown is not
            assert f"unknown key '{key.name}'" not in str(exc), (section.path, key.name)


def _field_default(field: dataclasses.Field):
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return field.default


def _plain(value):
    return list(value) if isinstance(value, tuple) else value


@pytest.mark.parametrize("path", sorted(DATACLASSES), ids=lambda p: p or "top")
def test_documented_defaults_are_the_loaders_dataclass_defaults(path):
    section = next(s for s in SECTIONS if s.path == path)
    fields = {f.name: f for f in dataclasses.fields(DATACLASSES[path])}
    compared = 0
    for key in section.keys:
        field = fields.get(key.name)
        if field is None or key.required or key.default_text:
            continue
        default = _field_default(field)
        if default is dataclasses.MISSING:
            continue
        assert key.default is not UNSET, f"{path}.{key.name}: the loader defaults to {default!r}"
        assert _plain(key.default) == _plain(default), f"{path}.{key.name}"
        compared += 1
    assert compared >= 1


def test_every_key_of_the_shipped_task_files_is_documented():
    for stem, data in read_shipped(TASKS).items():
        assert undocumented(data) == [], stem


def test_every_key_of_the_params_overrides_is_documented():
    for name, entry in load_params(REPO / "params.yaml")["datasets"].items():
        assert undocumented((entry or {}).get("overrides") or {}) == [], name


def test_an_undocumented_key_is_found_at_any_depth():
    data = {"source": {"mirror": {"splits": {"train": {"file": "a.csv", "group": "x"}}}},
            "published": [{"system": "s", "kind": "base", "f1_weighted": 0.5}],
            "label": {"map": {0: "a"}}}
    assert undocumented(data) == ["source.mirror.splits.train.group"]
    assert key_for(("few_shot", "examples", "[]", "label")).name == "label"
    assert key_for(("few_shot", "examples", "[]", "parent")).name == "<variable>"
    assert key_for(("source", "hub", "nope")) is None


def test_params_keys_are_the_params_loaders():
    assert set(DATASET_PARAMS) == params_module.DATASET_KEYS
    assert set(RUN_PARAMS) == params_module.RUN_KEYS


def test_examples_are_quoted_from_the_shipped_files():
    text = render(TASKS)
    assert "`where: {proxy_split: train}` (nwgi)" in text
    assert "`map: {0: negative, 1: positive, 2: neutral}` (tfns)" in text
    assert '`template: "Instruction: ${instruction}\\nInput: ${text}\\nAnswer: "`' in text
    assert "# tasks/fiqa_sa.yaml\nsource:\n  hub:\n    splits:\n      all: [train," in text


def test_flow_is_one_line_without_outer_braces():
    assert flow({"a": "x\ny"}) == 'a: "x\\ny"'
    assert flow({"sep": "@"}) == "sep: '@'"
    assert flow([1, 2]) == "[1, 2]"


def test_an_example_named_but_missing_fails_the_render():
    with pytest.raises(ValueError, match="tasks/tfns.yaml has no resplit"):
        shipped_example(("resplit",), read_shipped(TASKS), "tfns")


def test_committed_reference_is_current():
    assert main(["--check", "--out", str(REPO / "docs" / "tasks.md"), "--tasks", str(TASKS)]) == 0


def test_check_fails_on_a_stale_file_and_writing_fixes_it(tmp_path, capsys):
    out = tmp_path / "tasks.md"
    assert main(["--check", "--out", str(out), "--tasks", str(TASKS)]) == 1
    assert "is missing" in capsys.readouterr().err
    out.write_text(render(TASKS).replace("| `where` |", "| `wher` |"), encoding="utf-8")
    assert main(["--check", "--out", str(out), "--tasks", str(TASKS)]) == 1
    assert "out of date: run `python -m tunebench.data.taskdoc`" in capsys.readouterr().err
    assert main(["--out", str(out), "--tasks", str(TASKS)]) == 0
    assert out.read_text(encoding="utf-8") == render(TASKS)
    assert main(["--check", "--out", str(out), "--tasks", str(TASKS)]) == 0


def test_help_explains_itself(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    assert "python -m tunebench.data.taskdoc" in text
    assert "docs/tasks.md" in text and "--check" in text
