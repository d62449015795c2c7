"""subset: the `dvc repro` targets that build only some datasets (`make bench DATASETS=...`).

Prints `score@<dataset>` for each dataset named (a key of params `datasets`), space-separated,
for `dvc repro`: DVC then runs whatever those stages need and is out of date: the dataset's
fetch, label-transform, format-instructions, predict and baselines stages, and the
train-qlora stage of its run. A run trains on every dataset of its mixture, so the data
stages of the run's other datasets run too (a note on stderr names them); their predict and
score stages do not. `make bench DATASETS=...` then rebuilds the report alone
(`dvc repro --single-item report`) over every metrics/datasets/*.json that exists.

Usage: python -m tunebench.running.subset fpb,tfns [--params params.yaml]
An unknown dataset name exits 2, naming the known ones.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tunebench.config import ConfigError, closest
from tunebench.running.params import dataset_entry, load_params, section


def parse_names(spec: str) -> list[str]:
    """'fpb, tfns,fpb' -> ['fpb', 'tfns']: comma- or space-separated, order kept, no repeats."""
    names = [n for n in spec.replace(",", " ").split() if n]
    if not names:
        raise ConfigError("DATASETS: no dataset named (e.g. DATASETS=fpb,tfns)")
    return list(dict.fromkeys(names))


def subset_targets(params: dict[str, Any], names: Sequence[str]) -> list[str]:
    """The dvc repro targets of `names`, each checked against params `datasets`."""
    known = sorted(section(params, "datasets"))
    for name in names:
        if name not in known:
            raise ConfigError(f"DATASETS: unknown dataset '{name}'{closest(name, known)}; "
                              f"the datasets of params.yaml are {', '.join(known)}")
        dataset_entry(params, name)  # a malformed entry fails here, not mid-run
    return [f"score@{name}" for name in names]


def run_companions(params: dict[str, Any], names: Sequence[str]) -> dict[str, list[str]]:
    """{run: other datasets of that run} for each run of `names` that trains on more."""
    runs = {dataset_entry(params, n).run for n in names}
    out: dict[str, list[str]] = {}
    for other in sorted(section(params, "datasets")):
        run = dataset_entry(params, other).run
        if run in runs and other not in names:
            out.setdefault(run, []).append(other)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tunebench.running.subset", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("datasets", help="dataset names, comma-separated (keys of params datasets)")
    p.add_argument("--params", type=Path, default=Path("params.yaml"),
                   help="params file (default: params.yaml)")
    args = p.parse_args(argv)
    try:
        params = load_params(args.params)
        names = parse_names(args.datasets)
        targets = subset_targets(params, names)
        companions = run_companions(params, names)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for run, others in companions.items():
        print(f"note: run {run} also trains on {', '.join(others)}: their fetch, "
              f"label-transform and format-instructions stages run too", file=sys.stderr)
    print(" ".join(targets))
    return 0


if __name__ == "__main__":
    sys.exit(main())
