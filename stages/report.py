"""report: summary table, Markdown report and plots over every dataset's scores.

Reads the --metrics files written by `score` (one per dataset) and, optionally, the
--train metrics of the fine-tuning runs (the DVCLive folder metrics/train/<run> or its
metrics.json; a plain <run>.json also works). Writes into --out-dir: summary.json and
summary.csv (one row per dataset x system), report.md, plots/f1_weighted.png and
plots/confusion_<dataset>_<system>.png for the base and tuned systems. Image links in
report.md are relative to it.
"""

from pathlib import Path

from stages._cli import parser, run
from tunebench.io import DataError, read_json, write_json, write_text
from tunebench.report import (
    CONFUSION_SYSTEMS,
    plot_confusion,
    plot_f1,
    render_report,
    summary_csv,
    summary_json,
    summary_rows,
)

PLOTS = "plots"  # folder under --out-dir; report.md links into it relatively


def read_records(paths: list[Path]) -> list[dict]:
    records = []
    for path in paths:
        record = read_json(path)
        for key in ("dataset", "task", "version", "n", "systems"):
            if key not in record:
                raise DataError(f"{path}: missing field {key!r}; is it a score output?")
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


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--metrics", type=Path, nargs="+", required=True,
                   help="metrics/<dataset>.json files from score")
    p.add_argument("--train", type=Path, nargs="*", default=[],
                   help="training metrics (optional): DVCLive folders metrics/train/<run>, "
                        "their metrics.json, or <run>.json files")
    p.add_argument("--out-dir", type=Path, required=True, help="folder to write into")
    args = p.parse_args()
    records = read_records(args.metrics)
    train = dict(read_train(path) for path in args.train)
    rows = summary_rows(records)
    write_json(args.out_dir / "summary.json", summary_json(rows))
    write_text(args.out_dir / "summary.csv", summary_csv(rows))
    confusion = {}
    for record in records:
        for name in CONFUSION_SYSTEMS:
            if name in record["systems"]:
                rel = f"{PLOTS}/confusion_{record['dataset']}_{name}.png"
                plot_confusion(record["systems"][name], f"{record['dataset']}: {name}",
                               args.out_dir / rel)
                confusion[(record["dataset"], name)] = rel
    f1_plot = f"{PLOTS}/f1_weighted.png"
    plot_f1(records, args.out_dir / f1_plot)
    write_text(args.out_dir / "report.md", render_report(records, train, confusion, f1_plot))
    print(f"report: {len(records)} dataset(s), {len(rows)} rows -> {args.out_dir}/report.md")


if __name__ == "__main__":
    run(main)
