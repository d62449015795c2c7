"""budget: run `dvc repro` and record how long each stage took -> metrics/budget.json.

`make bench` runs the benchmark through this wrapper so that the time budget of the CPU
default is measured by the run itself, not estimated: DVC prints "Running stage 'X':" before
each stage it runs (and "Stage 'X' didn't change, skipping" for cached ones), and each stage's
seconds are the time from its line to the next stage's line (or the end of the run). The file
records the hardware, the command, the stages run and skipped, and `total_seconds`; the
README's budget table is generated from it (`python -m tunebench.readme`).

Usage: python -m tunebench.budget [--out metrics/budget.json] [-- dvc repro arguments]
A run whose `dvc repro` fails still writes the file (with `"complete": false`) and exits
with dvc's status.
"""

from __future__ import annotations

import argparse
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
    from tunebench.provenance import hardware

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
    ap = argparse.ArgumentParser(prog="python -m tunebench.budget",
                                 description=__doc__.split("\n\n")[0],
                                 epilog="Arguments after -- go to `dvc repro`.")
    ap.add_argument("--out", type=Path, default=Path("metrics/budget.json"),
                    help="where to write the per-stage seconds (default: %(default)s)")
    args = ap.parse_args(argv)
    from tunebench.io import write_json

    status, lines, start, end = run_repro(dvc_args)
    record = budget_record(status, lines, start, end, dvc_args)
    write_json(args.out, record)
    print(f"budget: {record['total_seconds'] / 60:.1f} min, {len(record['stages'])} stages run, "
          f"{len(record['skipped'])} cached -> {args.out}")
    return status


if __name__ == "__main__":
    raise SystemExit(main())
