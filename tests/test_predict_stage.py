"""The predict stage: several modes from one model load, and a SIGKILLed run that resumes
and finishes with every example exactly once."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import yaml

from tests.conftest import REPO_ROOT
from tunebench.models.partial import PartialWriter, load_partial, make_header

pytestmark = pytest.mark.slow
LABELS = ["negative", "neutral", "positive"]


def setup_stage(tmp_path, model_dir, n_rows, batch_size, max_new, modes):
    inst = tmp_path / "inst"
    inst.mkdir()
    task = {"dataset": "fpb", "task": "fpb", "labels": LABELS, "parser": "strict",
            "base_prompt": "zero_shot", "type": "classification", "run": "r"}
    (inst / "task.json").write_text(json.dumps(task))
    words = ["Profit rose", "Shares fell sharply", "The bank said so", "Revenue beat"]
    rows = [{"id": f"t{i}", "completion": LABELS[i % 3],
             "prompt": f"Instruction: What is the sentiment of this news? Please choose an "
                       f"answer from {{negative/neutral/positive}}.\nInput: "
                       f"{words[i % 4]} {' again' * (i % 7)}.\nAnswer: "} for i in range(n_rows)]
    (inst / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    params = {"model": "tiny", "paths": {"model_cache": str(tmp_path / "cache")},
              "models": {"tiny": {"source": "local", "path": str(model_dir),
                                  "chat_template": True}},
              "runs": {"r": {"mixture": {"fpb": 1}}},
              "predict": {"batch_size": batch_size, "max_new_tokens": {"base": max_new},
                          "parser": None, "modes": modes}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    return inst, rows


def command(tmp_path, inst, out_dir):
    return [sys.executable, "-m", "stages.predict", "--params", str(tmp_path / "params.yaml"),
            "--system", "base", "--instructions", str(inst), "--out-dir", str(out_dir)]


def partial_of(out):
    """Where predict keeps a mode's finished batches: beside the output folder, since DVC
    empties that folder before a rerun."""
    return out.parent.parent / f".{out.parent.name}-{out.name}.partial"


def test_modes_from_one_load(tmp_path, tiny_model_dir):
    inst, rows = setup_stage(tmp_path, tiny_model_dir, 6, 4, 4, ["generate", "loglik", "choice"])
    pred = tmp_path / "pred" / "base"
    gen, ll, ch = (pred / f"base{suffix}.jsonl" for suffix in ("", "-loglik", "-choice"))
    subprocess.run(command(tmp_path, inst, pred), cwd=REPO_ROOT, check=True,
                   capture_output=True)
    for path, mode in ((gen, "generate"), (ll, "loglik"), (ch, "choice")):
        out = [json.loads(line) for line in path.read_text().splitlines()]
        assert [r["id"] for r in out] == [r["id"] for r in rows]
        meta = json.loads(path.with_suffix(".meta.json").read_text())
        assert meta["mode"] == mode and meta["kind"] == "base" and meta["n"] == 6
        assert meta["system"] == path.stem
        assert meta["hardware"]["machine"] and meta["hardware"]["torch_threads"] >= 1
        assert sum(meta["label_distribution"].values()) == 6
        if mode != "generate":
            assert all(r["parsed"] in LABELS for r in out) and meta["invalid"] == 0
        assert not partial_of(path).exists()
    assert "scores" in json.loads(ll.read_text().splitlines()[0])
    # The loglik variants come from the same scores; exactly one is chosen, by the training
    # labels (none here: no train.jsonl, so none is chosen).
    metas = {v: json.loads((pred / f"base-loglik{s}.meta.json").read_text())
             for v, s in (("sum", ""), ("mean", "_mean"), ("calibrated", "_calibrated"))}
    assert {v: m["loglik_variant"] for v, m in metas.items()} == {v: v for v in metas}
    assert not any(m["loglik_selected"] for m in metas.values())
    assert metas["mean"]["system"] == "base-loglik_mean"
    ids = [json.loads(line)["id"] for line in (pred / "base-loglik_mean.jsonl").open()]
    assert ids == [r["id"] for r in rows]


def test_loglik_variant_chosen_from_training_labels(tmp_path, tiny_model_dir):
    inst, rows = setup_stage(tmp_path, tiny_model_dir, 6, 4, 4, ["loglik"])
    (inst / "train.jsonl").write_text("".join(json.dumps({"id": f"x{i}", "prompt": "p",
                                                          "completion": LABELS[i % 3]}) + "\n"
                                              for i in range(9)))
    pred = tmp_path / "pred" / "base"
    subprocess.run(command(tmp_path, inst, pred), cwd=REPO_ROOT, check=True,
                   capture_output=True)
    metas = [json.loads(p.read_text()) for p in sorted(pred.glob("base-loglik*.meta.json"))]
    assert len(metas) == 3 and sum(m["loglik_selected"] for m in metas) == 1
    selection = metas[0]["loglik_selection"]
    assert set(selection["distances"]) == {"sum", "mean", "calibrated"}
    chosen = min(selection["distances"], key=lambda v: (selection["distances"][v],
                                                        ["sum", "mean", "calibrated"].index(v)))
    assert selection["selected"] == chosen


def test_killed_run_resumes_with_every_example_once(tmp_path, tiny_model_dir):
    inst, rows = setup_stage(tmp_path, tiny_model_dir, 60, 1, 8, ["generate"])
    pred = tmp_path / "pred" / "base"
    out = pred / "base.jsonl"
    part = partial_of(out)
    proc = subprocess.Popen(command(tmp_path, inst, pred), cwd=REPO_ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if part.exists() and len(part.read_bytes().splitlines()) >= 4:
            os.kill(proc.pid, signal.SIGKILL)
            break
        time.sleep(0.01)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    assert not out.exists()
    done_before = len(part.read_bytes().splitlines()) - 1
    assert 0 < done_before < len(rows)
    result = subprocess.run(command(tmp_path, inst, pred), cwd=REPO_ROOT, check=True,
                            capture_output=True, text=True)
    assert "resuming" in result.stdout
    ids = [json.loads(line)["id"] for line in out.read_text().splitlines()]
    assert ids == [r["id"] for r in rows]  # every example exactly once, in input order
    assert not part.exists()


def test_partial_file_header_and_torn_tail(tmp_path):
    path = tmp_path / ".x.partial"
    header = make_header({"mode": "generate"}, ["a", "b"], ["h1", "h2"])
    writer = PartialWriter(path, header, {})
    writer.write([{"id": "a", "parsed": "x"}])
    writer.close(remove=False)
    with path.open("a") as fh:
        fh.write('{"id": "b", "par')  # killed mid-write
    assert set(load_partial(path, header, ["a", "b"])) == {"a"}
    other = make_header({"mode": "generate"}, ["a", "b"], ["h1", "changed"])
    assert load_partial(path, other, ["a", "b"]) == {}
    assert load_partial(tmp_path / "missing", header, ["a"]) == {}


def test_a_prompt_longer_than_the_context_is_cut_and_counted(tmp_path, tiny_model_dir):
    """A 100,000-character input: the prompt keeps its last (context - max_new_tokens) tokens,
    the answer position stays inside the tiny model's 512 positions, and meta counts it."""
    inst, rows = setup_stage(tmp_path, tiny_model_dir, 3, 4, 4, ["generate", "loglik"])
    rows[1]["prompt"] = "Input: " + "very long news " * 7000 + "\nAnswer: "
    (inst / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    pred = tmp_path / "pred" / "base"
    subprocess.run(command(tmp_path, inst, pred), cwd=REPO_ROOT, check=True,
                   capture_output=True)
    for name in ("base", "base-loglik"):
        meta = json.loads((pred / f"{name}.meta.json").read_text())
        assert (meta["prompts_truncated"], meta["max_prompt_tokens"]) == (1, 512 - 4), name
        out = [json.loads(line) for line in (pred / f"{name}.jsonl").read_text().splitlines()]
        assert [r["id"] for r in out] == [r["id"] for r in rows]
