"""Score an lm-eval run of an exported task as a tunebench system.

python -m tunebench.evaluation.lmeval_samples --samples samples_tunebench_fpb_base_<date>.jsonl
    --task .cache/crosscheck/tasks/tunebench_fpb_base.yaml --out lmeval_base-loglik.jsonl
    [--compare data/predictions/fpb/base/base-loglik.jsonl ...] [--markdown table.md]

Reads the per-example file that `lm_eval --log_samples` writes for a task exported by
`python -m tunebench.evaluation.lmeval_tasks`, checks that every example is one of the exported
ids and
that lm-eval scored exactly the exported prompt + each label (not a chat template or few-shot
context of its own), and writes a predictions file in the schema of the predict stage's
loglik mode ({id, prompt_sha256, raw, parsed, target, scores}, with a .meta.json sidecar):
the answer is the label of highest log-likelihood, as in lm-eval's `acc`.

Then scores it with tunebench's statistics on the ids it covers: accuracy and weighted F1
with bootstrap 95% intervals (params `score`), and McNemar's test against every --compare
predictions file (any tunebench system of the same dataset, restricted to those ids). The
markdown table goes to stdout and --markdown.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

from tunebench.config import ConfigError
from tunebench.io import DataError, read_json, read_jsonl, sha256_file, write_json, write_jsonl


def _loglik(value: Any, at: str) -> float:
    """One choice's filtered response: [loglik, is_greedy] (lm-eval writes both as strings)."""
    if isinstance(value, list) and len(value) == 2:
        try:
            number = float(value[0])
        except (TypeError, ValueError):
            number = math.nan
        if not math.isnan(number):
            return number
    raise DataError(f"{at}: expected [loglik, is_greedy], got {json.dumps(value)[:80]}")


def parse_sample(sample: Any, labels: tuple[str, ...], at: str) -> dict[str, Any]:
    """{"id", "prompt", "label", "scores"} from one line of an lm-eval samples file."""
    if not isinstance(sample, dict):
        raise DataError(f"{at}: expected a JSON object")
    doc = sample.get("doc")
    if not isinstance(doc, dict) or not all(k in doc for k in ("id", "prompt", "label")):
        raise DataError(f"{at}: field doc must hold id, prompt and label (a task exported by "
                        f"tunebench.evaluation.lmeval_tasks)")
    if doc["label"] not in labels:
        raise DataError(f"{at}: doc.label {doc['label']!r} is not one of {list(labels)}")
    resps = sample.get("filtered_resps")
    if not isinstance(resps, list) or len(resps) != len(labels):
        raise DataError(f"{at}: field filtered_resps must hold one [loglik, is_greedy] per "
                        f"label ({len(labels)})")
    scores = [_loglik(r, f"{at}: filtered_resps[{k}]") for k, r in enumerate(resps)]
    _check_arguments(sample.get("arguments"), doc["prompt"], labels, at)
    return {"id": doc["id"], "prompt": doc["prompt"], "label": doc["label"], "scores": scores}


def _check_arguments(arguments: Any, prompt: str, labels: tuple[str, ...], at: str) -> None:
    """lm-eval must have scored prompt + label as one text for every label, in order."""
    if not isinstance(arguments, dict) or len(arguments) != len(labels):
        raise DataError(f"{at}: field arguments must hold one (context, continuation) per label")
    for k, label in enumerate(labels):
        pair = arguments.get(f"gen_args_{k}") or {}
        text = f"{pair.get('arg_0', '')}{pair.get('arg_1', '')}"
        if text != prompt + label:
            raise DataError(f"{at}: lm-eval scored {text[-40:]!r} for label {label!r}, not the "
                            f"exported prompt + label (a chat template, few-shot context or "
                            f"delimiter added by lm-eval?)")


def read_samples(path: Path, labels: tuple[str, ...]) -> list[dict[str, Any]]:
    """Every example of a samples file, in lm-eval's doc order; errors name file and line."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: samples file not found")
    rows, seen = [], {}
    with path.open("rb") as fh:
        for lineno, raw in enumerate(fh, start=1):
            at = f"{path}:{lineno}"
            try:
                sample = json.loads(raw.decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError) as exc:
                raise DataError(f"{at}: not a valid UTF-8 JSON line: {exc}") from None
            row = parse_sample(sample, labels, at)
            if row["id"] in seen:
                raise DataError(f"{at}: id {row['id']!r} already on line {seen[row['id']]}")
            seen[row["id"]] = lineno
            rows.append(row)
    if not rows:
        raise DataError(f"{path}: no samples")
    return rows


def to_predictions(samples: list[dict], labels: tuple[str, ...]) -> list[dict[str, Any]]:
    """Predictions rows in the predict stage's loglik schema (scores rounded like predict)."""
    from tunebench.models.generate import prompt_sha256
    from tunebench.models.loglik import pick

    out = []
    for s in samples:
        answer = pick(s["scores"], labels)
        out.append({"id": s["id"], "prompt_sha256": prompt_sha256(s["prompt"]), "raw": answer,
                    "parsed": answer, "target": s["label"],
                    "scores": dict(zip(labels, (round(x, 5) for x in s["scores"]),
                                       strict=True))})
    return out


def check_exported_ids(samples: list[dict], task, where: str) -> None:
    """Every sample must be an exported row with the exported prompt."""
    exported = {r["id"]: r for r in read_jsonl(task.data_path, ("id", "prompt"))}
    for s in samples:
        row = exported.get(s["id"])
        if row is None:
            raise DataError(f"{where}: id {s['id']!r} is not in {task.data_path}")
        if row["prompt"] != s["prompt"]:
            raise DataError(f"{where}: id {s['id']!r}: prompt differs from {task.data_path}")


def write_ingested(out: Path, rows: list[dict], task, samples_path: Path) -> dict[str, Any]:
    """The predictions file and its sidecar (META_FIELDS of tunebench.evaluation.score)."""
    from tunebench.models.predict import label_distribution

    kind = "tuned" if task.system == "tuned" else "base"
    meta = {"system": Path(out).stem, "kind": kind, "mode": "loglik", "dataset": task.dataset,
            "source": "lm-eval", "lmeval_task": task.name, "prompt_format": task.prompt_format,
            "model": None, "samples_sha256": sha256_file(samples_path), "n": len(rows),
            "seconds": None, "examples_per_s": None, "invalid": 0,
            "label_distribution": label_distribution([r["parsed"] for r in rows],
                                                     list(task.labels))}
    write_jsonl(out, rows)
    write_json(Path(out).with_suffix(".meta.json"), meta)
    return meta


def score_against(rows: list[dict], name: str, others: dict[str, tuple[list[dict], str]],
                  labels: list[str], n_boot: int, seed: int, ci_method: str) -> dict[str, Any]:
    """Scores of the ingested system and of each other system ({name: (rows, file)}) on the
    ingested ids, and McNemar of the ingested system against each other one."""
    from tunebench.evaluation.score import compare_with, index_predictions, score_system

    targets = {r["id"]: r["target"] for r in rows}
    ids = list(targets)
    indexed = {name: index_predictions(rows, targets, labels, name)}
    for other, (other_rows, where) in others.items():
        kept = [r for r in other_rows if r["id"] in targets]
        indexed[other] = index_predictions(kept, targets, labels, where)
    scores = {s: score_system(by_id, ids, labels, n_boot, seed, ci_method)
              for s, by_id in indexed.items()}
    return {"n": len(ids), "systems": scores,
            "comparisons": compare_with(indexed, ids, reference=name, labels=labels,
                                        n_boot=n_boot, seed=seed, ci_method=ci_method)}


def markdown(result: dict[str, Any], name: str) -> str:
    """One row per system: accuracy and weighted F1 [95% CI], McNemar p vs the ingested one."""
    lines = [f"Scored on the {result['n']} ids of {name} (95% bootstrap intervals; McNemar: "
             f"exact, {name} against each system).", "",
             f"| system | accuracy [95% CI] | weighted F1 [95% CI] | Δ accuracy vs {name} "
             f"| McNemar p |",
             "| --- | ---: | ---: | ---: | ---: |"]
    for system, s in result["systems"].items():
        cmp = result["comparisons"].get(f"{name}_vs_{system}")
        delta = f"{-cmp['accuracy_diff']:+.3f}" if cmp else "-"
        p = f"{cmp['p_value']:.3g}" if cmp else "-"
        cells = [f"{s[m]:.3f} [{s['ci95'][m]['low']:.3f}, {s['ci95'][m]['high']:.3f}]"
                 for m in ("accuracy", "f1_weighted")]
        lines.append(f"| {system} | {cells[0]} | {cells[1]} | {delta} | {p} |")
    return "\n".join(lines) + "\n"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--samples", type=Path, required=True, help="lm-eval --log_samples file")
    p.add_argument("--task", type=Path, required=True, help="the exported task YAML")
    p.add_argument("--out", type=Path, required=True, help="predictions JSONL to write")
    p.add_argument("--compare", type=Path, nargs="*", default=[],
                   help="tunebench predictions files of the same dataset (system = file stem)")
    p.add_argument("--markdown", type=Path, help="also write the table here")
    p.add_argument("--params", type=Path, default=Path("params.yaml"),
                   help="for score.n_boot, score.seed and score.ci_method")
    return p


def main(argv: list[str] | None = None) -> int:
    from tunebench.cli import run_command

    args = build_parser().parse_args(argv)
    return run_command(lambda: _run(args))


def _run(args: argparse.Namespace) -> None:
    from tunebench.evaluation.lmeval_tasks import load_exported
    from tunebench.evaluation.score import PRED_FIELDS, ci_method_param, score_params
    from tunebench.io import write_text
    from tunebench.running.params import load_params

    params = load_params(args.params)
    task = load_exported(args.task)
    samples = read_samples(args.samples, task.labels)
    check_exported_ids(samples, task, str(args.samples))
    rows = to_predictions(samples, task.labels)
    write_ingested(args.out, rows, task, args.samples)
    others = {p.stem: (read_jsonl(p, PRED_FIELDS), str(p)) for p in args.compare}
    if args.out.stem in others:
        raise ConfigError(f"--compare {args.out.stem}: the same name as --out")
    for path in args.compare:  # a sidecar, when there is one, must be of this dataset
        meta_path = path.with_suffix(".meta.json")
        if meta_path.is_file() and read_json(meta_path).get("dataset") != task.dataset:
            raise DataError(f"{meta_path}: not a prediction of dataset {task.dataset}")
    n_boot, seed = score_params(params)
    result = score_against(rows, args.out.stem, others, list(task.labels), n_boot, seed,
                           ci_method_param(params))
    table = markdown(result, args.out.stem)
    print(table, end="")
    if args.markdown:
        write_text(args.markdown, table)

if __name__ == "__main__":
    sys.exit(main())
