"""format-instructions: render a dataset's splits as instruction JSONL.

Reads <labeled>/<split>.parquet from `label-transform`; writes <out>/<split>.jsonl with
{"id", "prompt", "completion"} rows (plus "prompt_base" for tasks whose base model is
prompted few-shot), <out>/task.json (what the model stages need to know of the task:
labels, parser, version) and <out>/summary.json. Sample caps per split are params
(`format_instructions.caps`, per-dataset `datasets.<name>.caps`): a seeded, stratified
sample, drawn here and nowhere else.
"""

from pathlib import Path

from stages._cli import parser, run
from tunebench.instructions import format_instructions
from tunebench.io import read_parquet, write_json, write_jsonl
from tunebench.params import dataset_entry, dataset_task, load_params, section


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--dataset", required=True, help="a key of params `datasets`")
    p.add_argument("--tasks", type=Path, default=Path("tasks"), help="task files folder")
    p.add_argument("--labeled", type=Path, required=True, help="folder from label-transform")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    args = p.parse_args()
    params = load_params(args.params)
    entry = dataset_entry(params, args.dataset)
    task = dataset_task(params, args.dataset, args.tasks)
    seed = section(params, "format_instructions")["seed"]
    summary = {}
    for path in sorted(args.labeled.glob("*.parquet")):
        split = path.stem
        rows, summary[split] = format_instructions(
            task, read_parquet(path), entry.caps.get(split), seed, entry.max_words)
        write_jsonl(args.out / f"{split}.jsonl", rows)
    write_json(args.out / "summary.json", summary)
    write_json(args.out / "task.json", {
        "dataset": args.dataset, "task": task.name, "version": task.version,
        "labels": list(task.labels), "parser": task.parser, "metrics": list(task.metrics),
        "base_prompt": task.base_prompt, "run": entry.run, "notes": task.notes,
        "description": task.description, "license": task.license,
        "published": list(task.published)})
    counts = ", ".join(f"{s}={v['rows_out']}" for s, v in summary.items())
    print(f"format-instructions {args.dataset}: {counts}")


if __name__ == "__main__":
    run(main)
