"""End to end: `dvc repro` of the data stages in a temporary repo against the mirror."""

import json
from collections import Counter

import pandas as pd
import pytest

from tests.project import make_project, project_env, run

pytestmark = pytest.mark.slow

# Independent of the task files: the published label rules, written out again here.
TFNS = {0: "negative", 1: "positive", 2: "neutral"}
NWGI = {"strong positive": "positive", "moderately positive": "positive",
        "mildly positive": "neutral", "neutral": "neutral", "mildly negative": "neutral",
        "moderately negative": "negative", "strong negative": "negative"}


def fiqa(score):
    return "negative" if score < -0.1 else "neutral" if score < 0.1 else "positive"


def expected_counts(mirror):
    def counts(values):
        return dict(Counter(values))

    nwgi = pd.read_parquet(mirror / "nwgi" / "test.parquet")
    return {
        "fpb": {s: counts(pd.read_parquet(mirror / "fpb" / f"{s}.parquet")["label"])
                for s in ("train", "test")},
        "fiqa_sa": {s: counts(map(fiqa, pd.read_parquet(mirror / "fiqa_sa" / f"{s}.parquet")
                                  ["sentiment_score"])) for s in ("train", "test")},
        "tfns": {s: counts(pd.read_parquet(mirror / "tfns" / f"{f}.parquet")["label"].map(TFNS))
                 for s, f in (("train", "train"), ("test", "validation"))},
        "nwgi": {s: counts(nwgi[nwgi["proxy_split"] == s]["label"].map(NWGI))
                 for s in ("train", "test")},
    }


DATA_STAGES = ["fetch", "label-transform", "format-instructions"]


def test_data_stages_reproduce_label_counts(tmp_path, mirror_dir):
    caps = {"train": 12, "test": 9}
    fingpt = {name: {"run": "fingpt"} for name in ("fpb", "fiqa_sa", "tfns", "nwgi")}
    project = make_project(tmp_path / "p", mirror_dir, {
        "format_instructions": {"seed": 42, "caps": caps, "max_words": None},
        "datasets": fingpt, "runs": {"fingpt": {"mixture": dict.fromkeys(fingpt, 1)}}})
    env = project_env(mirror_dir)
    for stage in DATA_STAGES:
        run(["dvc", "repro", "--single-item", *_items(stage)], project, env)
    for name, splits in expected_counts(mirror_dir).items():
        summary = json.loads((project / f"data/labeled/{name}/summary.json").read_text())
        for split, counts in splits.items():
            assert summary["splits"][split]["label_counts"] == dict(sorted(counts.items()))
            rows = pd.read_parquet(project / f"data/labeled/{name}/{split}.parquet")
            assert dict(Counter(rows["label"])) == counts and rows["id"].is_unique
            lines = (project / f"data/instructions/fingpt/{name}/{split}.jsonl").read_text()
            assert len(lines.splitlines()) == caps[split]
        assert summary["quarantined"] == 0
    items = [item for stage in DATA_STAGES for item in _items(stage)]
    status = run(["dvc", "status", *items], project, env)
    assert "up to date" in status.lower() and "changed" not in status


def _items(stage):
    return [f"{stage}@{name}" for name in ("fpb", "fiqa_sa", "tfns", "nwgi")]
