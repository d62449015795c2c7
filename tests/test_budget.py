"""tunebench.running.budget: per-stage seconds from dvc repro's output, the record and its table."""

import json
import sys

import pytest

from tunebench.running import budget

LINES = [
    (0.0, "Running stage 'fetch@fpb':"),
    (0.5, "> python -m stages.fetch --dataset fpb --out data/raw/fpb"),
    (2.0, "Stage 'fetch@tfns' didn't change, skipping"),
    (2.5, "Running stage 'train-qlora@fingpt':"),
    (12.5, "Running stage 'predict-base@fpb':"),
    (13.0, "Updating lock file 'dvc.lock'"),
]


def test_stage_seconds_from_output_lines():
    out = budget.stage_seconds(LINES, end=20.0)
    assert out["stages"] == {"fetch@fpb": 2.0, "train-qlora@fingpt": 10.0,
                             "predict-base@fpb": 7.5}
    assert out["skipped"] == ["fetch@tfns"]
    assert budget.group_seconds(out["stages"]) == {"fetch": 2.0, "train-qlora": 10.0,
                                                   "predict-base": 7.5}


def test_record_and_table():
    record = budget.budget_record(0, LINES, start=-1.0, end=20.0, dvc_args=[])
    assert record["total_seconds"] == 21.0 and record["complete"] is True
    assert record["stage_seconds_sum"] == 19.5
    assert "cpu_bf16_flags" in record["hardware"]
    table = budget.render_table(record)
    assert table.splitlines()[2] == "| train-qlora | 1 | 0.2 | 48% |"
    assert "**0.3**" in table and "1 stages were cached" in table
    failed = budget.budget_record(1, LINES, start=0.0, end=20.0, dvc_args=["fetch@fpb"])
    assert "did not complete" in budget.render_table(failed)


def test_main_writes_budget_even_when_dvc_fails(tmp_path, monkeypatch):
    def fake(args):
        assert args == ["--dry"]
        return 3, LINES[:2], 0.0, 4.0

    monkeypatch.setattr(budget, "run_repro", fake)
    monkeypatch.setattr(budget, "dag_stages", lambda: ["fetch@fpb", "report"])
    out = tmp_path / "budget.json"
    assert budget.main(["--out", str(out), "--", "--dry"]) == 3
    record = json.loads(out.read_text())
    assert record["complete"] is False and record["stages"] == {"fetch@fpb": 4.0}
    assert record["command"] == "dvc repro --dry"
    # dvc failed inside its only stage: the ledger keeps nothing unfinished
    assert record["dag"]["stages"] == {} and record["dag"]["missing"] == ["fetch@fpb", "report"]


def test_run_repro_streams_a_real_command(monkeypatch, tmp_path):
    script = tmp_path / "dvc"
    script.write_text(f"#!{sys.executable}\nprint(\"Running stage 'a@x':\")\nprint('done')\n")
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:{__import__('os').environ['PATH']}")
    status, lines, start, end = budget.run_repro([])
    assert status == 0 and [text for _, text in lines] == ["Running stage 'a@x':", "done"]
    assert end >= start


def test_help_explains_itself(capsys):
    with pytest.raises(SystemExit):
        budget.main(["--help"])
    assert "metrics/budget.json" in capsys.readouterr().out


def _record(stages, complete=True, command="dvc repro", hardware=None):
    return {"stages": stages, "complete": complete, "command": command,
            "hardware": hardware or {"cpu": "x"}}


def test_ledger_keeps_earlier_measurements_and_replaces_rerun_stages():
    dag = ["fetch@a", "fetch@b", "train-qlora@r", "report"]
    first = _record({"fetch@a": 2.0, "train-qlora@r": 10.0}, command="dvc repro a")
    first["dag"] = budget.update_ledger(first, None, dag)
    assert first["dag"]["missing"] == ["fetch@b", "report"]
    assert first["dag"]["total_seconds"] == 12.0
    second = _record({"fetch@b": 3.0, "train-qlora@r": 20.0}, command="dvc repro b")
    ledger = budget.update_ledger(second, first, dag)
    assert ledger["stages"]["fetch@a"] == {"seconds": 2.0, "run": "dvc repro a"}
    assert ledger["stages"]["train-qlora@r"] == {"seconds": 20.0, "run": "dvc repro b"}
    assert ledger["total_seconds"] == 25.0 and ledger["missing"] == ["report"]
    assert ledger["by_kind"] == {"fetch": 5.0, "train-qlora": 20.0}
    assert ledger["runs"] == ["dvc repro a", "dvc repro b"]
    table = budget.render_dag_table(ledger)
    assert "| fetch | 2 | 0.1 | 20% |" in table and "**0.4**" in table
    assert "so not in the sum: 1 stages (report ×1;" in table


def test_ledger_drops_a_failed_runs_last_stage_other_hardware_and_removed_stages():
    dag = ["fetch@a", "train-qlora@r"]
    old = _record({}, hardware={"cpu": "y"})
    old["dag"] = {"stages": {"fetch@a": {"seconds": 1.0, "run": "old"},
                             "gone@x": {"seconds": 5.0, "run": "old"}}}
    same = dict(old, hardware={"cpu": "x"})
    failed = _record({"fetch@a": 2.0, "train-qlora@r": 3.0}, complete=False)
    ledger = budget.update_ledger(failed, same, dag)
    assert set(ledger["stages"]) == {"fetch@a"} and ledger["missing"] == ["train-qlora@r"]
    assert budget.update_ledger(_record({}), old, dag)["stages"] == {}  # other hardware
