"""The benchmark report: a summary table, a Markdown write-up and a few PNG plots.

Inputs are the per-dataset records written by ``score`` (see tunebench/score.py) and,
optionally, the training metrics of each fine-tuning run. Text builders are pure functions
of those records; matplotlib is imported only inside the plotting functions (Agg backend,
so it renders offline and headless).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping, Sequence
from pathlib import Path

SYSTEM_ORDER = ("majority", "tfidf_logreg", "base", "tuned")  # weakest reference first
CONFUSION_SYSTEMS = ("base", "tuned")
CSV_FIELDS = ("dataset", "system", "kind", "n", "accuracy", "accuracy_ci_low",
              "accuracy_ci_high", "f1_weighted", "f1_weighted_ci_low", "f1_weighted_ci_high",
              "f1_macro", "invalid_rate", "examples_per_s")
# (key in the training metrics, column title); a run without a key shows a dash.
TRAIN_COLUMNS = (("n_examples", "examples"), ("steps", "steps"), ("wall_time_s", "wall s"),
                 ("tokens_per_s", "tokens/s"), ("peak_memory_mb", "peak MB"),
                 ("trainable_params", "trainable params"), ("train_loss", "train loss"))
DASH = "–"


def ordered_systems(systems: Mapping[str, object]) -> list[str]:
    """Known systems in SYSTEM_ORDER, then any others alphabetically."""
    known = [name for name in SYSTEM_ORDER if name in systems]
    return known + sorted(name for name in systems if name not in SYSTEM_ORDER)


def fmt(value: object, digits: int = 3) -> str:
    if value is None:
        return DASH
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:.{digits}f}" if abs(value) >= 10 ** -digits or value == 0 else f"{value:.1e}"


def summary_rows(records: Sequence[Mapping]) -> list[dict]:
    """One flat row per dataset x system (the CSV and summary.json content)."""
    rows = []
    for record in records:
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
                "examples_per_s": (s.get("meta") or {}).get("examples_per_s"),
            })
    return rows


def summary_json(rows: Sequence[Mapping]) -> dict:
    """dataset -> system -> metrics, nested so `dvc metrics show` reads it key by key."""
    out: dict[str, dict] = {}
    for row in rows:
        values = {k: v for k, v in row.items() if k not in ("dataset", "system")}
        out.setdefault(row["dataset"], {})[row["system"]] = values
    return out


def summary_csv(rows: Sequence[Mapping]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_FIELDS, lineterminator="\n")
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
    models = sorted({describe_model((s.get("meta") or {}).get("model"))
                     for r in records for s in r["systems"].values()
                     if s.get("kind") in CONFUSION_SYSTEMS})
    lines = ["## What was run", "", "LLM(s): " + ("; ".join(f"`{m}`" for m in models) or DASH),
             "", "Test sets are seeded, stratified samples capped by `format_instructions.caps`;"
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


def comparison_lines(record: Mapping) -> list[str]:
    comparisons = record.get("comparisons") or {}
    main = comparisons.get("tuned_vs_base")
    if main:
        lines = [f"**Tuned vs base** (exact McNemar, paired on the same {main['n']} ids): "
                 f"p = {fmt(main['p_value'])}; tuned right where base was wrong on "
                 f"{main['a_only']}, the reverse on {main['b_only']}."]
    else:
        lines = ["Tuned vs base: not compared (both prediction files are needed)."]
    others = [f"{c['b']} p = {fmt(c['p_value'])}" for key, c in sorted(comparisons.items())
              if key != "tuned_vs_base"]
    if others:
        lines.append("Tuned vs the other systems (McNemar): " + "; ".join(others) + ".")
    return lines


PUBLISHED_METRICS = ("accuracy", "f1_weighted")


def published_table(record: Mapping) -> str:
    """Published figures (any of PUBLISHED_METRICS, or a note) beside ours for the system of
    the same kind."""
    pubs = record.get("published") or []
    metrics = [m for m in PUBLISHED_METRICS if any(m in pub for pub in pubs)]
    ours = {s.get("kind"): name for name, s in record["systems"].items()}
    rows = []
    for pub in pubs:
        name = ours.get(pub.get("kind"))
        mine = record["systems"][name] if name else {}
        rows.append([str(pub.get("system")), str(pub.get("kind")),
                     *(fmt(pub.get(m)) for m in metrics), str(pub.get("note") or DASH),
                     name or DASH, *(fmt(mine.get(m)) for m in metrics)])
    header = ["published system", "kind", *(f"their {m}" for m in metrics), "note",
              f"ours (n = {record['n']})", *(f"our {m}" for m in metrics)]
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
    out = []
    for name in ordered_systems(record["systems"]):
        meta = record["systems"][name].get("meta") or {}
        if "mode" in meta and meta.get("label_distribution"):
            dist = ", ".join(f"{k} {v}" for k, v in meta["label_distribution"].items() if v)
            cal = " (calibrated)" if meta.get("calibrate") else ""
            out.append(f"- {name}: mode {meta['mode']}{cal}; predicted labels: {dist}")
    return ["", "Scoring modes (same model, same test set):", *out] if out else []


def dataset_section(record: Mapping, plots: Mapping[str, str]) -> str:
    """One dataset: systems table, paired test, published figures, notes, plots."""
    ds = record["dataset"]
    lines = [f"## {ds}", "", systems_table(record), "", *comparison_lines(record),
             *mode_lines(record)]
    table = classification_tables(record)
    if table:
        lines += ["", "Per class, in the published form (INVALID = unparseable answers):", "",
                  table]
    if record.get("published"):
        lines += ["", "Published figures (their models are 7B-13B and scored on the full "
                  "test sets; ours is the model above on the capped sample, so the comparison "
                  "is indicative only):", "", published_table(record)]
    if record.get("notes"):
        lines += ["", f"> **Note:** {record['notes']}"]
    images = [f"![{ds} {name} confusion]({path})" for (d, name), path in sorted(plots.items())
              if d == ds]
    if images:
        lines += ["", " ".join(images)]
    return "\n".join(lines)


def render_report(records: Sequence[Mapping], train: Mapping[str, Mapping],
                  confusion_plots: Mapping[tuple[str, str], str], f1_plot: str | None) -> str:
    """The whole report.md; image paths are used as given (relative to the report)."""
    parts = ["# tunebench report", "",
             "QLoRA fine-tuning (`tuned`) vs prompting the same un-tuned model (`base`), with "
             "majority-class and TF-IDF + logistic regression baselines trained on the same "
             "examples. Unparseable answers (`invalid rate`) count as wrong in accuracy and "
             "recall but are left out of precision, so with many of them F1 can exceed "
             "accuracy.", "",
             run_section(records, train)]
    if f1_plot:
        parts += ["", f"![weighted F1 per dataset, 95% bootstrap CIs]({f1_plot})"]
    parts += [s for r in records for s in ("", dataset_section(r, confusion_plots))]
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
    """Grouped bars: weighted F1 per dataset for every system, 95% CI as error bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    systems = ordered_systems({n: 0 for r in records for n in r["systems"]})
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
