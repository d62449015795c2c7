"""fetch: read one dataset's raw splits from the Hugging Face Hub or a local mirror.

Writes <out>/<split>.parquet (original columns and labels, plus `source_row`) and
<out>/provenance.json (source, revision or file sha256, rows per split). The mirror is
params `fetch.mirror` (a folder laid out as <mirror>/<dir>/<file>.parquet), overridden by
the TUNEBENCH_MIRROR environment variable; with neither, the task's Hub source is read.
"""

from pathlib import Path

from stages._cli import parser, run
from tunebench.data.fetch import check_dataset_names, check_name, fetch, inside, resolve_mirror
from tunebench.io import write_json, write_parquet
from tunebench.running.params import dataset_entry, dataset_task, fetch_mirror_param, load_params


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--dataset", required=True, help="a key of params `datasets`")
    p.add_argument("--tasks", type=Path, default=Path("tasks"), help="task files folder")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    args = p.parse_args()
    params = load_params(args.params)
    entry = dataset_entry(params, args.dataset)
    check_dataset_names(args.dataset, entry.task, entry.run, args.params)
    task = dataset_task(params, args.dataset, args.tasks)
    mirror = resolve_mirror(fetch_mirror_param(params))
    frames, provenance = fetch(task, mirror)
    for split in frames:  # split names become file names
        check_name(split, f"{task.path}: split name")
    for split, df in frames.items():
        write_parquet(inside(args.out / f"{split}.parquet", args.out, f"split {split!r}"), df)
    write_json(args.out / "provenance.json", {"task": task.name, **provenance})
    rows = ", ".join(f"{s}={len(df)}" for s, df in frames.items())
    print(f"fetch {args.dataset}: {provenance['source']} -> {args.out} ({rows})")


if __name__ == "__main__":
    run(main)
