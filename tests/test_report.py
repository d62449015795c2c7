"""The report: summary rows/CSV, Markdown content, and the `report` stage's files."""

import csv
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tunebench.report import fmt, render_report, summary_csv, summary_json, summary_rows
from tunebench.score import score_dataset

REPO = Path(__file__).resolve().parents[1]
LABELS = ["negative", "neutral", "positive"]
PUBLISHED = [{"system": "FinGPT v3.3 (Llama2-13B + LoRA)", "kind": "tuned", "f1_weighted": 0.882},
             {"system": "Llama2-7B-chat zero-shot", "kind": "base", "f1_weighted": 0.39}]
MODEL = {"name": "tiny", "id": "org/tiny-model", "revision": "0123456789abcdef"}


def record(dataset: str, tuned_right: int, notes: str = "") -> dict:
    """A score record for 12 examples: tuned right on the first ``tuned_right``, base on 4."""
    test = [{"id": f"{dataset}{i}", "prompt": "p", "completion": LABELS[i % 3]} for i in range(12)]

    def rows(right: int) -> list[dict]:
        return [{"id": r["id"], "prompt_sha256": "x", "raw": "r", "target": r["completion"],
                 "parsed": r["completion"] if i < right else "INVALID"}
                for i, r in enumerate(test)]

    systems = {}
    for name, right in (("tuned", tuned_right), ("base", 4), ("majority", 4)):
        kind = name if name != "majority" else "baseline"
        meta = {"system": name, "kind": kind, "model": MODEL if kind != "baseline" else None,
                "seconds": 3.0, "examples_per_s": 4.0, "n": 12}
        systems[name] = (rows(right), meta, f"{name}.jsonl", f"{name}.meta.json")
    task = {"dataset": dataset, "task": dataset, "version": 1, "labels": LABELS, "run": "r",
            "notes": notes, "published": PUBLISHED}
    sample = {"train": {"rows_in": 900, "rows_out": 64}, "test": {"rows_in": 300, "rows_out": 12}}
    return score_dataset(task, test, systems, n_boot=100, seed=0, sample=sample)[0]


@pytest.fixture(scope="module")
def records() -> list[dict]:
    return [record("alpha", 12, notes="alpha uses a proxy split"), record("beta", 8)]


def test_summary_rows_csv_and_json(records: list[dict]) -> None:
    rows = summary_rows(records)
    assert [(r["dataset"], r["system"]) for r in rows][:3] == [
        ("alpha", "majority"), ("alpha", "base"), ("alpha", "tuned")]
    parsed = list(csv.DictReader(summary_csv(rows).splitlines()))
    assert len(parsed) == 6 and float(parsed[2]["accuracy"]) == 1.0
    assert float(parsed[2]["f1_weighted_ci_low"]) == 1.0
    assert summary_json(rows)["beta"]["base"]["invalid_rate"] == pytest.approx(8 / 12)


def test_report_shows_published_figures_p_value_and_notes(records: list[dict]) -> None:
    train = {"r": {"wall_time_s": 61.5, "steps": 8}}  # the other keys are missing
    text = render_report(records, train, {("alpha", "tuned"): "plots/a.png"}, "plots/f1.png")
    p_value = records[0]["comparisons"]["tuned_vs_base"]["p_value"]
    assert f"p = {fmt(p_value)}" in text and p_value < 0.01
    assert "FinGPT v3.3 (Llama2-13B + LoRA) | tuned | 0.882" in text
    assert "> **Note:** alpha uses a proxy split" in text
    assert "| r | – | 8 | 61.50 |" in text
    assert "tiny: org/tiny-model @ 0123456789ab" in text
    assert "64 of 900" in text and "![alpha tuned confusion](plots/a.png)" in text


def test_cli_writes_md_csv_and_pngs(records: list[dict], tmp_path: Path) -> None:
    shown = subprocess.run([sys.executable, "-m", "stages.report", "--help"], cwd=REPO,
                           capture_output=True, text=True, check=True)
    assert "report.md" in shown.stdout
    paths = []
    for rec in records:
        paths.append(tmp_path / f"{rec['dataset']}.json")
        paths[-1].write_text(json.dumps(rec), encoding="utf-8")
    train = tmp_path / "train" / "fingpt"  # a DVCLive folder: the run is its name
    train.mkdir(parents=True)
    (train / "metrics.json").write_text(json.dumps({"tokens_per_s": 150.0}), encoding="utf-8")
    out = tmp_path / "out"
    subprocess.run([sys.executable, "-m", "stages.report", "--metrics", *map(str, paths),
                    "--train", str(train), "--out-dir", str(out)],
                   cwd=REPO, capture_output=True, text=True, check=True)
    pngs = {"f1_weighted.png", "confusion_alpha_base.png", "confusion_alpha_tuned.png",
            "confusion_beta_base.png", "confusion_beta_tuned.png"}
    assert {p.name for p in (out / "plots").iterdir()} == pngs
    assert all((out / "plots" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for name in pngs)
    assert len((out / "summary.csv").read_text(encoding="utf-8").splitlines()) == 7
    assert json.loads((out / "summary.json").read_text(encoding="utf-8"))["alpha"]["tuned"]
    md = (out / "report.md").read_text(encoding="utf-8")
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md)
    assert len(links) == 5 and all(link.startswith("plots/") for link in links)
    assert all((out / link).is_file() for link in links)
    assert "0.882" in md and "| fingpt |" in md
