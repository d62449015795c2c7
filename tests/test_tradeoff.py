"""tunebench.running.tradeoff: the training-size / test-size trade-off record (stages faked)."""

import json
from pathlib import Path

import pytest

from tunebench.io import DataError, write_json, write_jsonl
from tunebench.running import tradeoff

LABELS = ["negative", "neutral", "positive"]
PARAMS = {"datasets": {"a": {"run": "r", "caps": {"train": 8, "test": 40}},
                       "b": {"run": "r"}},
          "runs": {"r": {"mixture": {"a": 1, "b": 1}}},
          "score": {"n_boot": 200, "seed": 0, "ci_method": "percentile"}}


def _instructions(folder, n=40):
    rows = [{"id": f"x{i}", "prompt": "p", "completion": LABELS[i % 3]} for i in range(n)]
    write_json(folder / "task.json", {"labels": LABELS})
    write_jsonl(folder / "test.jsonl", rows)
    return rows


def _predictions(folder, rows, wrong_every=4):
    write_jsonl(folder / "tuned.jsonl", [
        {"id": r["id"], "prompt_sha256": "0", "raw": "", "target": r["completion"],
         "parsed": LABELS[0] if i % wrong_every == 0 else r["completion"]}
        for i, r in enumerate(rows)])
    write_json(folder / "tuned.meta.json", {"seconds": 3.5})


def test_train_cap_changes_only_the_mixtures_train_caps():
    out = tradeoff.params_with_train_cap(PARAMS, ["a", "b"], 100)
    assert out["datasets"]["a"]["caps"] == {"train": 100, "test": 40}
    assert out["datasets"]["b"]["caps"] == {"train": 100}
    assert PARAMS["datasets"]["a"]["caps"]["train"] == 8  # the input is not modified


def test_score_tuned_and_halfwidths_shrink_with_more_test_examples(tmp_path):
    rows = _instructions(tmp_path / "i", n=300)
    _predictions(tmp_path / "p", rows)
    scored = tradeoff.score_tuned(tmp_path / "i", tmp_path / "p", PARAMS, [50, 100])
    assert scored["n"] == 300 and scored["predict_seconds"] == 3.5
    assert scored["ci95"]["low"] < scored["f1_weighted"] < scored["ci95"]["high"]
    widths = scored["halfwidth_by_test_size"]
    assert list(widths) == ["50", "100", "300"]
    assert widths["50"] > widths["100"] > widths["300"] > 0


def test_measure_refuses_a_test_sample_that_differs_from_the_committed_one(tmp_path,
                                                                          monkeypatch):
    monkeypatch.chdir(tmp_path)
    committed = tmp_path / "data/instructions/r/a"
    _instructions(committed)

    def fake_stage(module, *args):
        out = Path(args[args.index("--out") + 1])
        _instructions(out, n=39)  # one test example fewer than committed
        return 1.0

    monkeypatch.setattr(tradeoff, "stage", fake_stage)
    with pytest.raises(DataError, match="differs from"):
        tradeoff.measure(PARAMS, "r", 16, tmp_path / "w", [10])


def test_measure_records_a_point_from_the_stages(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    calls = []

    def fake_stage(module, *args):
        calls.append(module)
        opts = dict(zip(args[::2], args[1::2], strict=False))
        if module == "format_instructions":
            _instructions(Path(opts["--out"]))
        elif module == "train_qlora":
            write_json(Path(opts["--live"]) / "metrics.json",
                       {"n_examples": 32, "steps": 4, "train_loss": 0.5})
        else:
            folder = Path(opts["--out-dir"])
            _predictions(folder, json_rows(opts["--instructions"]))
        return 2.0

    def json_rows(folder):
        path = Path(folder) / "test.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines()]

    monkeypatch.setattr(tradeoff, "stage", fake_stage)
    point = tradeoff.measure(PARAMS, "r", 16, tmp_path / "w", [10])
    assert calls == ["format_instructions"] * 2 + ["train_qlora"] + ["predict"] * 2
    assert point["train_examples"] == 32 and point["train_per_set"] == 16
    assert point["seconds"] == {"format-instructions": 4.0, "predict-tuned": 4.0,
                                "train-qlora": 2.0}
    assert set(point["datasets"]) == {"a", "b"}
    written = (tmp_path / "w" / "params.yaml").read_text()
    assert "train: 16" in written
    table = tradeoff.render_table({"points": [point]})
    assert table.splitlines()[2].startswith("| 32 (16/set) | 0.854 [")
    assert "| 32 | a | ±" in table


def test_unknown_run_is_a_clear_error(tmp_path, capsys):
    path = tmp_path / "params.yaml"
    path.write_text("runs: {r: {mixture: {a: 1}}}\n")
    assert tradeoff.main(["--params", str(path), "--run", "nope", "--train-per-set", "4"]) == 2
    assert "no run 'nope'" in capsys.readouterr().err


def test_points_accumulate_across_runs_and_a_size_is_replaced(tmp_path):
    out = tmp_path / "tradeoff.json"
    hw = {"cpu": "Test CPU", "torch_threads": 2}
    record = tradeoff.earlier_record(out, "r", [10], hw)
    tradeoff.add_point(record, {"train_per_set": 250, "v": 1})
    tradeoff.add_point(record, {"train_per_set": 125, "v": 1})
    write_json(out, record)
    again = tradeoff.earlier_record(out, "r", [10], hw)
    tradeoff.add_point(again, {"train_per_set": 250, "v": 2})
    assert [(p["train_per_set"], p["v"]) for p in again["points"]] == [(125, 1), (250, 2)]
    # another run, other test sizes or other hardware start afresh: they would not compare
    assert tradeoff.earlier_record(out, "other", [10], hw)["points"] == []
    assert tradeoff.earlier_record(out, "r", [10, 20], hw)["points"] == []
    assert tradeoff.earlier_record(out, "r", [10], {**hw, "cpu": "Other"})["points"] == []
