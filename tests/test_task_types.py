"""Summarization tasks (XSum, DialogSum) and IMDB through the data stages, the lead baseline
and summary scoring: task-file contracts, references, seeded samples and hand-computed
scores."""

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from tunebench.config import ConfigError
from tunebench.data.format_instructions import format_instructions, seeded_sample
from tunebench.data.label_transform import label_split
from tunebench.data.tasks import load_task
from tunebench.evaluation.baselines import lead, run_lead
from tunebench.evaluation.summarization import compare_systems, paired_difference
from tunebench.io import DataError

REPO = Path(__file__).resolve().parents[1]
TASKS = REPO / "tasks"


# ---- task files ---------------------------------------------------------------------------

def test_summarization_task_files_use_the_published_prompts():
    xsum, dialogsum = load_task(TASKS / "xsum.yaml"), load_task(TASKS / "dialogsum.yaml")
    assert xsum.type == dialogsum.type == "summarization"
    assert xsum.labels == () and xsum.label is None
    from tunebench.data.tasks import render_prompt

    assert render_prompt(xsum, {"text": "DOC"}) == \
        "Summarize the following document:\n\nDOC\n\n Summary:"
    assert render_prompt(dialogsum, {"text": "#Person1#: Hi."}) == \
        "Summarize the following conversation:\n\n#Person1#: Hi.\n\n Summary:"
    assert xsum.raw_columns("test") == ["document", "summary"]
    assert dialogsum.raw_columns("train") == ["dialogue", "summary"]
    assert dialogsum.raw_columns("test") == ["dialogue", "summary1", "summary2", "summary3"]


def test_imdb_task_maps_the_mirror_labels():
    imdb = load_task(TASKS / "imdb.yaml")
    assert imdb.type == "classification" and imdb.labels == ("negative", "positive")
    assert imdb.label.map == {0: "negative", 1: "positive"}
    assert {p["f1_binary"] for p in imdb.published} == {0.657, 0.892}  # evaluate's binary f1
    assert {p["positive"] for p in imdb.published} == {"positive"} and "f1_binary" in imdb.metrics


def _write(tmp_path, data):
    path = tmp_path / f"{data['name']}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


SUMMARY_TASK = {"name": "s", "version": 1, "type": "summarization",
                "source": {"mirror": {"dir": "s", "splits": {"train": {"file": "a.csv"}}}},
                "text_field": "doc", "references": ["ref"], "instruction": "Sum:",
                "template": "${instruction} ${text}", "metrics": ["rouge1"]}


@pytest.mark.parametrize(("change", "fragment"), [
    ({"labels": ["a", "b"]}, "labels: a summarization task has references, not labels"),
    ({"references": []}, "references: expected a non-empty list of distinct column names"),
    ({"references": "ref"}, "references: expected a list of columns or a mapping"),
    ({"references": {"test": "ref"}}, "references.test: expected a non-empty list"),
    ({"references": ["ref", "ref"]}, "expected a non-empty list of distinct column names"),
    ({"type": "ranking"}, "type: expected one of ['classification', 'summarization']"),
])
def test_bad_summarization_task_files_are_named(tmp_path, change, fragment):
    with pytest.raises(ConfigError) as err:
        load_task(_write(tmp_path, {**SUMMARY_TASK, **change}))
    assert fragment in str(err.value) and "s.yaml" in str(err.value)


def test_missing_references_key_is_named(tmp_path):
    data = {k: v for k, v in SUMMARY_TASK.items() if k != "references"}
    with pytest.raises(ConfigError, match="references"):
        load_task(_write(tmp_path, data))


def test_split_without_references_is_an_error(tmp_path):
    task = load_task(_write(tmp_path, {**SUMMARY_TASK, "references": {"train": ["ref"]}}))
    with pytest.raises(ConfigError, match="references has no entry for split 'test'"):
        task.raw_columns("test")


# ---- label-transform and format-instructions -----------------------------------------------

def _dialogsum_frame():
    return pd.DataFrame({
        "source_row": [0, 1, 2],
        "dialogue": ["#P1#: Hi.\n#P2#: Hello.", "#P1#: Rain?\n#P2#: Yes.", "#P1#: Bye."],
        "summary1": [" P1 greets P2. ", "They talk about rain.", "P1 leaves."],
        "summary2": ["Greetings.", "Rain talk.", ""],
        "summary3": ["Hello exchange.", "Weather.", "Goodbye."],
    })


def test_references_are_kept_and_an_empty_one_is_quarantined():
    task = load_task(TASKS / "dialogsum.yaml")
    kept, bad = label_split(task, _dialogsum_frame(), "test", "test")
    assert list(kept["id"]) == ["dialogsum:test:0", "dialogsum:test:1"]
    assert list(kept["references"][0]) == ["P1 greets P2.", "Greetings.", "Hello exchange."]
    assert kept["label"][0] == "P1 greets P2."  # the first reference is the training target
    assert len(bad) == 1 and bad[0]["id"] == "dialogsum:test:2"
    assert bad[0]["reason"] == "empty reference in 'summary2'"


def test_summaries_are_sampled_uniformly_with_a_seed_and_keep_every_reference():
    assert seeded_sample(10, None, 0) == list(range(10))
    sample = seeded_sample(10, 4, 7)
    assert len(sample) == 4 and sample == sorted(sample) and sample == seeded_sample(10, 4, 7)
    assert seeded_sample(10, 4, 8) != sample
    task = load_task(TASKS / "dialogsum.yaml")
    kept, _ = label_split(task, _dialogsum_frame(), "test", "test")
    rows, summary = format_instructions(task, kept, cap=1, seed=0, max_words=2)
    assert len(rows) == 1 and summary["truncated"] == 1 and "label_counts" not in summary
    row = rows[0]
    assert row["completion"] == row["references"][0] and len(row["references"]) == 3
    assert row["text"].endswith(" ...") and row["prompt"].endswith("\n\n Summary:")


# ---- the lead baseline --------------------------------------------------------------------

@pytest.mark.parametrize(("text", "n", "expected"), [
    ("The council met. It voted no. Work stops.", 1, "The council met."),
    ("The council met. It voted no. Work stops.", 2, "The council met. It voted no."),
    ("#Person1#: Hello, how are you?\n#Person2#: Fine.", 1, "#Person1#: Hello, how are you?"),
    ("Headline without a stop\nSecond paragraph.", 1, "Headline without a stop"),
])
def test_lead(text, n, expected):
    assert lead(text, n) == expected


def test_lead_rows_follow_the_prediction_schema():
    rows = [{"id": "a", "prompt": "p", "completion": "ref"}]
    out, meta = run_lead(rows, ["First. Second."], 1)["lead"]
    assert out[0]["parsed"] == out[0]["raw"] == "First." and out[0]["target"] == "ref"
    assert meta["kind"] == "baseline" and meta["n"] == 1 and meta["sentences"] == 1


# ---- summary scoring ----------------------------------------------------------------------

def test_paired_difference_hand_computed():
    result = paired_difference([1.0, 0.0, 0.5, 0.25], [0.0, 0.0, 1.0, 0.25], n_boot=200, seed=1)
    assert result["mean_diff"] == pytest.approx((1.0 + 0.0 - 0.5 + 0.0) / 4)
    assert (result["a_better"], result["b_better"], result["ties"]) == (1, 1, 2)
    assert result["ci95_low"] <= result["mean_diff"] <= result["ci95_high"]
    with pytest.raises(ValueError, match="equally long"):
        paired_difference([1.0], [1.0, 2.0])


def test_compare_systems_pairs_tuned_with_every_other_system():
    scores = {name: [dict.fromkeys(("rouge1", "rouge2", "rougeL", "bertscore_f1"), v)
                     for v in values]
              for name, values in {"tuned": [1.0, 0.5], "base": [0.0, 0.5],
                                   "lead": [0.5, 0.5]}.items()}
    out = compare_systems(scores, n_boot=50, seed=0)
    assert sorted(out) == ["tuned_vs_base", "tuned_vs_lead"]
    assert out["tuned_vs_base"]["rouge1"]["mean_diff"] == pytest.approx(0.5)
    assert out["tuned_vs_lead"]["rougeL"]["a_better"] == 1


@pytest.fixture
def bert_dir(tiny_bert_dir):
    return tiny_bert_dir


def _systems(predictions: dict[str, list[str]], ids, refs):
    out = {}
    for name, texts in predictions.items():
        rows = [{"id": i, "prompt_sha256": "x", "raw": t, "parsed": t, "target": r[0]}
                for i, t, r in zip(ids, texts, refs, strict=True)]
        meta = {"system": name, "kind": "tuned" if name == "tuned" else "base", "model": None,
                "seconds": 1.0, "examples_per_s": 2.0, "n": len(rows), "dataset": "d"}
        out[name] = (rows, meta, f"{name}.jsonl", f"{name}.meta.json")
    return out


def test_score_summaries_end_to_end_with_a_tiny_encoder(bert_dir):
    from tunebench.evaluation.score import score_summaries

    ids = ["a", "b"]
    refs = [["the film was wonderful"], ["a fire broke out in the city", "the police closed"]]
    test_rows = [{"id": i, "completion": r[0], "references": r}
                 for i, r in zip(ids, refs, strict=True)]
    systems = _systems({"tuned": ["the film was wonderful", "the police closed"],
                        "base": ["", "the film was terrible"]}, ids, refs)
    task = {"dataset": "d", "task": "d", "version": 1, "run": "r"}
    record, examples = score_summaries(task, test_rows, systems, 100, 0,
                                       {"model_dir": str(bert_dir), "num_layers": 2,
                                        "label": "tiny"})
    tuned, base = record["systems"]["tuned"], record["systems"]["base"]
    assert tuned["stats"]["rouge1"]["mean"] == 1.0  # both exact: the second matches ref 2
    assert base["n_empty"] == 1 and tuned["n_empty"] == 0
    empty = next(e for e in examples if e["system"] == "base" and e["id"] == "a")
    assert all(empty[m] == 0.0 for m in ("rouge1", "rouge2", "rougeL", "bertscore_f1"))
    assert record["n_references"] == {"min": 1, "max": 2}
    assert record["bertscore"] == {"model": "tiny", "num_layers": 2, "idf": False,
                                   "rescale_with_baseline": False}
    assert record["comparisons"]["tuned_vs_base"]["rouge1"]["a_better"] == 2
    assert len(examples) == 4


def test_score_summaries_refuses_a_missing_example(bert_dir):
    from tunebench.evaluation.score import score_summaries

    refs = [["one"], ["two"]]
    test_rows = [{"id": i, "completion": r[0], "references": r}
                 for i, r in zip(["a", "b"], refs, strict=True)]
    systems = _systems({"tuned": ["one"]}, ["a"], refs[:1])
    with pytest.raises(DataError, match="missing 1 test id"):
        score_summaries({"dataset": "d", "task": "d", "version": 1}, test_rows, systems, 10, 0,
                        {"model_dir": str(bert_dir), "num_layers": 2, "label": "tiny"})


# ---- the data stages on the mirror --------------------------------------------------------

def _stage(tmp_path, module, *args):
    result = subprocess.run([sys.executable, "-m", f"stages.{module}", "--params",
                             str(tmp_path / "params.yaml"), *args], cwd=REPO,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_dialogsum_through_the_data_stages_and_the_lead(tmp_path, mirror_dir):
    params = {"fetch": {"mirror": str(mirror_dir)},
              "label_transform": {"max_quarantine_share": 0.01},
              "format_instructions": {"seed": 3, "caps": {}, "max_words": 40},
              "datasets": {"dialogsum": {"run": "d", "caps": {"train": 3, "test": 4}}},
              "baselines": {"lead": {"sentences": 1}}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    raw, labeled, instr = (tmp_path / x for x in ("raw", "labeled", "instr"))
    _stage(tmp_path, "fetch", "--dataset", "dialogsum", "--out", str(raw))
    _stage(tmp_path, "label_transform", "--dataset", "dialogsum", "--raw", str(raw),
           "--out", str(labeled))
    _stage(tmp_path, "format_instructions", "--dataset", "dialogsum", "--labeled", str(labeled),
           "--out", str(instr))
    test = [json.loads(line) for line in (instr / "test.jsonl").read_text().splitlines()]
    train = [json.loads(line) for line in (instr / "train.jsonl").read_text().splitlines()]
    assert len(test) == 4 and len(train) == 3
    assert all(len(r["references"]) == 3 and r["completion"] == r["references"][0] for r in test)
    assert all(len(r["references"]) == 1 for r in train)
    task = json.loads((instr / "task.json").read_text())
    assert task["type"] == "summarization" and task["labels"] == []
    summary = json.loads((instr / "summary.json").read_text())
    assert summary["test"]["rows_in"] == 500 and summary["test"]["truncated"] >= 1
    out = tmp_path / "pred"
    _stage(tmp_path, "baselines", "--dataset", "dialogsum", "--instructions", str(instr),
           "--labeled", str(labeled), "--out", str(out))
    leads = [json.loads(line) for line in (out / "lead.jsonl").read_text().splitlines()]
    assert [r["id"] for r in leads] == [r["id"] for r in test]
    assert all(r["parsed"].startswith("#Person1#:") for r in leads)
