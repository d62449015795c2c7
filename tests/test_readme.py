"""The README's results tables are generated from the score records and must agree with them."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_report import record, summarization_record
from tunebench.running.readme import BEGIN, END, main, replace_section, results_section

REPO = Path(__file__).resolve().parents[1]


def test_committed_readme_agrees_with_committed_metrics() -> None:
    """Fails when metrics/datasets/*.json changed and `python -m tunebench.running.readme` (run by
    `make bench`) was not."""
    done = subprocess.run([sys.executable, "-m", "tunebench.running.readme", "--check"], cwd=REPO,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_section_rows_verdicts_and_summaries() -> None:
    text = results_section([record("alpha", 12), summarization_record()])
    row = next(line for line in text.splitlines() if line.startswith("| alpha |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[:2] == ["alpha", "12"] and cells[6] == "67%"  # base invalid 8 of 12
    assert cells[4] == "–"  # no strong floor (tfidf_full) in this record
    assert cells[8].startswith("1.000 [") and cells[9].startswith("+")
    # 8 discordant pairs, all for tuned: p = 0.0078, times 2 tests (Holm) = 0.016 >= 0.01.
    assert cells[10] == "0.016" and cells[-1] == "does not beat base; does not beat majority"
    assert "| xsum | tuned | 50 | 0.260 [0.230, 0.300] |" in text
    assert "| xsum | 50 | +0.050 [+0.010, +0.090] |" in text


def test_check_fails_when_readme_and_metrics_disagree(tmp_path: Path, capsys) -> None:
    metrics = tmp_path / "datasets"
    metrics.mkdir()
    (metrics / "alpha.json").write_text(json.dumps(record("alpha", 12)), encoding="utf-8")
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n\nintro\n\n{BEGIN}\nold numbers\n{END}\n\nafter\n", encoding="utf-8")
    argv = ["--metrics", str(metrics), "--readme", str(readme)]
    assert main([*argv, "--check"]) == 1 and "differ" in capsys.readouterr().err
    assert main(argv) == 0
    text = readme.read_text(encoding="utf-8")
    assert text.startswith("# x\n\nintro\n\n") and text.endswith(f"{END}\n\nafter\n")
    assert "old numbers" not in text and "| alpha | 12 |" in text
    assert main([*argv, "--check"]) == 0
    (metrics / "alpha.json").write_text(json.dumps(record("alpha", 9)), encoding="utf-8")
    assert main([*argv, "--check"]) == 1


def test_markers_are_required_once() -> None:
    with pytest.raises(ValueError, match="exactly one"):
        replace_section("no markers", "x")
    with pytest.raises(ValueError, match="exactly one"):
        replace_section(f"{BEGIN}{END}{BEGIN}{END}", "x")


def test_base_loglik_column_takes_the_selected_variant() -> None:
    from tunebench.running.readme import selected_loglik

    def system(kind, selected=None):
        meta = {} if selected is None else {"loglik_selected": selected}
        return {"kind": kind, "meta": meta}

    systems = {"base-loglik": system("base", False), "base-loglik_mean": system("base", True),
               "base-loglik_calibrated": system("base", False), "tuned": system("tuned")}
    assert selected_loglik(systems) == "base-loglik_mean"
    # predictions from before the variants: the summed loglik, as before
    assert selected_loglik({"base-loglik": system("base"), "tuned": system("tuned")}) == \
        "base-loglik"
    assert selected_loglik({"tuned": system("tuned")}) is None


def readme_args(tmp_path: Path, **sources: Path) -> tuple[Path, list[str]]:
    """A copy of the README in tmp_path and the readme arguments over it: the committed
    metrics files, except the `sources` given (budget=, crosscheck=, tradeoff=)."""
    readme = tmp_path / "README.md"
    readme.write_text((REPO / "README.md").read_text(encoding="utf-8"))
    paths = {"metrics": REPO / "metrics/datasets", "budget": REPO / "metrics/budget.json",
             "crosscheck": REPO / "metrics/crosscheck.json",
             "tradeoff": REPO / "metrics/tradeoff.json", **sources}
    return readme, ["--readme", str(readme),
                    *(x for key, path in paths.items() for x in (f"--{key}", str(path)))]


def test_budget_section_is_generated_and_checked(tmp_path: Path) -> None:
    budget = {"command": "dvc repro", "complete": True, "total_seconds": 120.0,
              "stages": {"fetch@a": 30.0, "train-qlora@r": 90.0}, "skipped": [],
              "by_kind": {"fetch": 30.0, "train-qlora": 90.0},
              "hardware": {"cpu": "Test CPU", "torch_threads": 2, "cpu_bf16_flags": []}}
    (tmp_path / "budget.json").write_text(json.dumps(budget))
    readme, args = readme_args(tmp_path, budget=tmp_path / "budget.json")
    assert main(args) == 0
    text = readme.read_text(encoding="utf-8")
    assert "| train-qlora | 1 | 1.5 | 75% |" in text and "Test CPU" in text
    assert main([*args, "--check"]) == 0
    budget["total_seconds"] = 180.0
    (tmp_path / "budget.json").write_text(json.dumps(budget))
    assert main([*args, "--check"]) == 1


def test_crosscheck_section_is_generated_and_checked(tmp_path: Path) -> None:
    record = tmp_path / "crosscheck.json"
    readme, args = readme_args(tmp_path, crosscheck=record)
    assert main(args) == 0
    assert f"Not run for a committed result yet (`make crosscheck` writes {record})" in \
        readme.read_text(encoding="utf-8")
    entry = {"n": 4, "prompt_format": "raw", "agreement": 1.0, "max_abs_loglik_diff": 2e-6,
             "accuracy_tunebench": 0.5, "accuracy_lmeval": 0.5, "tunebench_examples_per_s": 30.0,
             "lmeval_examples_per_s": 10.0, "speed_ratio": 3.0, "speed_ratio_end_to_end": 4.5,
             "split": {"agreement": 1.0, "max_offset_spread": 1e-6,
                       "answers": {"tunebench_split": {"a": 4}, "lmeval_split": {"a": 4}}},
             "fp32_vs_4bit": None}
    record.write_text(json.dumps({"results": {"tfns": {"tuned": entry}},
                                  "hardware": {"cpu": "Test CPU"},
                                  "settings": {"torch_threads": 2, "batch_size": 16}}))
    assert main([*args, "--check"]) == 1
    assert main(args) == 0
    text = readme.read_text(encoding="utf-8")
    assert "| tfns | tuned | raw | 4 | 100.0% |" in text
    assert "Measured on Test CPU, 2 threads, batch 16." in text
    assert main([*args, "--check"]) == 0


def test_tradeoff_section_is_generated_and_checked(tmp_path: Path) -> None:
    record = tmp_path / "tradeoff.json"
    readme, args = readme_args(tmp_path, tradeoff=record)
    assert main(args) == 0
    assert f"Not measured for a committed result yet (`make tradeoff` writes {record})" in \
        readme.read_text(encoding="utf-8")
    point = {"train_per_set": 125, "train_examples": 500, "steps": 63, "train_loss": 1.0,
             "seconds": {"train-qlora": 300.0, "predict-tuned": None}, "source": "test",
             "datasets": {"fpb": {"n": 400, "f1_weighted": 0.6, "invalid_rate": 0.0,
                                  "ci95": {"low": 0.55, "high": 0.65},
                                  "halfwidth_by_test_size": {"100": 0.09, "400": 0.05}}}}
    record.write_text(json.dumps({"run": "fingpt", "test_sizes": [100], "points": [point],
                                  "hardware": {"cpu": "Test CPU", "torch_threads": 2}}))
    assert main([*args, "--check"]) == 1
    assert main(args) == 0
    text = readme.read_text(encoding="utf-8")
    assert "| 500 (125/set) | 0.600 [0.550, 0.650] | 5.0 | not measured |" in text
    assert "| 500 | fpb | ±0.090 | ±0.050 |" in text
    assert "Run `fingpt`: 500 training examples from test." in text
    assert "Measured on Test CPU, 2 threads." in text
    assert main([*args, "--check"]) == 0
