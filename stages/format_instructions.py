"""format-instructions: render a dataset's splits as instruction JSONL.

Reads <labeled>/<split>.parquet from `label-transform`; writes <out>/<split>.jsonl with
{"id", "prompt", "completion"} rows (plus "prompt_base" for tasks whose base model is
prompted few-shot), <out>/task.json (what the model stages need to know of the task:
labels, parser, version) and <out>/summary.json. Sample caps per split are params
(`format_instructions.caps`, per-dataset `datasets.<name>.caps`): a seeded, stratified
sample, drawn here and nowhere else. With `datasets.<name>.validation_share` (or the
default `format_instructions.validation_share`) a dataset without a validation split gets
<out>/validation.jsonl: that seeded, stratified share of its capped training rows, held out
of train.jsonl (counted in the summary); train-qlora evaluates it every epoch and keeps the
best. A dataset with its own validation split keeps it (naming a share for it is an error).
The labeled files must be the ones label-transform's summary.json describes (its splits and
their row counts), and a cap must name a split the dataset has.
"""

from pathlib import Path

from stages._cli import parser, run
from tunebench.data.fetch import check_dataset_names
from tunebench.data.format_instructions import (
    check_caps,
    format_instructions,
    hold_out_validation,
    label_counts,
    upstream_rows,
    validation_share,
)
from tunebench.io import DataError, check_unique_ids, read_parquet, write_json, write_jsonl
from tunebench.running.params import dataset_entry, dataset_task, load_params


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--dataset", required=True, help="a key of params `datasets`")
    p.add_argument("--tasks", type=Path, default=Path("tasks"), help="task files folder")
    p.add_argument("--labeled", type=Path, required=True, help="folder from label-transform")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    args = p.parse_args()
    params = load_params(args.params)
    entry = dataset_entry(params, args.dataset)
    check_dataset_names(args.dataset, entry.task, entry.run, args.params)
    task = dataset_task(params, args.dataset, args.tasks)
    seed = params["format_instructions"]["seed"]  # checked by dataset_entry
    summary = {}
    paths = sorted(args.labeled.glob("*.parquet"))
    if not paths:
        raise DataError(f"{args.labeled}: no <split>.parquet files from label-transform")
    upstream = upstream_rows(args.labeled, [p.stem for p in paths])
    check_caps(params, args.dataset, [p.stem for p in paths], args.params)
    share = validation_share(entry, [p.stem for p in paths], args.labeled)
    for path in paths:
        split = path.stem
        df = read_parquet(path, ("id", "text", "label", *(
            ("references",) if task.type == "summarization" else ())))
        check_unique_ids(df["id"], str(path))
        if len(df) != upstream[split]:
            raise DataError(f"{path}: {len(df)} rows, {args.labeled / 'summary.json'} says "
                            f"{upstream[split]} kept; rerun label-transform")
        rows, summary[split] = format_instructions(
            task, df, entry.caps.get(split), seed, entry.max_words)
        # Reconcile: rows out = rows in, less exactly those the cap leaves out.
        info, cap = summary[split], entry.caps.get(split)
        info["not_sampled"] = len(df) - len(rows)
        expected = len(df) if cap is None else min(cap, len(df))
        if len(rows) != expected or info["rows_in"] != len(df):
            raise DataError(f"{path}: {len(df)} rows in, cap {cap}, but {len(rows)} rows out "
                            f"(expected {expected})")
        if split == "train" and share is not None:
            rows, held = hold_out_validation(rows, share, seed, task.type != "summarization",
                                             f"params.yaml: {entry.validation_share_key}")
            summary["validation"] = {"from": "train", "validation_share": share, "seed": seed,
                                     "rows_out": len(held), **label_counts(task, held)}
            info.update(rows_out=len(rows), held_out_validation=len(held),
                        **label_counts(task, rows))
            check_unique_ids([r["id"] for r in rows + held], f"{args.out}/train+validation")
            write_jsonl(args.out / "validation.jsonl", held)
        check_unique_ids([r["id"] for r in rows], f"{args.out / split}.jsonl")
        write_jsonl(args.out / f"{split}.jsonl", rows)
    write_json(args.out / "summary.json", summary)
    write_json(args.out / "task.json", {
        "dataset": args.dataset, "task": task.name, "version": task.version,
        "type": task.type, "labels": list(task.labels), "parser": task.parser,
        "metrics": list(task.metrics),
        "base_prompt": task.base_prompt, "run": entry.run, "notes": task.notes,
        "description": task.description, "license": task.license,
        "published": list(task.published)})
    counts = ", ".join(f"{s}={v['rows_out']}" for s, v in summary.items())
    print(f"format-instructions {args.dataset}: {counts}")


if __name__ == "__main__":
    run(main)
