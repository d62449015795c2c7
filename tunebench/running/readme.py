"""README results tables, generated from the score records (metrics/datasets/*.json).

`python -m tunebench.running.readme` rewrites what lies between the README's marker comments
``<!-- results:begin -->`` and ``<!-- results:end -->``; with ``--check`` it writes nothing
and exits 1 when the README disagrees with the metrics (`make bench` runs it after the
pipeline, a test runs the check). Classification: weighted F1 per system, the tuned system's
95% CI, the paired differences and Holm p-values of tunebench.evaluation.report.verdicts (the
family of
the report's tests) and the verdicts. Summarization: the mean of each metric per system and
the paired differences tuned - base, each with its 95% CI.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from tunebench.evaluation.report import DASH, _table, fmt, of_type, verdicts

BEGIN, END = "<!-- results:begin -->", "<!-- results:end -->"
LOGLIK = ("base-loglik", "zeroshot_llm-loglik")  # the label-likelihood base, first present
SUMMARY_METRICS = {"rouge1": "ROUGE-1", "rouge2": "ROUGE-2", "rougeL": "ROUGE-L",
                   "bertscore_f1": "BERTScore F1"}


def selected_loglik(systems: Mapping) -> str | None:
    """The base model's label-likelihood system: the loglik variant predict chose without
    test labels (meta `loglik_selected`), else the first of LOGLIK present."""
    chosen = [name for name, system in sorted(systems.items())
              if (system.get("meta") or {}).get("loglik_selected")
              and (system.get("kind") == "base")]
    return chosen[0] if chosen else next((n for n in LOGLIK if n in systems), None)


def _loglik_cell(record: Mapping, name: str | None) -> str:
    """Weighted F1 of the loglik system, with its variant where the predictions name one."""
    system = record["systems"].get(name) if name else None
    if not system:
        return DASH
    variant = (system.get("meta") or {}).get("loglik_variant")
    return fmt(system["f1_weighted"]) + (f" ({variant})" if variant else "")


def _f1(record: Mapping, name: str | None) -> str:
    system = record["systems"].get(name) if name else None
    return fmt(system["f1_weighted"]) if system else DASH


def _with_ci(value: float | None, ci: Mapping | None, sign: bool = False) -> str:
    if value is None:
        return DASH
    form = "+.3f" if sign else ".3f"
    return f"{value:{form}}" + (f" [{ci['low']:{form}}, {ci['high']:{form}}]" if ci else "")


def _short(verdict: Mapping | None) -> str:
    if not verdict:
        return DASH
    return f"{'beats' if verdict['beats'] else 'does not beat'} {verdict['other']}"


def classification_table(records: Sequence[Mapping]) -> str:
    judged = verdicts(records)
    rows = []
    for record in of_type(records, "classification"):
        v = judged["datasets"].get(record["dataset"])
        if not v:
            continue
        systems = record["systems"]
        base, floor = v.get("vs_base") or {}, v.get("vs_best_floor") or {}
        loglik = selected_loglik(systems)
        invalid = (systems.get("base") or {}).get("invalid_rate")
        rows.append([
            record["dataset"], fmt(record["n"]), _f1(record, "majority"),
            _f1(record, "tfidf_logreg"), _f1(record, "tfidf_full"), _f1(record, "base"),
            f"{invalid:.0%}" if invalid is not None else DASH, _loglik_cell(record, loglik),
            _with_ci(v["tuned_f1_weighted"], v.get("tuned_f1_weighted_ci")),
            _with_ci(base.get("f1_weighted_diff"), base.get("f1_weighted_diff_ci"), True),
            fmt(base.get("p_holm")),
            _with_ci(floor.get("f1_weighted_diff"), floor.get("f1_weighted_diff_ci"), True),
            fmt(floor.get("p_holm")), "; ".join(_short(x) for x in (base, floor) if x) or DASH])
    header = ["dataset", "n", "majority", "TF-IDF+LR", "TF-IDF+LR (all train)", "base",
              "base invalid", "base loglik",
              "tuned [95% CI]", "Δ tuned − base [95% CI]", "Holm p", "Δ tuned − best floor "
              "[95% CI]", "Holm p (floor)", f"verdict (Holm p < {judged['alpha']})"]
    note = (f"Weighted F1 (FinGPT's headline metric). Holm's adjustment is over the "
            f"{judged['family_size']} tests of the report: {judged['family']}. TF-IDF+LR is "
            "fitted on the tuned model's own training examples, TF-IDF+LR (all train) on the "
            "whole training split (the strong floor). Best floor = the highest weighted F1 "
            "of the floors the report ran; Δ CIs are paired bootstrap "
            "intervals on the same resampled ids. `base loglik` is the un-tuned model's "
            "label-likelihood answer (for imdb the SmolLM2 zero-shot; its `base` is the "
            "encoder's untrained head), in the variant (sum, mean, calibrated) predict chose "
            "without test labels, where the predictions record one.")
    return note + "\n\n" + _table(header, rows)


def _stat(stats: Mapping | None) -> str:
    if not stats:
        return DASH
    return _with_ci(stats.get("mean"), {"low": stats["ci95_low"], "high": stats["ci95_high"]}
                    if stats.get("ci95_low") is not None else None)


def summarization_tables(records: Sequence[Mapping]) -> str:
    records = of_type(records, "summarization")
    if not records:
        return ""
    from tunebench.evaluation.report import ordered_systems

    rows, diffs = [], []
    for record in records:
        metrics = [m for m in SUMMARY_METRICS if m in (record.get("metrics") or [])]
        for name in ordered_systems(record["systems"]):
            stats = record["systems"][name].get("stats") or {}
            rows.append([record["dataset"], name, fmt(record["systems"][name].get("n")),
                         *(_stat(stats.get(m)) for m in SUMMARY_METRICS)])
        c = (record.get("comparisons") or {}).get("tuned_vs_base")
        if c:
            diffs.append([record["dataset"], fmt(c.get("n")), *(
                _with_ci((c.get(m) or {}).get("mean_diff"),
                         {"low": c[m]["ci95_low"], "high": c[m]["ci95_high"]}
                         if c.get(m) else None, True) if m in metrics else DASH
                for m in SUMMARY_METRICS)])
    titles = list(SUMMARY_METRICS.values())
    parts = ["Summarization: mean per example [95% bootstrap CI]; lead = the source's first "
             "sentence.", "", _table(["dataset", "system", "n", *titles], rows, right_from=2)]
    if diffs:
        parts += ["", "Tuned − base, paired per example (mean [95% CI]):", "",
                  _table(["dataset", "n", *titles], diffs)]
    return "\n".join(parts)


def results_section(records: Sequence[Mapping]) -> str:
    """The text between the markers (without them)."""
    parts = ["<!-- generated by `python -m tunebench.running.readme` from metrics/datasets/*.json; "
             "do not edit by hand -->", "", classification_table(records)]
    summaries = summarization_tables(records)
    if summaries:
        parts += ["", summaries]
    return "\n".join(parts)


def replace_section(text: str, section: str, begin: str = BEGIN, end: str = END) -> str:
    if text.count(begin) != 1 or text.count(end) != 1 or text.index(begin) > text.index(end):
        raise ValueError(f"the README needs exactly one {begin} ... {end} pair")
    head, rest = text.split(begin, 1)
    return f"{head}{begin}\n{section}\n{end}{rest.split(end, 1)[1]}"


BUDGET_BEGIN, BUDGET_END = "<!-- budget:begin -->", "<!-- budget:end -->"
CROSSCHECK_BEGIN, CROSSCHECK_END = "<!-- crosscheck:begin -->", "<!-- crosscheck:end -->"
TRADEOFF_BEGIN, TRADEOFF_END = "<!-- tradeoff:begin -->", "<!-- tradeoff:end -->"


def generated(path: Path, absent: str, render: Callable[[dict], str]) -> str:
    """A generated section: the do-not-edit note, then `render` of the JSON at `path`, or the
    line `absent` when there is no such file."""
    import json

    note = (f"<!-- generated by `python -m tunebench.running.readme` from {path}; do not edit by "
            "hand -->\n\n")
    if not path.is_file():
        return note + absent
    return note + render(json.loads(path.read_text(encoding="utf-8")))


def budget_section(path: Path) -> str:
    """The budget table from metrics/budget.json (tunebench.running.budget), or a line saying
    none."""
    from tunebench.running.budget import render_dag_table, render_table

    def render(budget: dict) -> str:
        hw = budget["hardware"]
        dag = ("The whole DAG, each stage as last measured:\n\n"
               + render_dag_table(budget["dag"]) + "\n\nThe latest run alone:\n\n"
               if budget.get("dag") else "")
        return (dag + render_table(budget) + f"\n\nMeasured on {hw['cpu']}, "
                f"{hw['torch_threads']} threads, bf16 flags {hw['cpu_bf16_flags'] or 'none'}.")

    return generated(path, f"No budget measured yet (`make bench` writes {path}).", render)


def crosscheck_section(path: Path) -> str:
    """The lm-eval cross-check tables from metrics/crosscheck.json (`make crosscheck`), or a
    line saying it has not been run."""
    from tunebench.evaluation.crosscheck import render_table

    def render(record: dict) -> str:
        hw, settings = record.get("hardware") or {}, record.get("settings") or {}
        return (render_table(record) + f"\nMeasured on {hw.get('cpu', 'unknown hardware')}, "
                f"{settings.get('torch_threads', '?')} threads, "
                f"batch {settings.get('batch_size', '?')}.")

    return generated(path, "Not run for a committed result yet (`make crosscheck` writes "
                     f"{path}).", render)


def tradeoff_section(path: Path) -> str:
    """The training-size / test-size tables from metrics/tradeoff.json (`make tradeoff`), or a
    line saying it has not been run."""
    from tunebench.running.tradeoff import render_table

    def render(record: dict) -> str:
        hw = record.get("hardware") or {}
        sizes: dict[str, list[str]] = {}
        for point in sorted(record.get("points", []), key=lambda p: p["train_per_set"]):
            sizes.setdefault(point.get("source", "?"), []).append(str(point["train_examples"]))
        sources = "; ".join(f"{', '.join(n)} training examples from {source}"
                            for source, n in sizes.items())
        return (f"Run `{record.get('run', '?')}`: {sources}.\n\n"
                + render_table(record) + f"\n\nMeasured on {hw.get('cpu', 'unknown hardware')}, "
                f"{hw.get('torch_threads', '?')} threads.")

    return generated(path, "Not measured for a committed result yet (`make tradeoff` writes "
                     f"{path}).", render)


def read_records(folder: Path) -> list[dict]:
    import json

    return [json.loads(path.read_text(encoding="utf-8"))
            for path in sorted(Path(folder).glob("*.json"))]


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--metrics", type=Path, default=Path("metrics/datasets"),
                   help="folder of the score records (<dataset>.json)")
    p.add_argument("--readme", type=Path, default=Path("README.md"))
    p.add_argument("--budget", type=Path, default=Path("metrics/budget.json"),
                   help="the per-stage seconds of the last `make bench` (tunebench.running.budget)")
    p.add_argument("--crosscheck", type=Path, default=Path("metrics/crosscheck.json"),
                   help="the lm-eval cross-check of `make crosscheck` "
                        "(tunebench.evaluation.crosscheck)")
    p.add_argument("--tradeoff", type=Path, default=Path("metrics/tradeoff.json"),
                   help="training size vs F1 vs minutes of `make tradeoff` "
                        "(tunebench.running.tradeoff)")
    p.add_argument("--check", action="store_true",
                   help="write nothing; exit 1 when the README's tables differ from the metrics")
    args = p.parse_args(argv)
    text = args.readme.read_text(encoding="utf-8")
    try:
        new = replace_section(text, results_section(read_records(args.metrics)))
        if BUDGET_BEGIN in new:
            new = replace_section(new, budget_section(args.budget), BUDGET_BEGIN, BUDGET_END)
        if CROSSCHECK_BEGIN in new:
            new = replace_section(new, crosscheck_section(args.crosscheck), CROSSCHECK_BEGIN,
                                  CROSSCHECK_END)
        if TRADEOFF_BEGIN in new:
            new = replace_section(new, tradeoff_section(args.tradeoff), TRADEOFF_BEGIN,
                                  TRADEOFF_END)
    except ValueError as err:
        print(f"error: {args.readme}: {err}", file=sys.stderr)
        return 2
    if args.check:
        if new != text:
            print(f"{args.readme}: the results tables differ from {args.metrics}; run "
                  "`python -m tunebench.running.readme`", file=sys.stderr)
            return 1
        return 0
    if new != text:
        args.readme.write_text(new, encoding="utf-8")
    print(f"{args.readme}: results tables {'updated' if new != text else 'up to date'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
