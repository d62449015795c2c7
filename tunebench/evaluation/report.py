"""The benchmark report: a summary table, a Markdown write-up and a few PNG plots.

Inputs are the per-dataset records written by ``score`` (see tunebench/evaluation/score.py) and,
optionally, the training metrics of each fine-tuning run. A record's ``type`` is
"classification" (the default when it is missing) or "summarization"; the classification
tables, CSV and plots use only the first kind, the summarization section and CSV only the
second. Text builders are pure functions of those records; matplotlib is imported only inside
the plotting functions (Agg backend, so it renders offline and headless).

Timings (seconds, examples/s, memory) are not in the score records: `score` writes them to
metrics/timings/datasets/<dataset>.json, and :func:`merge_timings` puts them back into each
system's meta for the tables. The report opens with one verdict per classification dataset
(:func:`verdicts`): tuned vs base and vs the best floor on weighted F1, FinGPT's headline
metric, with paired bootstrap CIs and Holm-adjusted McNemar p-values.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from tunebench.io import DataError, read_json

# Weakest reference first.
SYSTEM_ORDER = ("majority", "tfidf_logreg", "tfidf_full", "base", "tuned")
TYPES = ("classification", "summarization")
CONFUSION_SYSTEMS = ("base", "tuned")
CSV_FIELDS = ("dataset", "system", "kind", "n", "accuracy", "accuracy_ci_low",
              "accuracy_ci_high", "f1_weighted", "f1_weighted_ci_low", "f1_weighted_ci_high",
              "f1_macro", "invalid_rate")
# (key in the training metrics, column title); a run without a key shows a dash.
TRAIN_COLUMNS = (("n_examples", "examples"), ("steps", "steps"), ("wall_time_s", "wall s"),
                 ("tokens_per_s", "tokens/s"), ("peak_memory_mb", "peak MB"),
                 ("trainable_params", "trainable params"), ("train_loss", "train loss"))
# The training metrics that are timings: they go to the timings summary, not summary.json.
TRAIN_TIMINGS = ("wall_time_s", "tokens_per_s", "peak_memory_mb")
SUMMARIZATION_CSV_FIELDS = ("dataset", "system", "kind", "metric", "n", "n_empty", "mean",
                            "median", "ci95_low", "ci95_high")
STAT_KEYS = ("mean", "median", "ci95_low", "ci95_high")
DASH = "–"


def smoke_marker(params: Mapping) -> dict | None:
    """The profile marker of a smoke run's params ({name, variant, smoke}), else None."""
    marker = params.get("profile")
    return dict(marker) if isinstance(marker, Mapping) and marker.get("smoke") is True else None


def smoke_banner(marker: Mapping) -> str:
    """The line a smoke run's report opens with."""
    return (f"> **Smoke run** (profile `{marker.get('name')}`, variant `{marker.get('variant')}`):"
            " tiny samples and a few training steps, to check that every stage runs and to show"
            " the report's shape. These figures say nothing about how fine-tuning compares with"
            " prompting; `make bench` runs the CPU default.\n\n")


def record_type(record: Mapping) -> str:
    """"classification" or "summarization"; records from before the field are classification."""
    return record.get("type") or "classification"


def of_type(records: Sequence[Mapping], kind: str) -> list[Mapping]:
    return [r for r in records if record_type(r) == kind]


def ordered_systems(systems: Mapping[str, object]) -> list[str]:
    """SYSTEM_ORDER's baselines, then other systems of kind "baseline" (e.g. lead) by name,
    then base and tuned, then everything else by name (base-loglik, zeroshot_llm, ...). The
    values may be system records (their "kind" is read) or anything else (no kind)."""
    first_model = SYSTEM_ORDER.index("base")

    def key(name: str) -> tuple[int, int, str]:
        if name in SYSTEM_ORDER:
            pos = SYSTEM_ORDER.index(name)
            return (0 if pos < first_model else 2, pos, name)
        value = systems[name]
        baseline = isinstance(value, Mapping) and value.get("kind") == "baseline"
        return (1 if baseline else 3, 0, name)

    return sorted(systems, key=key)


def fmt(value: object, digits: int = 3) -> str:
    if value is None:
        return DASH
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:.{digits}f}" if abs(value) >= 10 ** -digits or value == 0 else f"{value:.1e}"


def summary_rows(records: Sequence[Mapping]) -> list[dict]:
    """One flat row per classification dataset x system (the CSV and summary.json content)."""
    rows = []
    for record in of_type(records, "classification"):
        for name in ordered_systems(record["systems"]):
            s = record["systems"][name]
            ci = s.get("ci95", {})
            rows.append({
                "dataset": record["dataset"], "system": name, "kind": s.get("kind"),
                "n": s["n"], "accuracy": s["accuracy"],
                "accuracy_ci_low": ci.get("accuracy", {}).get("low"),
                "accuracy_ci_high": ci.get("accuracy", {}).get("high"),
                "f1_weighted": s["f1_weighted"],
                "f1_weighted_ci_low": ci.get("f1_weighted", {}).get("low"),
                "f1_weighted_ci_high": ci.get("f1_weighted", {}).get("high"),
                "f1_macro": s["f1_macro"], "invalid_rate": s["invalid_rate"],
            })
    return rows


def summarization_rows(records: Sequence[Mapping]) -> list[dict]:
    """One flat row per summarization dataset x system x metric (summary_summarization.csv)."""
    rows = []
    for record in of_type(records, "summarization"):
        for name in ordered_systems(record["systems"]):
            s = record["systems"][name]
            stats = s.get("stats") or {}
            for metric in record.get("metrics") or list(stats):
                values = stats.get(metric) or {}
                rows.append({
                    "dataset": record["dataset"], "system": name, "kind": s.get("kind"),
                    "metric": metric, "n": values.get("n", s.get("n")),
                    "n_empty": s.get("n_empty"), **{k: values.get(k) for k in STAT_KEYS},
                })
    return rows


def summary_json(rows: Sequence[Mapping], summarization: Sequence[Mapping] = ()) -> dict:
    """dataset -> system -> metrics, nested so `dvc metrics show` reads it key by key.
    Summarization systems (rows from summarization_rows) carry kind, n and n_empty, and one
    {mean, median, ci95_low, ci95_high} per metric. No timings (see timings_summary)."""
    out: dict[str, dict] = {}
    for row in rows:
        values = {k: v for k, v in row.items() if k not in ("dataset", "system")}
        out.setdefault(row["dataset"], {})[row["system"]] = values
    for row in summarization:
        system = out.setdefault(row["dataset"], {}).setdefault(row["system"], {
            k: row[k] for k in ("kind", "n", "n_empty")})
        system[row["metric"]] = {k: row[k] for k in STAT_KEYS}
    return out


def merge_timings(records: Sequence[Mapping], timings: Mapping[str, Mapping]) -> list[dict]:
    """Records with each system's timings (dataset -> {"systems": {name: fields}}, the files
    score writes) merged into its meta, where the tables read them. A record without timings
    keeps its meta (records from before the split carry them there)."""
    out = []
    for record in records:
        extra = (timings.get(record["dataset"]) or {}).get("systems") or {}
        systems = {name: {**s, "meta": {**(s.get("meta") or {}), **(extra.get(name) or {})}}
                   for name, s in record["systems"].items()}
        out.append({**record, "systems": systems})
    return out


def timings_summary(records: Sequence[Mapping], timings: Mapping[str, Mapping],
                    train: Mapping[str, Mapping]) -> dict:
    """The source of the report's speed columns: dataset -> system -> timing fields (from the
    timings files, else the meta of older records), and the fine-tuning runs' TRAIN_TIMINGS."""
    datasets = {}
    for record in records:
        extra = (timings.get(record["dataset"]) or {}).get("systems") or {}
        datasets[record["dataset"]] = {
            name: extra.get(name) or {k: v for k, v in (s.get("meta") or {}).items()
                                      if k in ("seconds", "examples_per_s", "fit_seconds",
                                               "predict_seconds")}
            for name, s in record["systems"].items()}
    runs = {name: {k: m[k] for k in TRAIN_TIMINGS if k in m} for name, m in sorted(train.items())}
    return {"datasets": datasets, "train": runs}


# --- verdicts: tuned vs base and vs the best floor, weighted F1, Holm over the report's tests
ALPHA = 0.01  # the verdicts' significance level, after Holm's adjustment
# The best of these is "the floor": majority, TF-IDF + LR on the tuned model's own training
# examples, and TF-IDF + LR on the whole training split (the strong floor).
FLOORS = ("majority", "tfidf_logreg", "tfidf_full")
FAMILY = ("every McNemar test of tuned against another system (base, base-loglik, the "
          "baselines, tuned-loglik, ...) that the report shows, over all classification "
          "datasets")


def holm(p_values: Mapping[object, float]) -> dict[object, float]:
    """Holm's step-down adjustment: the i-th smallest of m p-values times (m - i + 1), kept
    monotone and capped at 1."""
    order = sorted(p_values, key=lambda key: p_values[key])
    adjusted, running = {}, 0.0
    for i, key in enumerate(order):
        running = max(running, min(1.0, (len(order) - i) * p_values[key]))
        adjusted[key] = running
    return adjusted


def best_floor(record: Mapping) -> str | None:
    """The stronger of the FLOORS present: higher weighted F1, then accuracy; FLOORS order on
    ties."""
    systems = record["systems"]
    present = [name for name in FLOORS if name in systems]
    if not present:
        return None
    return max(present, key=lambda n: (systems[n]["f1_weighted"], systems[n]["accuracy"],
                                       -present.index(n)))


def _verdict(record: Mapping, key: str, p_holm: float | None, alpha: float) -> dict:
    """One tuned-vs-X verdict: beats when the Holm p < alpha, tuned is right more often and has
    the higher weighted F1, and the paired 95% CI of that difference lies above 0 (records
    from before the CI field are judged without it, and say so)."""
    c = record["comparisons"][key]
    other, systems = c["b"], record["systems"]
    diff = c.get("f1_weighted_diff")
    if diff is None and "tuned" in systems and other in systems:  # records before the field
        diff = systems["tuned"]["f1_weighted"] - systems[other]["f1_weighted"]
    ci, acc = c.get("f1_weighted_diff_ci"), c.get("accuracy_diff") or 0.0
    beats = False
    if p_holm is None or p_holm >= alpha:
        why = f"Holm p = {fmt(p_holm)} ≥ {alpha}"
    elif acc <= 0 or diff is None or diff <= 0:
        why = (f"{other} is better, Holm p = {fmt(p_holm)}" if acc < 0 and (diff or 0) < 0
               else "accuracy and weighted F1 disagree")
    elif ci and ci["low"] <= 0:
        why = "the weighted-F1 CI includes 0"
    else:
        beats, why = True, f"Holm p = {fmt(p_holm)} < {alpha}"
    if not ci:
        why += "; no paired CI in these metrics (rerun score)"
    return {"comparison": key, "other": other, "f1_weighted_diff": diff,
            "f1_weighted_diff_ci": ci, "accuracy_diff": c.get("accuracy_diff"),
            "p_value": c["p_value"], "p_holm": p_holm, "beats": beats,
            "verdict": f"tuned {'beats' if beats else 'does not beat'} {other}", "reason": why}


def verdicts(records: Sequence[Mapping], alpha: float = ALPHA) -> dict:
    """Per classification dataset: tuned's weighted F1 [CI], and the verdicts tuned vs base and
    vs the best floor, with the Holm adjustment over FAMILY (the p_holm of every test)."""
    records = [r for r in of_type(records, "classification") if "tuned" in r["systems"]]
    raw = {(r["dataset"], key): c["p_value"] for r in records
           for key, c in sorted((r.get("comparisons") or {}).items())
           if key.startswith("tuned_vs_") and c.get("p_value") is not None}
    adjusted = holm(raw)
    out = {}
    for r in records:
        ds, tuned = r["dataset"], r["systems"]["tuned"]
        p_holm = {key: p for (d, key), p in adjusted.items() if d == ds}
        entry = {"n": r["n"], "tuned_f1_weighted": tuned["f1_weighted"],
                 "tuned_f1_weighted_ci": (tuned.get("ci95") or {}).get("f1_weighted"),
                 "ci_method": r.get("ci_method", "percentile"), "p_holm": p_holm}
        for name, other in (("vs_base", "base"), ("vs_best_floor", best_floor(r))):
            key = f"tuned_vs_{other}"
            if other and key in (r.get("comparisons") or {}):
                entry[name] = _verdict(r, key, p_holm.get(key), alpha)
        out[ds] = entry
    return {"alpha": alpha, "ci_level": 0.95, "family": FAMILY, "family_size": len(raw),
            "correction": "holm", "datasets": out}


def _diff_ci(v: Mapping) -> str:
    ci = v.get("f1_weighted_diff_ci")
    text = f"{v['f1_weighted_diff']:+.3f}" if v.get("f1_weighted_diff") is not None else DASH
    return text + (f" [{ci['low']:+.3f}, {ci['high']:+.3f}]" if ci else "")


def verdict_section(summary: Mapping) -> str:
    """The report's opening: a table of the verdicts and one plain line per dataset."""
    if not summary["datasets"]:
        return ""
    rows, lines = [], []
    for ds, v in summary["datasets"].items():
        base, floor = v.get("vs_base") or {}, v.get("vs_best_floor") or {}
        ci = v.get("tuned_f1_weighted_ci")
        rows.append([ds, fmt(v["n"]), fmt(v["tuned_f1_weighted"])
                     + (f" [{fmt(ci['low'])}, {fmt(ci['high'])}]" if ci else ""),
                     _diff_ci(base) if base else DASH, fmt(base.get("p_value")),
                     fmt(base.get("p_holm")), str(floor.get("other") or DASH),
                     _diff_ci(floor) if floor else DASH, fmt(floor.get("p_value")),
                     fmt(floor.get("p_holm"))])
        said = [f"{x['verdict']} ({x['reason']})" for x in (base, floor) if x]
        lines.append(f"- **{ds}**: " + ("; ".join(said) or "no comparisons") + ".")
    header = ["dataset", "n", "tuned F1w [95% CI]", "Δ F1w tuned − base [95% CI]",
              "McNemar p", "Holm p", "best floor", "Δ F1w tuned − floor [95% CI]",
              "McNemar p", "Holm p"]
    return "\n".join([
        "## Verdicts: weighted F1 (FinGPT's headline metric)", "",
        _table(header, rows), "", *lines, "",
        f"A verdict says *beats* when the Holm-adjusted McNemar p is below {summary['alpha']}, "
        "tuned is right on more examples, and the paired bootstrap 95% CI of the weighted-F1 "
        "difference (both systems scored on the same resampled ids) lies above 0. The best "
        "floor is the highest weighted F1 of majority, TF-IDF + LR on the tuned model's "
        "training examples and TF-IDF + LR on the whole training split (the strong floor), "
        "of those the report ran. Holm's adjustment runs "
        f"over the family of {summary['family_size']} tests: {summary['family']}; the "
        "per-dataset sections show each one's Holm p."])


def summary_csv(rows: Sequence[Mapping], fields: Sequence[str] = CSV_FIELDS) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def describe_model(model: Mapping | None) -> str:
    """One line naming a model from the fields its provenance record has."""
    if not model:
        return DASH
    parts = [str(model.get("id") or model.get("path") or model.get("package") or "")]
    if model.get("revision"):
        parts.append(f"@ {str(model['revision'])[:12]}")
    if model.get("file"):
        parts.append(f"({model['file']}")
        parts[-1] += f", sha256 {str(model['sha256'])[:12]})" if model.get("sha256") else ")"
    if model.get("load_in_4bit"):
        parts.append("loaded in 4-bit")
    text = " ".join(part for part in parts if part)
    name = model.get("name")
    return f"{name}: {text}" if name and text else str(name or text or DASH)


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], right_from: int = 1) -> str:
    align = ["---" if i < right_from else "---:" for i in range(len(header))]
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(align) + " |"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def run_section(records: Sequence[Mapping], train: Mapping[str, Mapping]) -> str:
    """What was run: models, sample sizes per dataset, training runs."""
    models = [(s.get("meta") or {}).get("model") or {} for r in records
              for s in r["systems"].values() if s.get("kind") in CONFUSION_SYSTEMS]
    llms = sorted({describe_model(m) for m in models if m.get("family") != "encoder_cls"})
    encoders = sorted({describe_model(m) for m in models if m.get("family") == "encoder_cls"})
    lines = ["## What was run", "", "LLM(s): " + ("; ".join(f"`{m}`" for m in llms) or DASH)]
    if encoders:
        lines += ["", "Encoder classifier(s): " + "; ".join(f"`{m}`" for m in encoders)]
    lines += ["", "Test sets are seeded, stratified samples capped by `format_instructions.caps`;"
             " every system is scored on the same ids.", ""]
    rows = []
    for r in records:
        sample = r.get("sample") or {}
        split = {k: f"{fmt((sample.get(k) or {}).get('rows_out'))} of "
                    f"{fmt((sample.get(k) or {}).get('rows_in'))}" for k in ("train", "test")}
        cut = sum((sample.get(k) or {}).get("truncated") or 0 for k in ("train", "test"))
        rows.append([r["dataset"], f"{r['task']} v{r['version']}", str(r.get("run") or DASH),
                     split["train"], split["test"], fmt(r["n"]), fmt(cut)])
    lines.append(_table(["dataset", "task", "run", "train used", "test used", "n scored",
                         "inputs truncated"], rows, right_from=3))
    if train:
        lines += ["", "Fine-tuning runs:", ""]
        rows = [[name] + [fmt(metrics.get(key), 2) for key, _ in TRAIN_COLUMNS]
                for name, metrics in sorted(train.items())]
        lines.append(_table(["run"] + [title for _, title in TRAIN_COLUMNS], rows))
    return "\n".join(lines)


def _ci(system: Mapping, metric: str) -> str:
    ci = (system.get("ci95") or {}).get(metric)
    return f" [{fmt(ci['low'])}, {fmt(ci['high'])}]" if ci else ""


def _speed(value: float | None) -> str:
    # Baselines run at 1e3-1e6 examples/s, LLMs at ~1-100: whole numbers read best above 100.
    return f"{value:,.0f}" if value is not None and value >= 100 else fmt(value, 1)


def _seconds(meta: Mapping) -> str:
    """Wall time of a system: fit + predict for baselines, prediction for the LLMs (their
    training time is in the fine-tuning table)."""
    if "fit_seconds" in meta:
        return f"{fmt(meta['fit_seconds'], 2)} + {fmt(meta.get('predict_seconds'), 2)}"
    return fmt(meta.get("seconds"), 1)


def systems_table(record: Mapping) -> str:
    rows = []
    for name in ordered_systems(record["systems"]):
        s = record["systems"][name]
        meta = s.get("meta") or {}
        rows.append([name, str(s.get("kind") or DASH), fmt(s["accuracy"]) + _ci(s, "accuracy"),
                     fmt(s["f1_weighted"]) + _ci(s, "f1_weighted"), fmt(s["f1_macro"]),
                     fmt(s["invalid_rate"]), _speed(meta.get("examples_per_s")),
                     _seconds(meta)])
    header = ["system", "kind", "accuracy [95% CI]", "F1 weighted [95% CI]", "F1 macro",
              "invalid rate", "examples/s", "seconds (fit + predict)"]
    return _table(header, rows, right_from=2)


def _holm_text(p_holm: Mapping[str, float] | None, key: str) -> str:
    return f", Holm p = {fmt(p_holm[key])}" if p_holm and key in p_holm else ""


def _f1_diff_text(c: Mapping) -> str:
    if c.get("f1_weighted_diff") is None:
        return ""
    ci = c.get("f1_weighted_diff_ci")
    return f", Δ F1w {c['f1_weighted_diff']:+.3f}" + (
        f" [{ci['low']:+.3f}, {ci['high']:+.3f}]" if ci else "")


def comparison_lines(record: Mapping, p_holm: Mapping[str, float] | None = None) -> list[str]:
    """The paired tests of tuned against every other system; ``p_holm`` (comparison key ->
    Holm-adjusted p, see verdicts) adds the adjusted p-values."""
    comparisons = record.get("comparisons") or {}
    main = comparisons.get("tuned_vs_base")
    if main:
        lines = [f"**Tuned vs base** (exact McNemar, paired on the same {main['n']} ids): "
                 f"p = {fmt(main['p_value'])}{_holm_text(p_holm, 'tuned_vs_base')}"
                 f"{_f1_diff_text(main)}; tuned right where base was wrong on "
                 f"{main['a_only']}, the reverse on {main['b_only']}."]
    else:
        lines = ["Tuned vs base: not compared (both prediction files are needed)."]
    others = [f"{c['b']} p = {fmt(c['p_value'])}{_holm_text(p_holm, key)}{_f1_diff_text(c)}"
              for key, c in sorted(comparisons.items()) if key != "tuned_vs_base"]
    if others:
        lines.append("Tuned vs the other systems (McNemar): " + "; ".join(others) + ".")
    return lines


# f1_binary: the F1 of one class (the published entry's `positive`), as `evaluate`'s "f1"
# reports it for a two-class task; ours is that class's F1 in per_class.
PUBLISHED_METRICS = ("accuracy", "f1_weighted", "f1_binary")


def _ours(system: Mapping, metric: str, pub: Mapping) -> object:
    if metric == "f1_binary":
        return ((system.get("per_class") or {}).get(pub.get("positive")) or {}).get("f1")
    return system.get(metric)


def system_of_kind(record: Mapping, kind: object) -> str | None:
    """Our system to set beside a published one of this kind: the one named like the kind
    (base, tuned), else the first of that kind in table order."""
    systems = record["systems"]
    if kind in systems and systems[kind].get("kind") == kind:
        return str(kind)
    return next((n for n in ordered_systems(systems) if systems[n].get("kind") == kind), None)


def published_table(record: Mapping) -> str:
    """Published figures (any of PUBLISHED_METRICS, or a note) beside ours for the system of
    the same kind: as our parser read the answers, and (where score re-parsed them, see
    score.reparsed) as FinGPT's lenient rule reads the same stored answers, which is how the
    published FinGPT figures were parsed."""
    pubs = record.get("published") or []
    metrics = [m for m in PUBLISHED_METRICS if any(m in pub for pub in pubs)]
    lenient = (record.get("reparsed") or {}).get("fingpt") or {}
    rows = []
    for pub in pubs:
        name = system_of_kind(record, pub.get("kind"))
        mine = record["systems"][name] if name else {}
        theirs = lenient.get(name, {}) if name else {}
        rows.append([str(pub.get("system")), str(pub.get("kind")),
                     *(fmt(pub.get(m)) for m in metrics), str(pub.get("note") or DASH),
                     name or DASH, *(fmt(_ours(mine, m, pub)) for m in metrics),
                     *((fmt(_ours(theirs, m, pub)) for m in metrics) if lenient else ())])
    header = ["published system", "kind", *(f"their {m}" for m in metrics), "note",
              f"ours (n = {record['n']})", *(f"our {m}" for m in metrics),
              *((f"our {m}, FinGPT's parser" for m in metrics) if lenient else ())]
    return _table(header, rows, right_from=2)


def classification_tables(record: Mapping) -> str:
    """The published per-class form (labels, INVALID, accuracy, macro and weighted averages)
    for the base and tuned systems side by side."""
    names = [n for n in CONFUSION_SYSTEMS if "table" in record["systems"].get(n, {})]
    if not names:
        return ""
    tables = [record["systems"][n]["table"] for n in names]
    header = ["class"] + [f"{n} {col}" for n in names
                          for col in ("precision", "recall", "f1", "support")]
    rows = []
    for i, row in enumerate(tables[0]):
        cells = [row["name"]]
        for table in tables:
            r = table[i]
            cells += [fmt(r["precision"], 2), fmt(r["recall"], 2), fmt(r["f1"], 2),
                      fmt(r["support"])]
        rows.append(cells)
    return _table(header, rows)


def mode_lines(record: Mapping) -> list[str]:
    """Scoring modes side by side: each model system's mode and predicted-label distribution
    (loglik on an un-tuned model tends to pick one label; a gap between generate's and
    loglik's accuracy separates off-format answers from missing knowledge)."""
    out, models = [], set()
    for name in ordered_systems(record["systems"]):
        meta = record["systems"][name].get("meta") or {}
        if "mode" in meta and meta.get("label_distribution"):
            dist = ", ".join(f"{k} {v}" for k, v in meta["label_distribution"].items() if v)
            cal = " (calibrated)" if meta.get("calibrate") else ""
            out.append(f"- {name}: mode {meta['mode']}{cal}; predicted labels: {dist}")
            models.add(describe_model(meta.get("model")))
    same = "same model, " if len(models) == 1 else ""
    return ["", f"Scoring modes ({same}same test set):", *out] if out else []


def untrained_head_lines(record: Mapping) -> list[str]:
    """A base system that is an encoder with a fresh classification head is not a zero-shot
    result: its head is random, so it sits near chance by construction."""
    systems = record["systems"]
    prompted = [n for n in ordered_systems(systems) if systems[n].get("kind") == "base"
                and ((systems[n].get("meta") or {}).get("model") or {}).get("family")
                != "encoder_cls"]
    out = []
    for name in ordered_systems(systems):
        meta = systems[name].get("meta") or {}
        if systems[name].get("kind") == "base" and (meta.get("model") or {}).get(
                "family") == "encoder_cls":
            other = (" The prompted zero-shot comparison is "
                     + ", ".join(f"`{n}`" for n in prompted) + ".") if prompted else ""
            out.append(f"`{name}` is the encoder `{describe_model(meta.get('model'))}` with an "
                       "untrained (randomly initialised) classification head (mode "
                       f"{meta.get('mode') or DASH}): it is near chance by construction, the "
                       "starting point of the tuned head, not a zero-shot result." + other)
    return ["", *out] if out else []


def reparsed_lines(record: Mapping) -> list[str]:
    """The generated answers parsed again from their stored text by FinGPT's published rule
    ("positive" anywhere wins, then "negative", anything else is neutral: never INVALID)."""
    lenient = (record.get("reparsed") or {}).get("fingpt") or {}
    if not lenient:
        return []
    parts = []
    for name in ordered_systems(lenient):
        s, ours = lenient[name], record["systems"].get(name, {})
        parts.append(f"{name} weighted F1 {fmt(s['f1_weighted'])}{_ci(s, 'f1_weighted')} "
                     f"(as parsed: {fmt(ours.get('f1_weighted'))}; {fmt(s['answers_changed'])} "
                     f"of {fmt(s['n'])} answers read otherwise)")
    return ["", "The same stored answers read by FinGPT's lenient parser (the rule behind "
            "its published figures; an unparseable answer becomes neutral, never INVALID): "
            + "; ".join(parts) + "."]


def dataset_section(record: Mapping, plots: Mapping[str, str],
                    p_holm: Mapping[str, float] | None = None) -> str:
    """One dataset: systems table, paired tests (with Holm p when given), published figures,
    notes, plots."""
    ds = record["dataset"]
    lines = [f"## {ds}", "", systems_table(record), "", *comparison_lines(record, p_holm),
             *mode_lines(record), *untrained_head_lines(record)]
    table = classification_tables(record)
    if table:
        lines += ["", "Per class, in the published form (INVALID = unparseable answers):", "",
                  table]
    if record.get("published"):
        lines += ["", "Published figures (their models, prompts and test sets differ from ours, "
                  "which are the systems named on the right, scored on the capped sample, so "
                  "the comparison is indicative only):", "", published_table(record)]
    lines += reparsed_lines(record)
    if record.get("notes"):
        lines += ["", f"> **Note:** {record['notes']}"]
    images = [f"![{ds} {name} confusion]({path})" for (d, name), path in sorted(plots.items())
              if d == ds]
    if images:
        lines += ["", " ".join(images)]
    return "\n".join(lines)


def _mean_ci(stats: Mapping | None) -> str:
    if not stats:
        return DASH
    return f"{fmt(stats.get('mean'))} [{fmt(stats.get('ci95_low'))}, {fmt(stats.get('ci95_high'))}]"


def summarization_table(record: Mapping) -> str:
    """One row per system: per metric the mean [95% CI] and the median, empty summaries,
    speed."""
    metrics = record.get("metrics") or []
    rows = []
    for name in ordered_systems(record["systems"]):
        s = record["systems"][name]
        stats = s.get("stats") or {}
        meta = s.get("meta") or {}
        cells = [name, str(s.get("kind") or DASH), fmt(s.get("n"))]
        for metric in metrics:
            cells += [_mean_ci(stats.get(metric)), fmt((stats.get(metric) or {}).get("median"))]
        rows.append(cells + [fmt(s.get("n_empty")), _speed(meta.get("examples_per_s")),
                             _seconds(meta)])
    header = ["system", "kind", "n", *(f"{m} {col}" for m in metrics
                                       for col in ("mean [95% CI]", "median")),
              "empty", "examples/s", "seconds"]
    return _table(header, rows, right_from=2)


def paired_table(record: Mapping) -> str:
    """The paired differences a - b per metric (tuned vs base first, then the other systems
    in table order)."""
    comparisons = record.get("comparisons") or {}
    if not comparisons:
        return ""
    order = ordered_systems(record["systems"])

    def key(item: tuple[str, Mapping]) -> tuple:
        b = item[1].get("b")
        return (item[0] != "tuned_vs_base", order.index(b) if b in order else len(order),
                item[0])

    rows = []
    for _, c in sorted(comparisons.items(), key=key):
        for metric in record.get("metrics") or []:
            d = c.get(metric)
            if not d:
                continue
            rows.append([str(c.get("a")), str(c.get("b")), fmt(c.get("n")), metric,
                         f"{fmt(d.get('mean_diff'))} [{fmt(d.get('ci95_low'))}, "
                         f"{fmt(d.get('ci95_high'))}]",
                         fmt(d.get("a_better")), fmt(d.get("b_better")), fmt(d.get("ties"))])
    header = ["a", "b", "n", "metric", "mean a - b [95% CI]", "a better", "b better", "ties"]
    return _table(header, rows, right_from=2)


def _on_off(value: object) -> str:
    return "on" if value else "off"


def scoring_lines(record: Mapping) -> list[str]:
    """How the scores were computed (bullets): references, ROUGE and BERTScore settings, the
    prompt."""
    refs = record.get("n_references") or {}
    low, high = refs.get("min"), refs.get("max")
    count = fmt(low) if low == high else f"{fmt(low)}-{fmt(high)}"
    rouge = record.get("rouge") or {}
    bert = record.get("bertscore") or {}
    measure = f"{rouge['measure']}-measure" if rouge.get("measure") else DASH
    return [f"- References: {count} per example, combined as: "
            f"{record.get('reference_combination') or DASH}.",
            f"- ROUGE: {rouge.get('package') or DASH}, {measure}, stemmer "
            f"{_on_off(rouge.get('use_stemmer'))}.",
            f"- BERTScore F1: model `{bert.get('model') or DASH}`, layer "
            f"{fmt(bert.get('num_layers'))}, idf {_on_off(bert.get('idf'))}, baseline "
            f"rescaling {_on_off(bert.get('rescale_with_baseline'))}.",
            "- Prompt: base and tuned get the same prompt here; the published runs trained "
            "with a different prompt than the one they evaluated with."]


def published_lines(record: Mapping) -> list[str]:
    """Published systems as bullets: any of the record's metrics they give, and their note."""
    out = []
    for pub in record.get("published") or []:
        figures = ", ".join(f"{m} {fmt(pub[m])}" for m in record.get("metrics") or []
                            if m in pub)
        text = f"- {pub.get('system')} ({pub.get('kind')})"
        details = [str(d) for d in (figures, pub.get("note")) if d]
        if details:
            text += ": " + "; ".join(details)
        out.append(text)
    return out


def boxplot_links(records: Sequence[Mapping], out_dir: str | Path) -> dict[str, str]:
    """dataset -> link to its box plot relative to out_dir (where report.md goes), for the
    figures.boxplot paths (relative to the working directory) that exist."""
    links = {}
    for record in of_type(records, "summarization"):
        path = (record.get("figures") or {}).get("boxplot")
        if path and Path(path).is_file():
            links[record["dataset"]] = Path(os.path.relpath(path, out_dir)).as_posix()
    return links


def summarization_section(record: Mapping, boxplots: Mapping[str, str]) -> str:
    """One summarization dataset: systems table, paired differences, scoring settings,
    published notes, notes and the box plot (linked when `boxplots` has it)."""
    ds = record["dataset"]
    lines = [f"## {ds} (summarization)", "", summarization_table(record)]
    table = paired_table(record)
    if table:
        lines += ["", "Paired differences, a - b per example (bootstrap 95% CI of the mean; "
                  "examples where a scored higher, b higher, or the same):", "", table]
    lines += ["", "How it was scored:", "", *scoring_lines(record)]
    pubs = published_lines(record)
    if pubs:
        lines += ["", "Published (other models and set-ups, indicative only):", "", *pubs]
    if record.get("notes"):
        lines += ["", f"> **Note:** {record['notes']}"]
    path = (record.get("figures") or {}).get("boxplot")
    if ds in boxplots:
        lines += ["", f"![{ds} per-example scores by system]({boxplots[ds]})"]
    elif path:
        lines += ["", f"Box plot: `{path}` (missing: not found when the report was written)."]
    return "\n".join(lines)


def data_checks_section(labeled: Mapping[str, Mapping]) -> str:
    """label-transform's checks per dataset (its summary.json): rows read, quarantined rows,
    test texts also in train (case/space-folded) against their limits, and the groups of a
    grouped resplit. Empty when no summary is given."""
    if not labeled:
        return ""
    rows = []
    for ds in sorted(labeled):
        s = labeled[ds]
        groups = (s.get("resplit") or {}).get("groups")
        splits = [v for v in (s.get("splits") or {}).values() if isinstance(v, Mapping)]
        repeated = (f"{fmt(sum(v.get('duplicate_rows', 0) for v in splits))} / "
                    f"{fmt(sum(v.get('repeated_texts', 0) for v in splits))}"
                    if any("duplicate_rows" in v for v in splits) else DASH)
        rows.append([ds, source_text(s.get("source") or {}), fmt(s.get("rows_in")), repeated,
                     f"{fmt(s.get('quarantined'))} ({_share(s.get('quarantined_share'))}; "
                     f"limit {_share(s.get('max_quarantine_share'))})",
                     f"{fmt(s.get('test_texts_in_train'))} "
                     f"({_share(s.get('test_texts_in_train_share'))}; "
                     f"limit {_share(s.get('max_leakage_share'))})",
                     f"{groups['train']} / {groups['test']}" if groups else DASH])
    return "\n".join([
        "## Data checks", "",
        "Where each dataset's splits were read (a Hub source read at a branch rather than its "
        "pinned commit is marked **unpinned**) and what label-transform found before any "
        "sampling: rows equal to an earlier row of their split in every column, and rows "
        "whose text (case- and space-folded) repeats one, both kept and counted; quarantined "
        "rows (each in `data/labeled/<dataset>/quarantine.jsonl` with its reason) and test "
        "texts also in train, where a share above its limit stops the stage:", "",
        _table(["dataset", "read from (raw split = file or hub split)", "rows read",
                "rows repeating a row / a text of their split", "quarantined",
                "test texts also in train", "resplit groups train / test"],
               rows, right_from=2)])


def source_text(provenance: Mapping) -> str:
    """fetch's provenance in a cell: the mirror folder, local files or Hub id and commit, and
    each raw split's file (or hub splits); `all` is a raw split that resplit divides."""
    splits = provenance.get("splits") or {}

    def split_part(name: str, info: Mapping) -> str:
        what = info.get("file") or "+".join(info.get("hub_splits") or []) or DASH
        return f"{name}={what}"

    parts = ", ".join(split_part(n, i) for n, i in sorted(splits.items()))
    kind = provenance.get("source")
    if kind == "hub":
        commit = provenance.get("commit") or provenance.get("revision") or ""
        flag = " **unpinned**" if provenance.get("unpinned") else ""
        return f"hub {provenance.get('id')}@{str(commit)[:7]}{flag}: {parts}"
    if kind == "mirror":
        return f"mirror {provenance.get('mirror_dir')}/: {parts}"
    if kind == "files":
        return f"local files: {parts}"
    return parts or DASH


def _share(value: object) -> str:
    return f"{value:.2%}" if isinstance(value, int | float) else DASH


def render_report(records: Sequence[Mapping], train: Mapping[str, Mapping],
                  confusion_plots: Mapping[tuple[str, str], str], f1_plot: str | None,
                  boxplots: Mapping[str, str] | None = None,
                  labeled: Mapping[str, Mapping] | None = None) -> str:
    """The whole report.md; image paths are used as given (relative to the report).
    `boxplots` maps a summarization dataset to its box-plot link (see boxplot_links); a
    record whose figure is not in it gets the path as text, marked missing. `labeled` maps a
    dataset to label-transform's summary (the data checks section)."""
    parts = ["# tunebench report", "",
             "QLoRA fine-tuning (`tuned`) vs prompting the same un-tuned model (`base`), with "
             "majority-class and TF-IDF + logistic regression baselines trained on the same "
             "examples. Unparseable answers (`invalid rate`) count as wrong in accuracy and "
             "recall but are left out of precision, so with many of them F1 can exceed "
             "accuracy.", ""]
    if of_type(records, "summarization"):
        parts += ["Summarization datasets report per-example ROUGE-1/2/L and BERTScore F1: the "
                  "mean with a 95% bootstrap CI, and the median; an empty summary scores 0 and "
                  "is counted (`empty`).", ""]
    judged = verdicts(records)
    opening = verdict_section(judged)
    if opening:
        parts += [opening, ""]
    parts.append(run_section(records, train))
    if f1_plot:
        parts += ["", f"![weighted F1 per dataset, 95% bootstrap CIs]({f1_plot})"]
    for r in records:
        p_holm = (judged["datasets"].get(r["dataset"]) or {}).get("p_holm")
        parts += ["", summarization_section(r, boxplots or {})
                  if record_type(r) == "summarization"
                  else dataset_section(r, confusion_plots, p_holm)]
    checks = data_checks_section(labeled or {})
    if checks:
        parts += ["", checks]
    packages = (records[0].get("packages") if records else None) or {}
    if packages:
        parts += ["", "Scored with " + ", ".join(f"{k} {v}" for k, v in sorted(packages.items())
                                                  if v) + "."]
    return "\n".join(parts) + "\n"


def plot_confusion(system: Mapping, title: str, path: Path) -> None:
    """Heat map of counts: rows true labels, columns predicted labels plus INVALID."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    conf = system["confusion"]
    matrix = conf["matrix"]
    fig, ax = plt.subplots(figsize=(1.0 * len(conf["columns"]) + 1.6, 0.9 * len(matrix) + 1.4))
    ax.imshow(matrix, cmap="Blues", aspect="auto")
    top = max(max(row) for row in matrix) or 1
    for i, row in enumerate(matrix):
        for j, count in enumerate(row):
            ax.text(j, i, str(count), ha="center", va="center",
                    color="white" if count > top / 2 else "black")
    ax.set_xticks(range(len(conf["columns"])), conf["columns"], rotation=30, ha="right")
    ax.set_yticks(range(len(matrix)), conf["labels"])
    ax.set(xlabel="predicted", ylabel="actual", title=title)
    _save(fig, path)


def plot_f1(records: Sequence[Mapping], path: Path) -> None:
    """Grouped bars: weighted F1 per classification dataset for every system, 95% CI as error
    bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = of_type(records, "classification")
    systems = ordered_systems({n: s for r in records for n, s in r["systems"].items()})
    width = 0.8 / max(len(systems), 1)
    fig, ax = plt.subplots(figsize=(max(5.0, 1.6 * len(records) + 2), 3.8))
    for k, name in enumerate(systems):
        xs, heights, errors = [], [], [[], []]
        for i, record in enumerate(records):
            s = record["systems"].get(name)
            if s is None:
                continue
            ci = (s.get("ci95") or {}).get("f1_weighted") or {}
            xs.append(i + (k - (len(systems) - 1) / 2) * width)
            heights.append(s["f1_weighted"])
            # Clip at 0: a percentile interval can sit just off the point estimate.
            errors[0].append(max(0.0, s["f1_weighted"] - ci.get("low", s["f1_weighted"])))
            errors[1].append(max(0.0, ci.get("high", s["f1_weighted"]) - s["f1_weighted"]))
        ax.bar(xs, heights, width, yerr=errors, capsize=3, label=name)
    ax.set_xticks(range(len(records)), [r["dataset"] for r in records])
    ax.set(ylabel="weighted F1", ylim=(0, 1.05), title="Weighted F1 with 95% bootstrap CIs")
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
    _save(fig, path)


def _save(fig, path: Path) -> None:
    import matplotlib.pyplot as plt

    from tunebench.io import atomic_path

    fig.tight_layout()
    with atomic_path(Path(path)) as tmp:
        # No "Software" stamp, so the PNG bytes do not change with the matplotlib version.
        fig.savefig(tmp, format="png", dpi=110, metadata={"Software": None})
    plt.close(fig)


PLOTS = "plots"  # folder under the report's folder; report.md links into it relatively


def read_records(paths: list[Path]) -> list[dict]:
    records = []
    for path in paths:
        record = read_json(path)
        for key in ("dataset", "task", "version", "n", "systems"):
            if key not in record:
                raise DataError(f"{path}: missing field {key!r}; is it a score output?")
        if record_type(record) not in TYPES:
            raise DataError(f"{path}: unknown type {record['type']!r}; expected one of {TYPES}")
        records.append(record)
    seen = [r["dataset"] for r in records]
    if len(set(seen)) != len(seen):
        raise DataError(f"--metrics lists a dataset twice: {seen}")
    return records


def read_train(path: Path) -> tuple[str, dict]:
    """(run name, training metrics) from a DVCLive folder or its metrics.json, or any JSON
    file named after the run."""
    if path.is_dir():
        path = path / "metrics.json"
    name = path.parent.name if path.name == "metrics.json" else path.stem
    return name, read_json(path)


def write_plots(records: Sequence[Mapping], out_dir: Path) -> tuple[dict, str | None]:
    """Confusion matrices (CONFUSION_SYSTEMS of every classification dataset) and the F1 bar
    plot into <out_dir>/plots; returns (confusion plot links by (dataset, system), the F1
    plot's link or None), relative to out_dir."""
    (out_dir / PLOTS).mkdir(parents=True, exist_ok=True)  # a DVC out even when empty
    confusion = {}
    classification = of_type(records, "classification")
    for record in classification:
        for name in CONFUSION_SYSTEMS:
            if name in record["systems"]:
                rel = f"{PLOTS}/confusion_{record['dataset']}_{name}.png"
                plot_confusion(record["systems"][name], f"{record['dataset']}: {name}",
                               out_dir / rel)
                confusion[(record["dataset"], name)] = rel
    f1_plot = f"{PLOTS}/f1_weighted.png" if classification else None
    if f1_plot:
        plot_f1(classification, out_dir / f1_plot)
    return confusion, f1_plot
