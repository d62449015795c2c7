"""tradeoff: what more training data and more test examples buy, measured -> metrics/tradeoff.json.

The CPU default's question is a budget question: how many training examples per dataset are
worth their minutes, and how many test examples make an interval tight enough. For each
training size (examples per dataset of a run's mixture) this re-runs the run's own stages
outside DVC, in a work folder: format-instructions with that train cap (the test samples
stay the committed ones, checked byte for byte), train-qlora, and predict-tuned on every
dataset of the mixture. It records the stage seconds and, per dataset, the tuned model's
weighted F1 with its 95% interval, and the interval's half-width on seeded test subsamples
of each size in --test-sizes. The size the params already use is read from the DVC outputs
(models/<run>, data/predictions/<dataset>/tuned) when they are there instead of re-trained.

Usage: python -m tunebench.running.tradeoff --train-per-set 125 250 500 [--run fingpt]
"""

from __future__ import annotations

import argparse
import copy
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from tunebench.io import DataError, read_json, read_jsonl, write_json

TEST_SIZES = (100, 200)


def stage(module: str, *args: str) -> float:
    """Run one stage CLI in a subprocess (as DVC does, start-up included); its seconds."""
    start = time.monotonic()
    done = subprocess.run([sys.executable, "-m", f"stages.{module}", *args], check=False)
    if done.returncode != 0:
        raise DataError(f"stages.{module} {' '.join(args)}: exit {done.returncode}")
    return round(time.monotonic() - start, 1)


def params_with_train_cap(params: dict, datasets: list[str], per_set: int) -> dict:
    """A copy of params whose datasets' train caps are `per_set`."""
    out = copy.deepcopy(params)
    for name in datasets:
        entry = out["datasets"][name]
        entry["caps"] = {**(entry.get("caps") or {}), "train": per_set}
    return out


def halfwidths(by_id: dict, ids: list[str], labels: list[str], sizes, n_boot: int,
               seed: int, method: str) -> dict[str, float]:
    """The weighted-F1 interval's half-width on a seeded subsample of each size (and all)."""
    import numpy as np

    from tunebench.evaluation.metrics import bootstrap_ci

    out = {}
    rng = np.random.default_rng(seed)
    for size in [s for s in sizes if s < len(ids)] + [len(ids)]:
        pick = ids if size == len(ids) else list(rng.choice(ids, size=size, replace=False))
        low, high = bootstrap_ci([by_id[i]["target"] for i in pick],
                                 [by_id[i]["parsed"] for i in pick], labels,
                                 metric="f1_weighted", n_boot=n_boot, seed=seed, method=method)
        out[str(size)] = round((high - low) / 2, 4)
    return out


def score_tuned(instructions: Path, predictions: Path, params: dict, test_sizes) -> dict:
    """Weighted F1, its interval and the half-widths by test size of one tuned prediction."""
    from tunebench.evaluation.score import (
        ci_method_param,
        index_predictions,
        score_params,
        score_system,
        split_targets,
    )

    task = read_json(instructions / "task.json")
    labels = list(task["labels"])
    targets = split_targets(read_jsonl(instructions / "test.jsonl"), labels,
                            str(instructions / "test.jsonl"))
    rows_path = predictions / "tuned.jsonl"
    by_id = index_predictions(read_jsonl(rows_path), targets, labels, str(rows_path))
    n_boot, seed = score_params(params)
    method = ci_method_param(params)
    ids = list(targets)
    scored = score_system(by_id, ids, labels, n_boot, seed, method)
    meta = read_json(predictions / "tuned.meta.json")
    return {"n": len(ids), "f1_weighted": round(scored["f1_weighted"], 4),
            "ci95": {k: round(v, 4) for k, v in scored["ci95"]["f1_weighted"].items()},
            "invalid_rate": round(scored["invalid_rate"], 4),
            "predict_seconds": meta.get("seconds"),
            "halfwidth_by_test_size": halfwidths(by_id, ids, labels, test_sizes, n_boot,
                                                 seed, method)}


def measure(params: dict, run: str, per_set: int, work: Path, test_sizes) -> dict:
    """Train and predict one training size in `work`; the point's record."""
    import yaml

    datasets = sorted(params["runs"][run]["mixture"])
    work.mkdir(parents=True, exist_ok=True)
    params_path = work / "params.yaml"
    params_path.write_text(yaml.safe_dump(params_with_train_cap(params, datasets, per_set)),
                           encoding="utf-8")
    common = ("--params", str(params_path))
    seconds = {"format-instructions": 0.0, "predict-tuned": 0.0}
    for name in datasets:
        out = work / "instructions" / name
        seconds["format-instructions"] += stage("format_instructions", *common, "--dataset", name,
                                                "--labeled", f"data/labeled/{name}",
                                                "--out", str(out))
        committed = Path("data/instructions") / run / name / "test.jsonl"
        if committed.is_file() and committed.read_bytes() != (out / "test.jsonl").read_bytes():
            raise DataError(f"{out / 'test.jsonl'}: differs from {committed} (the test sample "
                            "must stay the committed one)")
    model = work / "model"
    seconds["train-qlora"] = stage("train_qlora", *common, "--run", run, "--instructions",
                                   str(work / "instructions"), "--out", str(model),
                                   "--live", str(work / "live"))
    for name in datasets:
        seconds["predict-tuned"] += stage("predict", *common, "--system", "tuned",
                                          "--instructions", str(work / "instructions" / name),
                                          "--adapter", str(model),
                                          "--out-dir", str(work / "predictions" / name))
    train = read_json(work / "live" / "metrics.json")
    return point_record(per_set, datasets, train, seconds, {
        name: score_tuned(work / "instructions" / name, work / "predictions" / name, params,
                          test_sizes) for name in datasets})


def own_train_cap(params: dict, run: str) -> int | None:
    """The train cap per dataset the params give the run's mixture (None if they differ)."""
    caps = {(params["datasets"][n].get("caps") or {}).get("train")
            for n in params["runs"][run]["mixture"]}
    return caps.pop() if len(caps) == 1 else None


def committed_point(params: dict, run: str, test_sizes, hardware: dict) -> dict | None:
    """The params' own training size, from the DVC outputs of `dvc repro` (None if absent);
    its minutes are the budget ledger's when that was measured on `hardware`."""
    datasets = sorted(params["runs"][run]["mixture"])
    per_set = own_train_cap(params, run)
    folders = [Path("data/predictions") / n / "tuned" for n in datasets]
    train_path = Path("metrics/train") / run / "metrics.json"
    if per_set is None or not train_path.is_file() or not all(
            (f / "tuned.jsonl").is_file() for f in folders):
        return None
    scores = {n: score_tuned(Path("data/instructions") / run / n, f, params, test_sizes)
              for n, f in zip(datasets, folders, strict=True)}
    ledger_path = Path("metrics/budget.json")
    ledger = read_json(ledger_path) if ledger_path.is_file() else {}
    same = ledger.get("hardware") == hardware
    budget = (ledger.get("dag") or {}).get("stages", {}) if same else {}
    predict = [budget.get(f"predict-tuned@{n}", {}).get("seconds") for n in datasets]
    seconds = {"train-qlora": budget.get(f"train-qlora@{run}", {}).get("seconds"),
               # None when any stage is unmeasured on this hardware: not a partial sum
               "predict-tuned": None if None in predict else round(sum(predict), 1)}
    return point_record(per_set, datasets, read_json(train_path), seconds, scores,
                        source="dvc repro (committed run)")


RERUN = "make tradeoff (stages re-run outside DVC)"


def point_record(per_set: int, datasets: list[str], train: dict, seconds: dict,
                 scores: dict, source: str = RERUN) -> dict:
    return {"train_per_set": per_set, "train_examples": train.get("n_examples"),
            "steps": train.get("steps"), "train_loss": train.get("train_loss"),
            "seconds": seconds, "source": source, "datasets": scores}


def earlier_record(path: Path, run: str, test_sizes, hardware: dict) -> dict:
    """The record at `path` to add points to: its points are kept when it measured the same
    run at the same test sizes on the same hardware (minutes from other hardware do not
    compare); anything else starts a new record."""
    record = {"run": run, "test_sizes": list(test_sizes), "hardware": hardware, "points": []}
    if path.is_file():
        old = read_json(path)
        if (old.get("run"), old.get("test_sizes"), old.get("hardware")) == (
                run, list(test_sizes), hardware):
            record["points"] = list(old.get("points") or [])
    return record


def add_point(record: dict, point: dict) -> None:
    """Put `point` in the record, replacing an earlier measurement of the same size."""
    record["points"] = sorted(
        [p for p in record["points"] if p["train_per_set"] != point["train_per_set"]]
        + [point], key=lambda p: p["train_per_set"])


def minutes(seconds: float | None) -> str:
    return "not measured" if seconds is None else f"{seconds / 60:.1f}"


def render_table(record: dict[str, Any]) -> str:
    """Markdown: one row per training size; weighted F1 [CI] per dataset, and minutes."""
    points = sorted(record["points"], key=lambda p: p["train_per_set"])
    names = sorted(points[0]["datasets"]) if points else []
    head = ["training examples", *names, "train min", "predict-tuned min"]
    out = ["| " + " | ".join(head) + " |", "|" + "---:|" * len(head)]
    for p in points:
        cells = [f"{p['train_examples']} ({p['train_per_set']}/set)"]
        for n in names:
            d = p["datasets"][n]
            cells.append(f"{d['f1_weighted']:.3f} [{d['ci95']['low']:.3f}, "
                         f"{d['ci95']['high']:.3f}]")
        cells += [minutes(p["seconds"].get("train-qlora")),
                  minutes(p["seconds"].get("predict-tuned"))]
        out.append("| " + " | ".join(cells) + " |")
    sizes = sorted({s for p in points for d in p["datasets"].values()
                    for s in d["halfwidth_by_test_size"]}, key=int)
    out += ["", "Half-width of the weighted-F1 95% interval by test examples (seeded subsamples;"
            " the largest is the whole capped test set):", "",
            "| training examples | dataset | " + " | ".join(f"n={s}" for s in sizes) + " |",
            "|---:|---|" + "---:|" * len(sizes)]
    for p in points:
        for n in names:
            hw = p["datasets"][n]["halfwidth_by_test_size"]
            out.append(f"| {p['train_examples']} | {n} | "
                       + " | ".join(f"±{hw[s]:.3f}" if s in hw else "" for s in sizes) + " |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tunebench.running.tradeoff",
                                 description=__doc__.split("\n\n")[0],
                                 epilog=__doc__.split("\n\n", 1)[1],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--train-per-set", type=int, nargs="+", required=True,
                    help="training examples per dataset of the run's mixture, one point each")
    ap.add_argument("--run", default="fingpt", help="a key of params `runs` (default: fingpt)")
    ap.add_argument("--test-sizes", type=int, nargs="+", default=list(TEST_SIZES),
                    help="test subsample sizes for the interval half-widths (default: 100 200)")
    ap.add_argument("--params", type=Path, default=Path("params.yaml"))
    ap.add_argument("--work", type=Path, default=Path(".cache/tradeoff"),
                    help="work folder for the re-run stages (default: %(default)s)")
    ap.add_argument("--out", type=Path, default=Path("metrics/tradeoff.json"))
    args = ap.parse_args(argv)
    import yaml

    try:
        params = yaml.safe_load(args.params.read_text(encoding="utf-8"))
        if args.run not in params.get("runs", {}):
            raise DataError(f"{args.params}: no run {args.run!r} in runs")
        from tunebench.running.provenance import hardware

        here = hardware()
        record = earlier_record(args.out, args.run, args.test_sizes, here)
        for per_set in sorted(set(args.train_per_set)):
            # the params' own size is scored from the DVC outputs when they are there
            committed = (committed_point(params, args.run, args.test_sizes, here)
                         if per_set == own_train_cap(params, args.run) else None)
            if committed:
                point = committed
            else:
                point = measure(params, args.run, per_set, args.work / str(per_set),
                                args.test_sizes)
            add_point(record, point)
            write_json(args.out, record)  # after each point: a stopped run keeps the others
    except DataError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(render_table(record))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
