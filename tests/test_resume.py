"""Training killed mid-run (SIGTERM, then SIGKILL) resumes from its last checkpoint and ends
with the same adapter and losses as an uninterrupted run with the same seed, for every model
family (they share tunebench.models.engine).

Tolerance: 1e-6 absolute on every adapter weight and every logged loss. Resuming restores the
weights, optimizer, scheduler, RNG states and data position, so on one machine the result is
bitwise identical (observed difference: 0.0); the margin only covers float reductions that a
different thread count could reorder.
"""

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.project import REPO_ROOT

pytestmark = pytest.mark.slow
TOL = 1e-6


def _start(args, log):
    cmd = [sys.executable, "-m", "tests.resume_worker", *map(str, args)]
    return subprocess.Popen(cmd, cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT)


def _wait_for_checkpoint(proc, root: Path, step: int, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if list(root.glob(f"tiny-*/checkpoint-{step}/trainer_state.json")):
            return
        if proc.poll() is not None:
            pytest.fail(f"worker ended (rc {proc.returncode}) before checkpoint-{step}")
        time.sleep(0.05)
    proc.kill()
    pytest.fail(f"no checkpoint-{step} after {timeout} s")


@pytest.mark.parametrize("family", ["causal_lm", "seq2seq", "encoder_cls"])
def test_killed_training_resumes_to_the_uninterrupted_result(family, request, tmp_path):
    from safetensors.torch import load_file

    model_dir = request.getfixturevalue({"causal_lm": "tiny_model_dir", "seq2seq": "tiny_t5_dir",
                                         "encoder_cls": "tiny_bert_dir"}[family])
    log = (tmp_path / "worker.log").open("w")
    out, root, result = tmp_path / "adapter", tmp_path / "ck", tmp_path / "run.json"
    # 0.3 s a step: time to send the signal
    args = [family, model_dir, out, root, result, 0.3]

    first = _start(args, log)  # SIGTERM: finishes the step, saves a checkpoint, exits 143
    _wait_for_checkpoint(first, root, 3)
    first.send_signal(signal.SIGTERM)
    assert first.wait(60) == 128 + signal.SIGTERM
    [folder] = root.iterdir()
    stopped_at = max(int(p.name.split("-")[1]) for p in folder.glob("checkpoint-*"))
    assert 3 < stopped_at < 12 and not out.exists()

    second = _start(args, log)  # SIGKILL: nothing saved beyond the last periodic checkpoint
    next_checkpoint = (stopped_at // 3 + 1) * 3
    _wait_for_checkpoint(second, root, next_checkpoint)
    second.kill()
    assert second.wait(60) == -signal.SIGKILL
    assert not out.exists()  # the adapter is written atomically, at the very end

    final = _start(args[:5], log)
    assert final.wait(300) == 0, (tmp_path / "worker.log").read_text()
    # The uninterrupted reference, in a fresh process as well: this one's torch state (threads,
    # flags set by earlier tests) could reorder float reductions.
    reference_json = tmp_path / "ref.json"
    ref = _start([family, model_dir, tmp_path / "ref", tmp_path / "ck-ref", reference_json], log)
    assert ref.wait(300) == 0, (tmp_path / "worker.log").read_text()
    log.close()
    got, want = json.loads(result.read_text()), json.loads(reference_json.read_text())
    assert got["resumed_from_step"] >= next_checkpoint and want["resumed_from_step"] == 0
    assert got["steps"] == want["steps"] == 12
    assert [p["step"] for p in got["loss_curve"]] == list(range(1, 13))
    for a, b in zip(got["loss_curve"], want["loss_curve"], strict=True):
        assert abs(a["loss"] - b["loss"]) <= TOL, (a, b)
    assert abs(got["train_loss"] - want["train_loss"]) <= TOL
    # The metrics describe the whole run, not the part after the last resume.
    assert got["train_tokens"] == want["train_tokens"] > 0
    # The steps up to the checkpoint it resumed from slept 0.3 s each (the last process does not)
    assert got["wall_time_s"] > next_checkpoint * 0.3
    adapter = load_file(out / "adapter_model.safetensors")
    reference = load_file(tmp_path / "ref" / "adapter_model.safetensors")
    assert adapter.keys() == reference.keys()
    worst = max((adapter[k] - reference[k]).abs().max().item() for k in reference)
    assert worst <= TOL, worst
    assert not list(root.iterdir())  # checkpoints are deleted once the adapter is saved
