"""budget: run `dvc repro` and record how long each stage took -> metrics/budget.json.

`make bench` runs the benchmark through this wrapper so that the time budget of the CPU
default is measured by the run itself, not estimated: DVC prints "Running stage 'X':" before
each stage it runs (and "Stage 'X' didn't change, skipping" for cached ones), and each stage's
seconds are the time from its line to the next stage's line (or the end of the run). The file
records the hardware, the command, the stages run and skipped, and `total_seconds`; the
README's budget table is generated from it (`python -m tunebench.running.readme`).

A run that rebuilds only part of the DAG (the rest cached) measures only that part, so the
file also keeps a ledger, `dag`: for every stage of the DAG (`dvc stage list`), the seconds of
the latest run that ran it and which run that was. Its `total_seconds` is the whole DAG's
time as the sum of measured stages, with `missing` naming stages no run on this hardware has
measured; a run on other hardware starts a new ledger.

Usage: python -m tunebench.running.budget [--out metrics/budget.json] [-- dvc repro arguments]
A run whose `dvc repro` fails still writes the file (with `"complete": false`; its unfinished
last stage stays out of the ledger) and exits with dvc's status.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

RUNNING = re.compile(r"^Running stage '([^']+)'")
SKIPPED = re.compile(r"^Stage '([^']+)' didn't change, skipping")


def stage_seconds(lines: Iterable[tuple[float, str]], end: float) -> dict[str, Any]:
    """Per-stage seconds from (timestamp, line) pairs of `dvc repro` output; `end` closes the
    last stage. Returns {"stages": {name: seconds}, "skipped": [names]} in run order."""
    stages: dict[str, float] = {}
    skipped: list[str] = []
    current: tuple[str, float] | None = None
    for stamp, line in lines:
        ran, cached = RUNNING.match(line), SKIPPED.match(line)
        if not (ran or cached):
            continue
        if current is not None:
            stages[current[0]] = round(stamp - current[1], 1)
            current = None
        if ran:
            current = (ran.group(1), stamp)
        else:
            skipped.append(cached.group(1))
    if current is not None:
        stages[current[0]] = round(end - current[1], 1)
    return {"stages": stages, "skipped": skipped}


def group_seconds(stages: dict[str, float]) -> dict[str, float]:
    """Seconds per stage kind (the part before '@': train-qlora, predict-base, ...)."""
    out: dict[str, float] = {}
    for name, seconds in stages.items():
        kind = name.split("@", 1)[0]
        out[kind] = round(out.get(kind, 0.0) + seconds, 1)
    return out


def run_repro(dvc_args: list[str]) -> tuple[int, list[tuple[float, str]], float, float]:
    """Run `dvc repro`, echoing its output; (status, timestamped lines, start, end)."""
    command = ["dvc", "repro", *dvc_args]
    start = time.monotonic()
    lines: list[tuple[float, str]] = []
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          bufsize=1) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            sys.stdout.write(line)
            sys.stdout.flush()
            lines.append((time.monotonic(), line.rstrip("\n")))
    return proc.returncode, lines, start, time.monotonic()


def budget_record(status: int, lines, start: float, end: float,
                  dvc_args: list[str]) -> dict[str, Any]:
    from tunebench.running.provenance import hardware

    timing = stage_seconds(lines, end)
    return {
        "command": " ".join(["dvc", "repro", *dvc_args]),
        "complete": status == 0,
        "total_seconds": round(end - start, 1),
        "stage_seconds_sum": round(sum(timing["stages"].values()), 1),
        "by_kind": group_seconds(timing["stages"]),
        "stages": timing["stages"],
        "skipped": timing["skipped"],
        "hardware": hardware(),
    }


def dag_stages() -> list[str]:
    """Every stage name of the DAG, from `dvc stage list`."""
    out = subprocess.run(["dvc", "stage", "list", "--name-only"], capture_output=True,
                         text=True, check=True).stdout
    return [line.strip() for line in out.splitlines() if line.strip()]


def update_ledger(record: dict[str, Any], previous: dict[str, Any] | None,
                  stages: list[str]) -> dict[str, Any]:
    """The `dag` ledger: the previous file's per-stage measurements (same hardware only),
    overwritten by this run's finished stages, restricted to the DAG's current `stages`."""
    old = {}
    if previous and previous.get("hardware") == record["hardware"]:
        old = (previous.get("dag") or {}).get("stages", {})
    finished = dict(record["stages"])
    if not record["complete"] and finished:
        finished.pop(list(finished)[-1])  # the stage dvc was in when it failed
    ledger = {name: old[name] for name in stages if name in old}
    for name, seconds in finished.items():
        if name in stages:
            ledger[name] = {"seconds": seconds, "run": record["command"]}
    return {
        "total_seconds": round(sum(e["seconds"] for e in ledger.values()), 1),
        "by_kind": group_seconds({name: e["seconds"] for name, e in ledger.items()}),
        "runs": sorted({e["run"] for e in ledger.values()}),
        "missing": [name for name in stages if name not in ledger],
        "stages": dict(sorted(ledger.items())),
    }


def render_dag_table(dag: dict[str, Any]) -> str:
    """The whole DAG's minutes per stage kind, summed from the ledger's measurements."""
    counts: dict[str, int] = {}
    for name in dag["stages"]:
        kind = name.split("@", 1)[0]
        counts[kind] = counts.get(kind, 0) + 1
    total = dag["total_seconds"] or 1.0
    out = ["| stage | stages | minutes | share |", "|---|---:|---:|---:|"]
    for kind, seconds in sorted(dag["by_kind"].items(), key=lambda kv: -kv[1]):
        out.append(f"| {kind} | {counts[kind]} | {seconds / 60:.1f} | {seconds / total:.0%} |")
    out.append(f"| **whole DAG**, sum of stage measurements | {len(dag['stages'])} | "
               f"**{dag['total_seconds'] / 60:.1f}** | |")
    runs = "; ".join(f"`{run}`" for run in dag["runs"])
    n_runs = len(dag["runs"])
    out.append(f"\nSummed from {n_runs} measured run{'s' if n_runs != 1 else ''} on this "
               f"hardware: {runs}.")
    if dag["missing"]:
        kinds = group_seconds({name: 1 for name in dag["missing"]})
        listed = ", ".join(f"{kind} ×{int(n)}" for kind, n in kinds.items())
        out.append(f"Not measured on this hardware, so not in the sum: {len(dag['missing'])} "
                   f"stages ({listed}; `metrics/budget.json` → `dag.missing` names them).")
    return "\n".join(out)


def render_table(budget: dict[str, Any]) -> str:
    """The README's budget table: seconds per stage kind, and the total."""
    rows = sorted(budget["by_kind"].items(), key=lambda kv: -kv[1])
    counts: dict[str, int] = {}
    for name in budget["stages"]:
        kind = name.split("@", 1)[0]
        counts[kind] = counts.get(kind, 0) + 1
    out = ["| stage | runs | minutes | share |", "|---|---:|---:|---:|"]
    total = budget["total_seconds"] or 1.0
    for kind, seconds in rows:
        out.append(f"| {kind} | {counts[kind]} | {seconds / 60:.1f} | {seconds / total:.0%} |")
    out.append(f"| **total** (`{budget['command']}`) | {len(budget['stages'])} | "
               f"**{budget['total_seconds'] / 60:.1f}** | |")
    if budget["skipped"]:
        out.append(f"\n{len(budget['skipped'])} stages were cached (not run) in this measurement.")
    if not budget["complete"]:
        out.append("\nThe measured run did not complete.")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    dvc_args: list[str] = []
    if "--" in argv:
        at = argv.index("--")
        argv, dvc_args = argv[:at], argv[at + 1:]
    ap = argparse.ArgumentParser(prog="python -m tunebench.running.budget",
                                 description=__doc__.split("\n\n")[0],
                                 epilog="Arguments after -- go to `dvc repro`.")
    ap.add_argument("--out", type=Path, default=Path("metrics/budget.json"),
                    help="where to write the per-stage seconds (default: %(default)s)")
    args = ap.parse_args(argv)
    from tunebench.io import write_json

    status, lines, start, end = run_repro(dvc_args)
    record = budget_record(status, lines, start, end, dvc_args)
    previous = json.loads(args.out.read_text(encoding="utf-8")) if args.out.is_file() else None
    record["dag"] = update_ledger(record, previous, dag_stages())
    write_json(args.out, record)
    print(f"budget: {record['total_seconds'] / 60:.1f} min, {len(record['stages'])} stages run, "
          f"{len(record['skipped'])} cached -> {args.out}")
    return status


if __name__ == "__main__":
    raise SystemExit(main())
