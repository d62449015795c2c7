"""label-transform: canonical labels, fixed train/test splits and stable example ids.

Reads <raw>/*.parquet from `fetch`; writes <out>/<split>.parquet (id, text, label, extra
prompt fields), <out>/quarantine.jsonl (every unusable row with its reason) and
<out>/summary.json (counts per split and reason, test texts also in train). Fails when the
quarantined share passes params `label_transform.max_quarantine_share`, when the share of
test texts also in train passes `label_transform.max_leakage_share`, or on duplicate ids.
"""

from pathlib import Path

from stages._cli import parser, run
from tunebench.data.fetch import check_dataset_names, check_name, inside
from tunebench.data.label_transform import label_transform
from tunebench.io import DataError, read_json, read_parquet, write_json, write_jsonl, write_parquet
from tunebench.running.params import (
    dataset_entry,
    dataset_task,
    label_transform_params,
    load_params,
)


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--dataset", required=True, help="a key of params `datasets`")
    p.add_argument("--tasks", type=Path, default=Path("tasks"), help="task files folder")
    p.add_argument("--raw", type=Path, required=True, help="folder written by fetch")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    args = p.parse_args()
    params = load_params(args.params)
    entry = dataset_entry(params, args.dataset)
    check_dataset_names(args.dataset, entry.task, entry.run, args.params)
    task = dataset_task(params, args.dataset, args.tasks)
    limits = label_transform_params(params)
    provenance = read_json(args.raw / "provenance.json")
    if not isinstance(provenance, dict) or not isinstance(provenance.get("splits"), dict) \
            or not provenance["splits"]:
        raise DataError(f"{args.raw / 'provenance.json'}: lists no splits")
    for name in provenance["splits"]:  # split names become file names, read and written
        check_name(name, f"{args.raw / 'provenance.json'}: split name")
    raw = {name: read_parquet(args.raw / f"{name}.parquet", task.raw_columns(name))
           for name in provenance["splits"]}
    for name, df in raw.items():  # fetch's row counts must still hold
        expected = provenance["splits"][name].get("rows")
        if expected is not None and expected != len(df):
            raise DataError(f"{args.raw / name}.parquet: {len(df)} rows, provenance.json "
                            f"says {expected}")
    splits, quarantine, summary = label_transform(task, raw, limits["max_quarantine_share"],
                                                  limits["max_leakage_share"])
    for name, df in splits.items():
        write_parquet(inside(args.out / f"{name}.parquet", args.out, f"split {name!r}"), df)
    write_jsonl(args.out / "quarantine.jsonl", quarantine)
    write_json(args.out / "summary.json", {**summary, "source": provenance})
    kept = ", ".join(f"{s}={len(df)}" for s, df in splits.items())
    print(f"label-transform {args.dataset}: {kept}, quarantined {len(quarantine)}, "
          f"test texts also in train {summary['test_texts_in_train']}")


if __name__ == "__main__":
    run(main)
