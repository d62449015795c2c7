"""report: summary table, Markdown report and plots over every dataset's scores.

Reads the --metrics files written by `score` (one per dataset) and, optionally, the --train
metrics of the fine-tuning runs (the DVCLive folder metrics/train/<run> or its metrics.json;
a plain <run>.json also works) and the --timings files written by `score`
(metrics/timings/datasets/<dataset>.json), and the --labeled summaries of label-transform
(data/labeled/<dataset>/summary.json: the data checks section). Writes into --out-dir:
summary.json (dataset -> system -> metrics, both record types; no timings), summary.csv (one
row per classification dataset x system), summary_summarization.csv (one row per
summarization dataset x system x metric; only a header when there is none), verdicts.json
(tuned vs base and vs the best floor per classification dataset: weighted-F1 differences
with paired CIs, McNemar and Holm p-values), timings/summary.json (the speed columns'
source: seconds and examples/s per system, the fine-tuning runs' wall time, tokens/s, peak
memory), report.md, plots/f1_weighted.png and plots/confusion_<dataset>_<system>.png for the
base and tuned systems of the classification datasets; report.md ends with the deviations of
--params from the published recipes (tunebench.evaluation.deviations). A smoke profile's run
(--params marked `profile.smoke`, e.g. `make bench-quick`) opens report.md with a line
saying so and adds `smoke` to verdicts.json. Image links in report.md are relative to it; a
summarization record's box plot (figures.boxplot, relative to the working directory) is
linked where it is, or named as missing.
"""

from pathlib import Path

from stages._cli import parser, run
from tunebench.evaluation.deviations import report_section
from tunebench.evaluation.presets import load_presets
from tunebench.evaluation.report import (
    SUMMARIZATION_CSV_FIELDS,
    boxplot_links,
    merge_timings,
    read_records,
    read_train,
    render_report,
    smoke_banner,
    smoke_marker,
    summarization_rows,
    summary_csv,
    summary_json,
    summary_rows,
    timings_summary,
    verdicts,
    write_plots,
)
from tunebench.io import read_json, write_json, write_text
from tunebench.running.params import load_params


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--metrics", type=Path, nargs="+", required=True,
                   help="metrics/<dataset>.json files from score")
    p.add_argument("--train", type=Path, nargs="*", default=[],
                   help="training metrics (optional): DVCLive folders metrics/train/<run>, "
                        "their metrics.json, or <run>.json files")
    p.add_argument("--timings", type=Path, nargs="*", default=[],
                   help="timings files from score (metrics/timings/datasets/<dataset>.json)")
    p.add_argument("--labeled", type=Path, nargs="*", default=[],
                   help="label-transform summaries (data/labeled/<dataset>/summary.json): "
                        "the report's data checks (quarantine, test texts also in train)")
    p.add_argument("--out-dir", type=Path, required=True, help="folder to write into")
    args = p.parse_args()
    params = load_params(args.params)
    smoke = smoke_marker(params)
    records = read_records(args.metrics)
    train = dict(read_train(path) for path in args.train)
    timings = {}
    for path in args.timings:
        data = read_json(path)
        timings[data.get("dataset") or path.stem] = data
    write_json(args.out_dir / "timings" / "summary.json",
               timings_summary(records, timings, train))
    write_json(args.out_dir / "verdicts.json",
               {**verdicts(records), **({"smoke": smoke} if smoke else {})})
    records = merge_timings(records, timings)  # the tables' speed columns read the meta
    rows, sum_rows = summary_rows(records), summarization_rows(records)
    write_json(args.out_dir / "summary.json", summary_json(rows, sum_rows))
    write_text(args.out_dir / "summary.csv", summary_csv(rows))
    write_text(args.out_dir / "summary_summarization.csv",
               summary_csv(sum_rows, SUMMARIZATION_CSV_FIELDS))
    confusion, f1_plot = write_plots(records, args.out_dir)
    boxplots = boxplot_links(records, args.out_dir)
    labeled = {path.parent.name: read_json(path) for path in args.labeled}
    text = render_report(records, train, confusion, f1_plot, boxplots, labeled)
    text = (smoke_banner(smoke) if smoke else "") + text
    text += "\n" + report_section(params, load_presets()) + "\n"
    write_text(args.out_dir / "report.md", text)
    print(f"report: {len(records)} dataset(s), {len(rows)} classification rows, "
          f"{len(sum_rows)} summarization rows -> {args.out_dir}/report.md")


if __name__ == "__main__":
    run(main)
