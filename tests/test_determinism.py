"""Two from-scratch `dvc repro` runs of the tiny-model pipeline give identical results: every
metric, prediction and adapter weight, except timing and memory fields, which are excluded
by name."""

import json
import subprocess

import pytest

from tests.project import make_project, project_env
from tests.test_pipeline_full import tiny_params

pytestmark = pytest.mark.slow

# Wall-clock and memory measurements legitimately differ between runs; nothing else may.
VOLATILE = {"seconds", "fit_seconds", "predict_seconds", "examples_per_s", "tokens_per_s",
            "wall_time_s", "peak_memory_mb"}


def strip_volatile(value):
    if isinstance(value, dict):
        return {k: strip_volatile(v) for k, v in value.items() if k not in VOLATILE}
    if isinstance(value, list):
        return [strip_volatile(v) for v in value]
    return value


def _params(model_dir, bert_dir):
    params = tiny_params(model_dir, bert_dir)
    params["datasets"] = {"fpb": {"run": "fingpt"}}  # one dataset keeps the test short
    params["runs"] = {"fingpt": {"mixture": {"fpb": 1}}}
    return params


def test_two_runs_from_scratch_give_identical_results(tmp_path, tiny_model_dir, tiny_bert_dir,
                                                      mirror_dir):
    env = project_env(mirror_dir)
    roots = [make_project(tmp_path / name, mirror_dir, _params(tiny_model_dir, tiny_bert_dir))
             for name in ("a", "b")]
    # Side by side: the runs share nothing (each project has its own caches and checkpoints).
    procs = [subprocess.Popen(["dvc", "repro"], cwd=root, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for root in roots]
    for proc in procs:
        out, _ = proc.communicate(timeout=600)
        assert proc.returncode == 0, out[-4000:]
    a, b = roots
    compared = 0
    for path in sorted((a / "metrics").rglob("*.json")) + sorted((a / "data").rglob("*.json*")):
        rel = path.relative_to(a)
        text_a, text_b = path.read_text(), (b / rel).read_text()
        if path.suffix == ".jsonl":
            rows_a = [strip_volatile(json.loads(line)) for line in text_a.splitlines()]
            rows_b = [strip_volatile(json.loads(line)) for line in text_b.splitlines()]
            assert rows_a == rows_b, rel
        else:
            assert strip_volatile(json.loads(text_a)) == strip_volatile(json.loads(text_b)), rel
        compared += 1
    assert compared >= 10
    metrics = json.loads((a / "metrics/datasets/fpb.json").read_text())
    assert {"base", "tuned", "majority", "tfidf_logreg"} <= set(metrics["systems"])
    adapter = "models/fingpt/adapter_model.safetensors"
    assert (a / adapter).read_bytes() == (b / adapter).read_bytes()
