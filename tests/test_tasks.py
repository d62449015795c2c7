"""Contract tests over every task file, and the registry's validation errors."""

import re
from pathlib import Path

import pandas as pd
import pytest
import yaml

from tunebench.config import ConfigError
from tunebench.data.label_transform import apply_label_rule
from tunebench.data.tasks import list_tasks, load_task, render_prompt

TASKS = Path(__file__).resolve().parents[1] / "tasks"
ALL_TASKS = list_tasks(TASKS)


def test_registry_lists_dataset_tasks_only():
    assert {"fpb", "fiqa_sa", "tfns", "nwgi"} <= set(ALL_TASKS)
    assert not any(name.startswith("_") for name in ALL_TASKS)


@pytest.mark.parametrize("name", ALL_TASKS)
def test_task_loads_and_renders(name, mirror_dir):
    task = load_task(TASKS / f"{name}.yaml")
    assert task.name == name and task.version >= 1
    assert bool(task.labels) == (task.type == "classification")
    raw = _mirror_frames(task, mirror_dir)
    row = next(iter(raw.values())).iloc[0].to_dict()
    row["text"] = row[task.text_field]
    row.update({var: row[col] for var, col in task.fields.items()})
    prompt = render_prompt(task, row)
    assert str(row["text"]) in prompt and "${" not in prompt


@pytest.mark.parametrize("name", ALL_TASKS)
def test_label_rule_covers_every_raw_label_in_the_mirror(name, mirror_dir):
    """Every distinct raw label value (or label-column combination) maps to a canonical label."""
    task = load_task(TASKS / f"{name}.yaml")
    for split, df in _mirror_frames(task, mirror_dir).items():
        if task.type == "summarization":  # references instead: present, almost never empty
            refs = df[list(task.reference_columns(split))]
            empty = (refs.isna() | (refs.astype(str).apply(lambda c: c.str.strip()) == ""))
            assert empty.any(axis=1).mean() <= 0.01, (split, int(empty.any(axis=1).sum()))
            continue
        cols = list(task.label.any_of) if task.label.any_of else [task.label.field]
        for values in df[cols].drop_duplicates().to_dict("records"):
            label, reason = apply_label_rule(task.label, values)
            assert reason is None and label in task.labels, (split, values, reason)


def _mirror_frames(task, mirror_dir):
    out = {}
    for split, spec in task.mirror.splits.items():
        df = pd.read_parquet(mirror_dir / task.mirror.dir / spec.file)
        for column, value in spec.where.items():
            df = df[df[column] == value]
        out[split] = df
    return out


def _write_task(tmp_path: Path, **changes) -> Path:
    base = yaml.safe_load((TASKS / "tfns.yaml").read_text())
    base["include"] = str(TASKS / "_fin_sentiment.yaml")
    base.update(changes)
    path = tmp_path / "tfns.yaml"
    path.write_text(yaml.safe_dump(base))
    return path


def test_unknown_key_names_file_and_suggests(tmp_path):
    path = _write_task(tmp_path, text_feild="text")
    expected = r"tfns.yaml: unknown key 'text_feild' \(did you mean 'text_field'"
    with pytest.raises(ConfigError, match=expected):
        load_task(path)


def test_missing_field_is_named(tmp_path):
    path = _write_task(tmp_path)
    data = yaml.safe_load(path.read_text())
    del data["text_field"]
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match="missing required field.*text_field"):
        load_task(path)


def test_label_map_missing_a_label_is_rejected(tmp_path):
    path = _write_task(tmp_path, label={"field": "label", "map": {0: "negative", 1: "positive"}})
    with pytest.raises(ConfigError, match=r"label: no raw value maps to label\(s\) \['neutral'\]"):
        load_task(path)


def test_label_map_to_unknown_label_is_rejected(tmp_path):
    path = _write_task(tmp_path, label={"field": "label",
                                        "map": {0: "negative", 1: "bullish", 2: "neutral"}})
    with pytest.raises(ConfigError, match="maps to \\['bullish'\\]"):
        load_task(path)


def test_template_with_undefined_variable_fails_at_load(tmp_path):
    path = _write_task(tmp_path, template="Input: ${txt}\nAnswer: ")
    with pytest.raises(ConfigError, match=r"undefined \$\{txt\}"):
        load_task(path)


def test_name_must_match_file(tmp_path):
    path = _write_task(tmp_path, name="other")
    with pytest.raises(ConfigError, match="must match the file name"):
        load_task(path)


def test_fingpt_prompt_is_verbatim():
    task = load_task(TASKS / "tfns.yaml")
    assert render_prompt(task, {"text": "$AAPL up 3%"}) == (
        "Instruction: What is the sentiment of this tweet? Please choose an answer from "
        "{negative/neutral/positive}.\nInput: $AAPL up 3%\nAnswer: "
    )
    fiqa = load_task(TASKS / "fiqa_sa.yaml")
    assert "this news?" in render_prompt(fiqa, {"text": "x", "format": "headline"})
    assert "this tweet?" in render_prompt(fiqa, {"text": "x", "format": "post"})


SHA40 = "[0-9a-f]{40}"


@pytest.mark.parametrize("name", ALL_TASKS)
def test_every_hub_source_is_pinned_to_a_commit(name):
    task = load_task(TASKS / f"{name}.yaml")
    if task.hub is not None:
        assert task.hub.pinned and re.fullmatch(SHA40, task.hub.revision), name


def test_fpb_hub_source_reads_the_scripts_zip_member():
    hub = load_task(TASKS / "fpb.yaml").hub
    assert hub.revision == "8d3fe0c36d5feec6b3cc5e455b0fcb4820fb9964" and not hub.splits
    spec = hub.files["all"]
    assert (spec.file, spec.member, spec.encoding, spec.sep, spec.columns) == (
        "data/FinancialPhraseBank-v1.0.zip", "FinancialPhraseBank-v1.0/Sentences_50Agree.txt",
        "latin-1", "@", ("sentence", "label"))


@pytest.mark.parametrize(("hub", "error"), [
    ({"revision": "main"}, r"source.hub.revision: expected a 40-hex commit, got 'main'.*"
                           r"pinned: false"),
    ({"revision": "main", "pinned": "no"}, r"source.hub.pinned: expected true or false"),
    ({"pinned": False}, r"is a commit, so the source is pinned; remove pinned: false"),
    ({"splits": {"train": {"file": "a.zip", "sep": "@", "columns": ["text"]}}},
     r"splits.train.columns: expected two or more"),
    ({"splits": {"train": {"file": "a.zip", "sep": "@", "columns": ["text", "label"],
                           "encoding": "latin-42"}}}, r"splits.train.encoding: unknown"),
    ({"splits": {"train": {"file": "a.zip", "sep": "@", "columns": ["text", "label"],
                           "membr": "x"}}}, r"unknown key 'membr' \(did you mean 'member'"),
    ({"splits": {"train": 3}}, r"splits.train: expected a hub split"),
])
def test_hub_source_errors(tmp_path, hub, error):
    source = yaml.safe_load((TASKS / "tfns.yaml").read_text())["source"]
    source["hub"].update(hub)
    with pytest.raises(ConfigError, match=error):
        load_task(_write_task(tmp_path, source=source))


def test_explicitly_unpinned_hub_source_loads(tmp_path):
    source = yaml.safe_load((TASKS / "tfns.yaml").read_text())["source"]
    source["hub"].update(revision="main", pinned=False)
    hub = load_task(_write_task(tmp_path, source=source)).hub
    assert (hub.revision, hub.pinned) == ("main", False)


def test_list_where_a_mapping_belongs_is_an_error_not_a_crash(tmp_path):
    source = yaml.safe_load((TASKS / "tfns.yaml").read_text())["source"]
    source["mirror"]["splits"] = ["train.parquet"]
    with pytest.raises(ConfigError, match=r"source.mirror.splits: expected a mapping split"):
        load_task(_write_task(tmp_path, source=source))
    path = _write_task(tmp_path, label={"field": "label", "map": ["negative", "neutral"]})
    with pytest.raises(ConfigError, match=r"label.map: expected a mapping raw value -> label, "
                                          r"got list"):
        load_task(path)


def test_params_section_written_as_a_list_is_an_error():
    from tunebench.running.params import dataset_entry

    with pytest.raises(ConfigError, match=r"params.yaml: datasets: expected a mapping, got list"):
        dataset_entry({"datasets": ["fpb"], "format_instructions": {"seed": 1}}, "fpb")
