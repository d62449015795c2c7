"""A user's own dataset, end to end: a CSV file (one raw split, split by a grouped resplit) and
a JSON Lines validation file that names the text column differently, declared by one task
file and two params lines, through the tiny-model DAG to a scored report."""

import json

import pytest
import yaml

from tests.project import make_project, project_env, run
from tests.test_pipeline_full import tiny_params
from tunebench.data.pins import pins

pytestmark = pytest.mark.slow
LABELS = ("negative", "neutral", "positive")


def own_files(root):
    """owndata/all.csv: 12 headlines, each scored for three companies (36 rows, so a row-by-row
    split would leak); owndata/validation.jsonl: other headlines, column `tweet`."""
    folder = root / "owndata"
    folder.mkdir()
    rows = ["headline,company,sentiment"]
    for i in range(12):
        rows += [f"Company news number {i} moves shares,c{c},{LABELS[(i + c) % 3]}"
                 for c in range(3)]
    (folder / "all.csv").write_text("\n".join(rows) + "\n")
    (folder / "validation.jsonl").write_text("".join(
        json.dumps({"tweet": f"Quarterly note {i}", "sentiment": LABELS[i % 3]}) + "\n"
        for i in range(6)))


TASK = {
    "name": "mine", "version": 1, "type": "classification", "labels": list(LABELS),
    "source": {"files": {"all": {"file": "owndata/all.csv"},
                         "validation": {"file": "owndata/validation.jsonl"}}},
    "rename": {"validation": {"tweet": "headline"}},
    "resplit": {"from": "all", "test_size": 0.25, "seed": 42, "group": "headline"},
    "text_field": "headline", "label": {"field": "sentiment", "map": {x: x for x in LABELS}},
    "instruction": "What is the sentiment of this news? Please choose an answer from "
                   "{negative/neutral/positive}.",
    "template": "Instruction: ${instruction}\nInput: ${text}\nAnswer: ",
    "parser": "strict", "metrics": ["accuracy", "f1_weighted"],
}


def test_own_csv_and_jsonl_dataset_runs_to_a_scored_report(tmp_path, tiny_model_dir,
                                                            tiny_bert_dir, mirror_dir):
    params = tiny_params(tiny_model_dir, tiny_bert_dir)
    # The two params lines a new dataset needs: its entry and its run.
    params["datasets"] = {"mine": {"run": "mine"}}
    params["runs"] = {"mine": {"mixture": {"mine": 1}}}
    root = make_project(tmp_path / "p", mirror_dir, params)
    own_files(root)
    task_path = root / "tasks" / "mine.yaml"
    task_path.write_text(yaml.safe_dump(TASK, sort_keys=False))
    task_path.write_text(yaml.safe_dump({**TASK, **pins(task_path, root)}, sort_keys=False))
    env = project_env(mirror_dir)
    out = run(["dvc", "repro"], root, env)
    assert "Running stage 'report'" in out
    labeled = json.loads((root / "data/labeled/mine/summary.json").read_text())
    assert labeled["source"]["source"] == "files" and labeled["test_texts_in_train"] == 0
    assert sum(labeled["resplit"]["groups"].values()) == 12
    assert labeled["splits"]["validation"]["kept"] == 6  # renamed tweet -> headline
    record = json.loads((root / "metrics/datasets/mine.json").read_text())
    assert {"base", "tuned", "majority", "tfidf_logreg"} <= set(record["systems"])
    assert labeled["splits"]["test"]["kept"] >= 9  # 3 of the 12 groups, before the test cap
    assert record["n"] == 5 and all(s["n"] == 5 for s in record["systems"].values())
    train = json.loads((root / "metrics/train/mine/metrics.json").read_text())
    assert train["n_eval_examples"] == 6  # the JSON Lines validation file
    report = (root / "metrics/report.md").read_text()
    assert "## mine" in report and "local files: all=owndata/all.csv" in report
