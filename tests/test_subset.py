"""`make bench DATASETS=...`: the dvc targets tunebench.running.subset names, and the Makefile's use
of them (run with a fake python and a fake dvc, so no stage runs)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tunebench.config import ConfigError
from tunebench.running.params import load_params
from tunebench.running.subset import main, parse_names, run_companions, subset_targets

REPO = Path(__file__).resolve().parents[1]
PARAMS = load_params(REPO / "params.yaml")


def test_names_split_on_commas_or_spaces_keeping_order_once():
    assert parse_names("tfns, fpb,tfns  xsum") == ["tfns", "fpb", "xsum"]
    with pytest.raises(ConfigError, match="no dataset named"):
        parse_names(" , ")


def test_each_dataset_becomes_its_score_stage():
    assert subset_targets(PARAMS, ["fpb", "xsum"]) == ["score@fpb", "score@xsum"]


def test_an_unknown_name_is_refused_naming_the_known_ones():
    with pytest.raises(ConfigError, match=r"unknown dataset 'fbp' \(did you mean 'fpb'\?\); "
                                          r"the datasets of params.yaml are .*tfns"):
        subset_targets(PARAMS, ["tfns", "fbp"])


def test_a_runs_other_datasets_are_named():
    params = {**PARAMS, "datasets": {"a": {"run": "r"}, "b": {"run": "r"}, "c": {"run": "s"}}}
    assert run_companions(params, ["a"]) == {"r": ["b"]}
    assert run_companions(params, ["a", "b", "c"]) == {}


def test_cli_prints_targets_and_fails_with_status_2(capsys):
    assert main(["fpb,sarc", "--params", str(REPO / "params.yaml")]) == 0
    out = capsys.readouterr()
    assert out.out.strip() == "score@fpb score@sarc"
    assert "run fingpt also trains on fiqa_sa, nwgi, tfns" in out.err
    assert main(["nope", "--params", str(REPO / "params.yaml")]) == 2
    assert "error: DATASETS: unknown dataset 'nope'" in capsys.readouterr().err


def _fake_tools(tmp_path: Path) -> tuple[Path, Path]:
    """A python that runs tunebench.running.subset for real and logs any other call, and a dvc that
    logs; returns (bin folder, log)."""
    log, bin_dir = tmp_path / "log", tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "python").write_text(
        "#!/bin/sh\n"
        f'if [ "$1 $2" = "-m tunebench.running.subset" ]; then exec {sys.executable} "$@"; fi\n'
        f'echo "python $*" >> {log}\n')
    (bin_dir / "dvc").write_text(f'#!/bin/sh\necho "dvc $*" >> {log}\n')
    for tool in bin_dir.iterdir():
        tool.chmod(0o755)
    return bin_dir, log


def _make_bench(tmp_path: Path, *args: str) -> tuple[subprocess.CompletedProcess, list[str]]:
    bin_dir, log = _fake_tools(tmp_path)
    stamp = tmp_path / "stamp"
    stamp.touch()  # newer than pyproject.toml: make does not set up a virtualenv
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    env.pop("MAKEFLAGS", None)
    result = subprocess.run(
        ["make", "-s", "-C", str(REPO), "bench", f"STAMP={stamp}", f"PY={bin_dir / 'python'}",
         f"VENV={tmp_path / 'no-venv'}", *args], env=env, capture_output=True, text=True)
    return result, log.read_text().splitlines() if log.is_file() else []


def test_make_bench_datasets_repros_their_stages_then_the_report_alone(tmp_path):
    result, calls = _make_bench(tmp_path, "DATASETS=fpb,tfns")
    assert result.returncode == 0, result.stderr
    assert calls == ["python -m tunebench.running.budget -- score@fpb score@tfns",
                     "dvc repro --single-item report", "python -m tunebench.running.readme"]


def test_make_bench_without_datasets_runs_the_whole_dag(tmp_path):
    result, calls = _make_bench(tmp_path)
    assert result.returncode == 0, result.stderr
    assert calls == ["python -m tunebench.running.budget", "python -m tunebench.running.readme"]


def test_make_bench_with_an_unknown_dataset_runs_nothing(tmp_path):
    result, calls = _make_bench(tmp_path, "DATASETS=fpb,fbp")
    assert result.returncode != 0 and calls == []
    assert "unknown dataset 'fbp'" in result.stderr


def test_make_bench_refuses_datasets_with_a_profile(tmp_path):
    result, calls = _make_bench(tmp_path, "DATASETS=fpb", "PROFILE=paper")
    assert result.returncode != 0 and calls == []
    assert "does not combine with PROFILE" in result.stderr


def test_help_explains_itself(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    assert "score@<dataset>" in text and "--single-item report" in text
