"""Percentile vs BCa bootstrap intervals, measured for docs/bootstrap.md.

Part 1 reads the committed per-example rows metrics/figures/<dataset>/<system>.json (actual,
predicted, in test-id order, so systems pair up row by row) and compares the two intervals of
weighted F1 per system and of the paired differences tuned - X, on the same resamples
(n_boot 1000, seed 0, as params.yaml). Part 2 estimates coverage on synthetic data with a
known population weighted F1. Run: .venv/bin/python docs/bootstrap_measure.py
"""

import json
import sys
from pathlib import Path

import numpy as np

from tunebench.evaluation.metrics import bootstrap_ci, classification_metrics, paired_bootstrap_diff

FIGURES = Path("metrics/figures")


def committed() -> None:
    rows = []
    for folder in sorted(p for p in FIGURES.iterdir() if (p / "tuned.json").is_file()):
        systems = {p.stem: json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))}
        truth = [r["actual"] for r in systems["tuned"]]
        labels = sorted(set(truth))
        preds = {name: [r["predicted"] for r in rs] for name, rs in systems.items()}
        for name, pred in preds.items():
            ci = {m: bootstrap_ci(truth, pred, labels, "f1_weighted", 1000, seed=0, method=m)
                  for m in ("percentile", "bca")}
            point = classification_metrics(truth, pred, labels)["f1_weighted"]
            rows.append((folder.name, name, len(truth), point, ci))
        for name, pred in preds.items():
            if name == "tuned":
                continue
            ci = {}
            for m in ("percentile", "bca"):
                d = paired_bootstrap_diff(truth, preds["tuned"], pred, labels, "f1_weighted",
                                          1000, seed=0, method=m)
                ci[m] = (d["low"], d["high"])
            rows.append((folder.name, f"tuned - {name}", len(truth), d["diff"], ci))
    print("| dataset | statistic | n | point | percentile | BCa | width BCa/pct | "
          "max endpoint shift |")
    print("|---|---|---:|---:|---|---|---:|---:|")
    ratios, shifts = [], []
    for ds, name, n, point, ci in rows:
        (pl, ph), (bl, bh) = ci["percentile"], ci["bca"]
        ratio = (bh - bl) / (ph - pl) if ph > pl else float("nan")
        shift = max(abs(bl - pl), abs(bh - ph))
        ratios.append(ratio)
        shifts.append(shift)
        print(f"| {ds} | {name} | {n} | {point:.3f} | [{pl:.3f}, {ph:.3f}] | "
              f"[{bl:.3f}, {bh:.3f}] | {ratio:.2f} | {shift:.3f} |")
    ratios = np.array([r for r in ratios if np.isfinite(r)])
    print(f"\n{len(rows)} intervals: width ratio BCa/percentile median {np.median(ratios):.3f} "
          f"(range {ratios.min():.2f}-{ratios.max():.2f}); endpoint shift median "
          f"{np.median(shifts):.3f}, max {max(shifts):.3f}")


def coverage(reps: int = 400, n: int = 100) -> None:
    """Population: 3 classes (60/25/15%), a system right 55% of the time, else a uniformly
    wrong label or INVALID (10%). True weighted F1 from 1e6 draws."""
    labels = ["a", "b", "c"]
    rng = np.random.default_rng(1)

    def draw(m: int):
        truth = rng.choice(3, size=m, p=[0.6, 0.25, 0.15])
        u = rng.random(m)
        pred = np.where(u < 0.55, truth, (truth + rng.integers(1, 3, size=m)) % 3)
        pred = np.where(u > 0.9, 3, pred)
        names = np.array(labels + ["INVALID"])
        return list(names[truth]), list(names[pred])

    truth, pred = draw(1_000_000)
    target = classification_metrics(truth, pred, labels)["f1_weighted"]
    hits = {"percentile": 0, "bca": 0}
    width = {"percentile": 0.0, "bca": 0.0}
    for rep in range(reps):
        truth, pred = draw(n)
        for m in hits:
            low, high = bootstrap_ci(truth, pred, labels, "f1_weighted", 1000, seed=rep,
                                     method=m)
            hits[m] += low <= target <= high
            width[m] += (high - low) / reps
    for m in hits:
        print(f"coverage {m}: {hits[m] / reps:.3f} (n={n}, {reps} samples, population F1w "
              f"{target:.3f}), mean width {width[m]:.3f}")


if __name__ == "__main__":
    committed()
    if "--coverage" in sys.argv:
        for n in (60, 100, 400):
            coverage(n=n)
