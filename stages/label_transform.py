"""label-transform: canonical labels, fixed train/test splits and stable example ids.

Reads <raw>/*.parquet from `fetch`; writes <out>/<split>.parquet (id, text, label, extra
prompt fields), <out>/quarantine.jsonl (every unusable row with its reason) and
<out>/summary.json (counts per split and reason). Fails when the quarantined share passes
params `label_transform.max_quarantine_share`.
"""

from pathlib import Path

from stages._cli import parser, run
from tunebench.io import DataError, read_json, read_parquet, write_json, write_jsonl, write_parquet
from tunebench.label_transform import label_transform
from tunebench.params import dataset_task, load_params, section


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--dataset", required=True, help="a key of params `datasets`")
    p.add_argument("--tasks", type=Path, default=Path("tasks"), help="task files folder")
    p.add_argument("--raw", type=Path, required=True, help="folder written by fetch")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    args = p.parse_args()
    params = load_params(args.params)
    task = dataset_task(params, args.dataset, args.tasks)
    provenance = read_json(args.raw / "provenance.json")
    raw = {name: read_parquet(args.raw / f"{name}.parquet") for name in provenance["splits"]}
    if not raw:
        raise DataError(f"{args.raw}: provenance.json lists no splits")
    limit = section(params, "label_transform")["max_quarantine_share"]
    splits, quarantine, summary = label_transform(task, raw, limit)
    for name, df in splits.items():
        write_parquet(args.out / f"{name}.parquet", df)
    write_jsonl(args.out / "quarantine.jsonl", quarantine)
    write_json(args.out / "summary.json", {**summary, "source": provenance})
    kept = ", ".join(f"{s}={len(df)}" for s, df in splits.items())
    print(f"label-transform {args.dataset}: {kept}, quarantined {len(quarantine)}")


if __name__ == "__main__":
    run(main)
