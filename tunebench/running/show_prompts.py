"""Print a few rendered prompts of a dataset with their targets (`make show-prompts`).

Renders straight from the mirror or Hub through the task file, so it works before
`dvc repro` has run: fetch -> label-transform -> format-instructions, in memory.
"""

import argparse
from pathlib import Path

from tunebench.data.fetch import fetch, resolve_mirror
from tunebench.data.format_instructions import format_instructions
from tunebench.data.label_transform import label_transform
from tunebench.running.params import dataset_task, load_params, section


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--dataset", required=True, help="a key of params `datasets`")
    p.add_argument("--split", default="test")
    p.add_argument("-n", type=int, default=3, help="how many prompts")
    p.add_argument("--params", default="params.yaml")
    p.add_argument("--tasks", type=Path, default=Path("tasks"))
    args = p.parse_args()
    params = load_params(args.params)
    task = dataset_task(params, args.dataset, args.tasks)
    raw, _ = fetch(task, resolve_mirror(section(params, "fetch").get("mirror")))
    splits, _, _ = label_transform(task, raw, 1.0)
    seed = section(params, "format_instructions")["seed"]
    rows, _ = format_instructions(task, splits[args.split], args.n, seed)
    for row in rows:
        for key in ("prompt_base", "prompt"):
            if key in row:
                print(f"--- {row['id']} [{key}]\n{row[key]}")
        print(f">>> target: {row['completion']}\n")


if __name__ == "__main__":
    main()
