"""Tests for tunebench.evaluation.score and the `score` stage on small hand-made prediction
files."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tunebench.config import ConfigError
from tunebench.evaluation.metrics import classification_metrics
from tunebench.evaluation.score import (
    ci_method_param,
    compare_with,
    index_predictions,
    is_timing,
    round_floats,
    score_dataset,
    split_timings,
)
from tunebench.io import DataError, sha256_file, write_json, write_jsonl

REPO = Path(__file__).resolve().parents[1]
LABELS = ["negative", "neutral", "positive"]
TASK = {"dataset": "toy", "task": "toy", "version": 3, "labels": LABELS, "parser": "strict",
        "run": "r1", "notes": "toy note", "published": []}
# Ten test examples; targets cycle through the labels.
TEST_ROWS = [{"id": f"t{i}", "prompt": f"p{i}", "completion": LABELS[i % 3]} for i in range(10)]
TARGETS = {row["id"]: row["completion"] for row in TEST_ROWS}


def preds(right: set[int], invalid: set[int] = frozenset()) -> list[dict]:
    """Prediction rows, correct on the indices in ``right`` and INVALID on ``invalid``."""
    rows = []
    for i, row in enumerate(TEST_ROWS):
        target = row["completion"]
        wrong = LABELS[(i + 1) % 3]
        parsed = target if i in right else "INVALID" if i in invalid else wrong
        rows.append({"id": row["id"], "prompt_sha256": "x", "raw": parsed, "parsed": parsed,
                     "target": target})
    return rows


def meta(system: str, n: int = 10) -> dict:
    kind = system if system in ("base", "tuned") else "baseline"
    return {"system": system, "kind": kind, "model": None, "seconds": 2.0,
            "examples_per_s": n / 2.0, "n": n}


def systems(**rows_by_system) -> dict:
    return {name: (rows, meta(name, len(rows)), f"{name}.jsonl", f"{name}.meta.json")
            for name, rows in rows_by_system.items()}


def test_score_dataset_metrics_cis_and_comparisons() -> None:
    record, confusion = score_dataset(
        TASK, TEST_ROWS, systems(tuned=preds(set(range(10))), base=preds({0, 1}, {2, 3})),
        n_boot=200, seed=0)
    tuned, base = record["systems"]["tuned"], record["systems"]["base"]
    assert tuned["accuracy"] == 1.0 and tuned["ci95"]["accuracy"] == {"low": 1.0, "high": 1.0}
    assert base["accuracy"] == 0.2 and base["invalid_rate"] == 0.2
    low, high = base["ci95"]["f1_weighted"]["low"], base["ci95"]["f1_weighted"]["high"]
    assert 0.0 <= low <= base["f1_weighted"] <= high <= 1.0
    assert record["comparisons"]["tuned_vs_base"]["a_only"] == 8
    assert record["n"] == 10 and record["notes"] == "toy note" and record["version"] == 3
    assert set(record["packages"]) >= {"python", "numpy", "scikit-learn", "pandas", "torch"}
    assert confusion["base"][2] == {"actual": "positive", "predicted": "INVALID"}


def test_missing_id_names_file_and_id() -> None:
    rows = preds(set(range(10)))
    del rows[4]
    with pytest.raises(DataError, match=r"tuned\.jsonl: missing 1 test id.*'t4'"):
        index_predictions(rows, TARGETS, LABELS, "tuned.jsonl")


def test_extra_and_duplicate_ids_name_file_line_and_id() -> None:
    rows = preds(set(range(10)))
    extra = rows + [{**rows[0], "id": "zzz"}]
    with pytest.raises(DataError, match=r"base\.jsonl:11: extra id 'zzz'"):
        index_predictions(extra, TARGETS, LABELS, "base.jsonl")
    with pytest.raises(DataError, match=r"base\.jsonl:11: duplicate id 't0'"):
        index_predictions(rows + [rows[0]], TARGETS, LABELS, "base.jsonl")


@pytest.mark.parametrize(("field", "value", "message"), [
    ("target", "meh", "target 'meh' is not one of"),
    ("target", "neutral", "the test split says 'negative'"),
    ("parsed", "maybe", "parsed 'maybe' is neither a label nor 'INVALID'"),
    ("parsed", ["neutral"], r"parsed \['neutral'\] is neither a label nor 'INVALID'"),
    ("id", ["t0"], r"x\.jsonl:1: field 'id' must be a string, got list \['t0'\]"),
])
def test_bad_values_are_errors(field: str, value: str, message: str) -> None:
    rows = preds(set(range(10)))
    rows[0] = {**rows[0], field: value}
    with pytest.raises(DataError, match=message):
        index_predictions(rows, TARGETS, LABELS, "x.jsonl")


def test_stale_meta_is_an_error() -> None:
    bad = systems(tuned=preds(set(range(10))))
    bad["tuned"] = (bad["tuned"][0], meta("tuned", n=7), "tuned.jsonl", "tuned.meta.json")
    with pytest.raises(DataError, match=r"tuned\.meta\.json: n is 7 but the predictions have 10"):
        score_dataset(TASK, TEST_ROWS, bad, n_boot=10, seed=0)
    bad["tuned"] = (bad["tuned"][0], {**meta("tuned"), "dataset": "fpb"}, "t.jsonl", "t.json")
    with pytest.raises(DataError, match=r"t\.json: dataset 'fpb' but scoring 'toy'"):
        score_dataset(TASK, TEST_ROWS, bad, n_boot=10, seed=0)


def test_predictions_from_another_test_split_are_rejected() -> None:
    """The score stage passes the current test.jsonl's hash; a sidecar made from other test
    rows (or without a hash) is stale, never scored."""
    good = systems(tuned=preds(set(range(10))))
    good["tuned"][1]["test_sha256"] = "a" * 64
    record, _ = score_dataset(TASK, TEST_ROWS, good, n_boot=10, seed=0, test_sha256="a" * 64)
    assert record["systems"]["tuned"]["meta"]["test_sha256"] == "a" * 64
    with pytest.raises(DataError, match=r"tuned\.meta\.json: test_sha256 'aaaaaaaaaaaa' but "
                                        r"the test split now hashes to 'bbbbbbbbbbbb'.*stale"):
        score_dataset(TASK, TEST_ROWS, good, n_boot=10, seed=0, test_sha256="b" * 64)
    del good["tuned"][1]["test_sha256"]
    with pytest.raises(DataError, match=r"test_sha256 None but"):
        score_dataset(TASK, TEST_ROWS, good, n_boot=10, seed=0, test_sha256="a" * 64)


def test_mcnemar_aligned_by_id_not_row_order() -> None:
    tuned, base = preds({0, 1, 2, 3, 4, 5}), preds({4, 5, 6})
    ids = list(TARGETS)
    index = {name: index_predictions(rows, TARGETS, LABELS, name)
             for name, rows in (("tuned", tuned), ("base", base))}
    shuffled = {**index, "base": index_predictions(base[::-1], TARGETS, LABELS, "base")}
    in_order, reordered = compare_with(index, ids), compare_with(shuffled, ids)
    assert in_order == reordered
    # By hand: tuned alone right on t0-t3, base alone on t6, both on t4-t5, neither on 3.
    test = in_order["tuned_vs_base"]
    assert (test["a_only"], test["b_only"], test["both_correct"], test["both_wrong"]) == (
        4, 1, 2, 3)


def test_round_floats_keeps_small_p_values_and_drops_nan() -> None:
    assert round_floats({"p": 1.23456789e-12, "x": [0.1234567891, float("nan")], "n": 3}) == {
        "p": 1.23457e-12, "x": [0.123457, None], "n": 3}


@pytest.fixture
def score_inputs(tmp_path: Path) -> dict[str, Path]:
    instructions, predictions = tmp_path / "instructions", tmp_path / "predictions"
    write_json(instructions / "task.json", TASK)
    write_jsonl(instructions / "test.jsonl", TEST_ROWS)
    test_sha256 = sha256_file(instructions / "test.jsonl")  # as predict records it
    for name, rows in (("tuned", preds(set(range(8)))), ("base", preds({1, 2, 3}, {9})[::-1])):
        write_jsonl(predictions / f"{name}.jsonl", rows)
        write_json(predictions / f"{name}.meta.json", {**meta(name), "test_sha256": test_sha256})
    params = tmp_path / "params.yaml"
    params.write_text("score: {n_boot: 300, seed: 5}\n", encoding="utf-8")
    return {"instructions": instructions, "predictions": predictions, "params": params}


def score_argv(inputs: dict[str, Path], out: Path) -> list[str]:
    return [sys.executable, "-m", "stages.score", "--params", str(inputs["params"]),
            "--dataset", "toy", "--instructions", str(inputs["instructions"]),
            "--predictions", str(inputs["predictions"]), "--out", str(out / "toy.json"),
            "--figures", str(out / "confusion"), "--per-example", str(out / "per_example.jsonl"),
            "--timings", str(out / "timings.json")]


def run_together(*argvs: list[str]) -> list[tuple[int, str]]:
    """Run stage commands side by side (each spends seconds importing scikit-learn);
    returns (exit code, stderr) per command."""
    procs = [subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for argv in argvs]
    errors = [proc.communicate()[1] for proc in procs]
    return [(proc.returncode, err) for proc, err in zip(procs, errors, strict=True)]


def test_cli_help_and_runs_are_identical_without_timestamps(score_inputs, tmp_path) -> None:
    shown = subprocess.run([sys.executable, "-m", "stages.score", "--help"], cwd=REPO,
                           capture_output=True, text=True, check=True)
    assert "McNemar" in shown.stdout
    results = run_together(score_argv(score_inputs, tmp_path / "a"),
                           score_argv(score_inputs, tmp_path / "b"))
    assert [code for code, _ in results] == [0, 0], results
    text = (tmp_path / "a" / "toy.json").read_text(encoding="utf-8")
    assert text == (tmp_path / "b" / "toy.json").read_text(encoding="utf-8")
    assert not re.search(r"\d{4}-\d{2}-\d{2}|timestamp", text)
    record = json.loads(text)
    assert (record["seed"], record["n_boot"], record["systems"]["tuned"]["accuracy"]) == (
        5, 300, 0.8)
    rows = json.loads((tmp_path / "a" / "confusion" / "base.json").read_text(encoding="utf-8"))
    assert len(rows) == 10 and set(rows[0]) == {"actual", "predicted"}
    # Timings live in their own file, so equal answers give an equal metrics file.
    assert "seconds" not in text and "examples_per_s" not in text
    timings = json.loads((tmp_path / "a" / "timings.json").read_text(encoding="utf-8"))
    assert timings == {"dataset": "toy", "systems": {
        name: {"examples_per_s": 5.0, "seconds": 2.0} for name in ("base", "tuned")}}
    assert record["ci_method"] == "bca"  # the default when params name none
    assert set(record["comparisons"]["tuned_vs_base"]["f1_weighted_diff_ci"]) == {"low", "high"}


def test_cli_mismatch_is_a_one_line_error(score_inputs, tmp_path) -> None:
    rows = preds(set(range(10)))[:-1]
    write_jsonl(score_inputs["predictions"] / "tuned.jsonl", rows)
    [(code, stderr)] = run_together(score_argv(score_inputs, tmp_path / "out"))
    assert code == 2
    assert re.fullmatch(r"error: \S*tuned\.jsonl: missing 1 test id\(s\), e\.g\. 't9'\n", stderr)


def test_compare_with_gives_paired_f1_difference_and_ci() -> None:
    tuned, base = preds(set(range(8))), preds({0, 1}, {2, 3})
    index = {name: index_predictions(rows, TARGETS, LABELS, name)
             for name, rows in (("tuned", tuned), ("base", base))}
    test = compare_with(index, list(TARGETS), labels=LABELS, n_boot=300, seed=0)["tuned_vs_base"]
    f1 = {name: classification_metrics([r["target"] for r in rows], [r["parsed"] for r in rows],
                                       LABELS)["f1_weighted"] for name, rows in
          (("tuned", tuned), ("base", base))}
    assert test["f1_weighted_diff"] == pytest.approx(f1["tuned"] - f1["base"])
    ci = test["f1_weighted_diff_ci"]
    assert ci["low"] <= test["f1_weighted_diff"] <= ci["high"] and ci["low"] > 0
    assert "f1_weighted_diff" not in compare_with(index, list(TARGETS))["tuned_vs_base"]


def test_score_dataset_ci_method_is_recorded_and_used() -> None:
    rows = systems(tuned=preds(set(range(7))), base=preds({0, 1}, {2, 3}))
    pct = score_dataset(TASK, TEST_ROWS, rows, n_boot=200, seed=0, ci_method="percentile")[0]
    bca = score_dataset(TASK, TEST_ROWS, rows, n_boot=200, seed=0, ci_method="bca")[0]
    assert (pct["ci_method"], bca["ci_method"]) == ("percentile", "bca")
    assert pct["systems"]["tuned"]["f1_weighted"] == bca["systems"]["tuned"]["f1_weighted"]


def test_ci_method_param() -> None:
    assert ci_method_param({"score": {"n_boot": 10, "seed": 0}}) == "bca"
    assert ci_method_param({"score": {"ci_method": "percentile"}}) == "percentile"
    with pytest.raises(ConfigError, match="score.ci_method: expected one of"):
        ci_method_param({"score": {"ci_method": "studentized"}})


def test_split_timings_moves_every_timing_field() -> None:
    assert [k for k in ("seconds", "fit_seconds", "predict_seconds", "examples_per_s",
                        "tokens_per_s", "peak_memory_mb", "wall_time_s", "n", "batch_size",
                        "hardware", "max_new_tokens") if is_timing(k)] == [
        "seconds", "fit_seconds", "predict_seconds", "examples_per_s", "tokens_per_s",
        "peak_memory_mb", "wall_time_s"]
    record = {"dataset": "toy", "systems": {"b": {"kind": "baseline", "meta": {
        "n": 3, "fit_seconds": 0.1, "predict_seconds": 0.2, "seconds": 0.3,
        "examples_per_s": 10.0, "peak_memory_mb": 5.0}}}}
    quality, timings = split_timings(record)
    assert quality["systems"]["b"] == {"kind": "baseline", "meta": {"n": 3}}
    assert timings["systems"]["b"] == {"examples_per_s": 10.0, "fit_seconds": 0.1,
                                       "peak_memory_mb": 5.0, "predict_seconds": 0.2,
                                       "seconds": 0.3}
    assert record["systems"]["b"]["meta"]["seconds"] == 0.3  # the input is left as it was


def test_generated_answers_are_also_read_by_fingpts_parser() -> None:
    """Stored raw answers re-parsed by FinGPT's rule, beside (not among) the systems: the
    paired tests and their Holm family stay those of the answers as parsed."""
    base = preds({0, 1}, {2, 3})
    base[2]["raw"] = "The sentiment is positive, not negative."  # strict: INVALID (two labels)
    base[3]["raw"] = "I cannot tell."  # strict: INVALID; FinGPT's rule: neutral
    as_generated = systems(tuned=preds(set(range(10))), base=base)
    for _rows, m, *_where in as_generated.values():
        m["mode"] = "generate"
    record, _ = score_dataset(TASK, TEST_ROWS, as_generated, n_boot=200, seed=0)
    lenient = record["reparsed"]["fingpt"]
    assert set(lenient) == {"base", "tuned"} and set(record["systems"]) == {"base", "tuned"}
    assert set(record["comparisons"]) == {"tuned_vs_base"}
    # Row 2 (target positive) becomes right, row 3 (target negative) becomes neutral, wrong.
    assert lenient["base"]["answers_changed"] == 2
    assert lenient["base"]["accuracy"] == 0.3 and lenient["base"]["invalid_rate"] == 0.0
    assert lenient["tuned"]["answers_changed"] == 0
    assert lenient["base"]["parsed_by"] == "task parser" and "ci95" in lenient["base"]


def test_reparsing_skips_loglik_systems_and_labels_fingpt_does_not_know() -> None:
    scored = systems(tuned=preds(set(range(10))))  # no mode: not a generated answer
    record, _ = score_dataset(TASK, TEST_ROWS, scored, n_boot=50, seed=0)
    assert "reparsed" not in record
    task = {**TASK, "labels": ["yes", "no"]}
    rows = [{"id": f"t{i}", "prompt": "p", "completion": ["yes", "no"][i % 2]} for i in range(4)]
    generated = [{"id": r["id"], "prompt_sha256": "x", "raw": "yes", "parsed": "yes",
                  "target": r["completion"]} for r in rows]
    m = {**meta("tuned", 4), "mode": "generate"}
    record, _ = score_dataset(task, rows, {"tuned": (generated, m, "t.jsonl", "t.meta.json")},
                              n_boot=50, seed=0)
    assert "reparsed" not in record
