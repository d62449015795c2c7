"""score: metrics for every system's predictions on one dataset.

Reads <instructions>/task.json, test.jsonl (and summary.json, for the sample sizes), and
every <system>.jsonl with its <system>.meta.json sidecar in --predictions or its
sub-folders (base/, tuned/, baselines/). Each system must cover exactly the test ids.
Classification: --out gets accuracy, F1, invalid rate, bootstrap 95% CIs, McNemar of
"tuned" against every other system, provenance (no timestamps); --figures/<system>.json
gets {"actual", "predicted"} rows for DVC's confusion plot. Summarization: --out gets
ROUGE-1/2/L and BERTScore F1 (best of the references per example) with means, medians,
bootstrap CIs and paired differences of "tuned" against the others; --figures/boxplot.png
the per-example box plots. --per-example gets one JSONL row per example and system.
Classification comparisons also carry the weighted-F1 difference tuned - other with its
paired bootstrap 95% CI. Timings (seconds, examples/s, peak memory: they change run to run
with identical answers) go to --timings, not --out, so `dvc metrics diff` shows quality only.
Params: `score.n_boot`, `score.seed`, `score.ci_method` (bca or percentile),
`score.bertscore` ({model: a key of models, num_layers}).
"""

from pathlib import Path

from stages._cli import parser, run
from tunebench.io import DataError, read_json, read_jsonl, sha256_file, write_json, write_jsonl
from tunebench.running.params import load_params


def read_systems(folder: Path) -> dict[str, tuple]:
    """system -> (rows, meta, rows path, meta path) for every <system>.jsonl in folder and
    its sub-folders; a system name may appear only once."""
    from tunebench.evaluation.score import PRED_FIELDS

    if not folder.is_dir():
        raise DataError(f"{folder}: predictions folder not found")
    systems = {}
    for path in sorted([*folder.glob("*.jsonl"), *folder.glob("*/*.jsonl")]):
        if path.stem in systems:
            raise DataError(f"{path}: system {path.stem!r} also in {systems[path.stem][2]}")
        meta_path = path.with_name(f"{path.stem}.meta.json")
        systems[path.stem] = (read_jsonl(path, required=PRED_FIELDS), read_json(meta_path),
                              str(path), str(meta_path))
    return systems


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--dataset", required=True, help="dataset key (must match task.json)")
    p.add_argument("--instructions", type=Path, required=True,
                   help="folder from format-instructions (task.json, test.jsonl)")
    p.add_argument("--predictions", type=Path, required=True, help="folder of <system>.jsonl")
    p.add_argument("--out", type=Path, required=True, help="metrics JSON to write")
    p.add_argument("--figures", type=Path, required=True,
                   help="folder for confusion rows (classification) or box plots (summaries)")
    p.add_argument("--per-example", type=Path, required=True,
                   help="JSONL of per-example results, one row per example and system")
    p.add_argument("--timings", type=Path, required=True,
                   help="JSON to write the systems' timings into (seconds, examples/s, memory)")
    args = p.parse_args()
    # Imported after argument parsing: it pulls in scikit-learn, which --help does not need.
    from tunebench.evaluation.score import ci_method_param, score_params, split_timings

    params = load_params(args.params)
    n_boot, seed = score_params(params)
    task = read_json(args.instructions / "task.json")
    if task.get("dataset") != args.dataset:
        raise DataError(f"{args.instructions / 'task.json'}: dataset {task.get('dataset')!r} "
                        f"but --dataset is {args.dataset!r}")
    test_path = args.instructions / "test.jsonl"
    summary_path = args.instructions / "summary.json"
    common = {"n_boot": n_boot, "seed": seed, "test_where": str(test_path),
              "test_sha256": sha256_file(test_path),
              "sample": read_json(summary_path) if summary_path.is_file() else {}}
    systems = read_systems(args.predictions)
    if task.get("type") == "summarization":
        record, examples = _summaries(args, params, task, test_path, systems, common)
        scores = ", ".join(f"{name} rougeL={s['stats']['rougeL']['mean']:.3f}"
                           for name, s in record["systems"].items())
    else:
        record, examples = _classification(args, task, test_path, systems,
                                           {**common, "ci_method": ci_method_param(params)})
        scores = ", ".join(f"{name} f1w={s['f1_weighted']:.3f}"
                           for name, s in record["systems"].items())
    record, timings = split_timings(record)
    write_json(args.out, record)
    write_jsonl(args.per_example, examples)
    write_json(args.timings, timings)
    print(f"score {args.dataset}: n={record['n']}; {scores}")


def _summaries(args, params, task, test_path: Path, systems, common) -> tuple[dict, list]:
    """The summarization record and per-example rows; the box plots to --figures."""
    from tunebench.evaluation.score import bertscore_settings, score_summaries
    from tunebench.evaluation.summarization import METRICS, plot_boxplots

    record, examples = score_summaries(
        task, read_jsonl(test_path, required=("id", "completion", "references")), systems,
        bertscore=bertscore_settings(params), **common)
    boxplot = args.figures / "boxplot.png"
    plot_boxplots({name: {m: [e[m] for e in examples if e["system"] == name]
                          for m in METRICS} for name in record["systems"]}, boxplot)
    record["figures"] = {"boxplot": str(boxplot)}
    return record, examples


def _classification(args, task, test_path: Path, systems, common) -> tuple[dict, list]:
    """The classification record and per-example rows; confusion rows to --figures."""
    from tunebench.evaluation.score import score_dataset

    record, confusion = score_dataset(
        task, read_jsonl(test_path, required=("id", "completion")), systems, **common)
    for system, rows in confusion.items():
        write_json(args.figures / f"{system}.json", rows)
    ids = [r["id"] for r in read_jsonl(test_path, required=("id",))]
    return record, [
        {"id": rid, "system": system, "target": row["actual"], "parsed": row["predicted"]}
        for system, rows in confusion.items() for rid, row in zip(ids, rows, strict=True)]


if __name__ == "__main__":
    run(main)
