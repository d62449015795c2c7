"""`make crosscheck`: tunebench's label log-likelihoods against lm-evaluation-harness.

python -m tunebench.evaluation.crosscheck [--datasets fpb fiqa_sa tfns nwgi] [--systems base tuned
    base-raw] [--n N] [--batch-size 16] [--threads T] [--no-4bit] [--no-engine] [--out F]

Exports the datasets as lm-eval tasks (tunebench.evaluation.lmeval_tasks, first --n capped
test ids),
then per system (base and base-raw: the un-tuned model; tuned: with the LoRA adapter
models/<run>) loads the model once in fp32 for tunebench and once through lm-eval's HF
backend (`pretrained=` the same folder, `peft=` the adapter) and, per dataset, in one process
with the same threads and batch size:
  lm-eval     runs the exported task (simple_evaluate, log_samples), read back by the ingest
              (tunebench.evaluation.lmeval_samples); tunebench scores the same tokens
              (lm-eval's split);
              agreement, max |loglik diff|, accuracies, examples/s and speed_ratio;
  engine      lm-eval's scorer on tunebench's own tokens (the split predict uses);
  split       tunebench's split against lm-eval's: answers, and which one the model finds
              more likely (docs/crosscheck.md);
  4-bit       tunebench's default NF4 model against fp32 on the same prompts (unless --no-4bit).
Writes --out (a metrics file: figures, settings, versions, no timestamps) and prints the
tables (render_table). Needs the optional extra: pip install -e '.[crosscheck]'.
"""

from __future__ import annotations

import argparse
import gc
import sys
from pathlib import Path
from typing import Any

from tunebench.io import DataError, read_jsonl

WORK_DIR = Path(".cache/crosscheck")


def _split_entry(tb, tb_nat, boundary, targets, labels, consistent) -> dict[str, Any]:
    """tunebench's split against lm-eval's, both scored by tunebench."""
    from tunebench.evaluation.crosscheck_math import answer_counts, compare_scores, split_preference

    rows = [i for i, ok in enumerate(consistent) if ok]
    out = {**compare_scores(tb, tb_nat, targets, ("tunebench_split", "lmeval_split")),
           "answers": {"tunebench_split": answer_counts(tb, labels),
                       "lmeval_split": answer_counts(tb_nat, labels)},
           "n_boundary_consistent": len(rows)}
    if rows:
        out.update(split_preference([tb[i] for i in rows], [boundary[i] for i in rows],
                                    [tb_nat[i] for i in rows]))
    return out


def task_entry(task, figures: dict[str, Any]) -> dict[str, Any]:
    """One (dataset, system) entry of the record from the scores and timings of one run."""
    from tunebench.evaluation.crosscheck_math import compare_scores, goals_met, speed

    f, n, labels = figures, task.n, list(task.labels)
    targets = f["targets"]
    entry = {**compare_scores(f["tb_natural"], f["lmeval"], targets, ("tunebench", "lmeval")),
             "prompt_format": task.prompt_format, "boundary_whitespace": f["whitespace"],
             "token_mismatches": f["token_mismatches"],
             "tunebench_examples_per_s": speed(n, f["tb_natural_s"]),
             "tunebench_split_examples_per_s": speed(n, f["tb_s"]),
             "lmeval_examples_per_s": speed(n, f["lmeval_loglik_s"]),
             "lmeval_end_to_end_examples_per_s": speed(n, f["lmeval_s"])}
    entry["speed_ratio"] = entry["tunebench_examples_per_s"] / entry["lmeval_examples_per_s"]
    entry["speed_ratio_end_to_end"] = (entry["tunebench_examples_per_s"]
                                       / entry["lmeval_end_to_end_examples_per_s"])
    if f.get("lmeval_on_tb") is not None:
        engine = compare_scores(f["tb"], f["lmeval_on_tb"], targets, ("tunebench", "lmeval"))
        entry["lmeval_on_tunebench_split"] = {k: engine[k] for k in (
            "agreement", "max_abs_loglik_diff", "accuracy_tunebench", "accuracy_lmeval")}
    entry["split"] = _split_entry(f["tb"], f["tb_natural"], f["boundary"], targets, labels,
                                  f["boundary_consistent"])
    entry["goals_met"] = goals_met(entry)
    return entry


def score_task(model, tokenizer, lm, task, batch_size: int, share_prefix: bool,
               lmeval_dir: Path, engine: bool = True) -> dict[str, Any]:
    """Every score and timing of one exported task with both scorers (fp32)."""
    from tunebench.evaluation.crosscheck_run import (
        lmeval_on_tokens,
        lmeval_pairs,
        natural_split,
        run_lmeval,
        timed_scores,
        token_pairs,
    )
    from tunebench.evaluation.lmeval_samples import read_samples
    from tunebench.models.loading import encode_prompt

    docs = read_jsonl(task.data_path, ("id", "prompt", "target"))
    prompts, labels = [d["prompt"] for d in docs], task.labels
    ws, stripped, natural = natural_split(prompts, labels, str(task.data_path))
    f: dict[str, Any] = {"targets": [d["target"] for d in docs], "whitespace": ws}
    print(f"crosscheck {task.name}: tunebench, its own split then lm-eval's", flush=True)
    f["tb"], f["tb_s"] = timed_scores(model, tokenizer, prompts, labels, batch_size,
                                      share_prefix)
    f["tb_natural"], f["tb_natural_s"] = timed_scores(model, tokenizer, stripped, natural,
                                                      batch_size, share_prefix)
    boundary, _ = timed_scores(model, tokenizer, stripped, [ws], batch_size, share_prefix,
                               progress=False)
    f["boundary"] = [row[0] for row in boundary]
    # tunebench's prompt tokens = those of the stripped prompt + the whitespace's own tokens?
    # (Needed to compare the likelihood of the two splits of one text.)
    ws_ids = tokenizer(ws, add_special_tokens=False)["input_ids"]
    f["boundary_consistent"] = [encode_prompt(tokenizer, s) + ws_ids == encode_prompt(tokenizer, p)
                                for s, p in zip(stripped, prompts, strict=True)]
    ours = token_pairs(tokenizer, stripped, natural)
    f["token_mismatches"] = sum(a != b for a, b in zip(ours, lmeval_pairs(lm, prompts, labels),
                                                       strict=True))
    print(f"crosscheck {task.name}: lm-eval", flush=True)
    samples_path, f["lmeval_s"], f["lmeval_loglik_s"] = run_lmeval(lm, task, lmeval_dir)
    by_id = {s["id"]: s["scores"] for s in read_samples(samples_path, labels)}
    missing = [d["id"] for d in docs if d["id"] not in by_id]
    if missing or len(by_id) != len(docs):
        raise DataError(f"{samples_path}: {len(by_id)} samples for {len(docs)} exported ids")
    f["lmeval"] = [by_id[d["id"]] for d in docs]
    if engine:
        f["lmeval_on_tb"] = lmeval_on_tokens(lm, token_pairs(tokenizer, prompts, labels))
    return f


def check_system(system: str, tasks: list, spec, model_dir: str, adapter: Path | None,
                 settings: dict[str, Any]) -> dict[str, dict]:
    """All tasks of one system: the fp32 models of both scorers, then tunebench's 4-bit."""
    from tunebench.evaluation.crosscheck_math import answer_counts, compare_scores
    from tunebench.evaluation.crosscheck_run import load_lmeval, timed_scores, warm_up
    from tunebench.models.loading import load_causal_lm, load_tokenizer

    batch, share = settings["batch_size"], settings["share_prefix"]
    tokenizer = load_tokenizer(spec, model_dir)
    model = load_causal_lm(spec, model_dir, quantize=False, adapter_dir=adapter)
    model.float()  # fp32 even where the spec says otherwise: lm-eval is loaded in fp32 too
    lm = load_lmeval(model_dir, adapter, batch)
    first = read_jsonl(tasks[0].data_path, ("prompt",))
    warm_up(model, tokenizer, lm, [r["prompt"] for r in first], tasks[0].labels, batch)
    entries, kept = {}, {}
    for task in tasks:
        figures = score_task(model, tokenizer, lm, task, batch, share,
                             settings["work_dir"] / "lmeval" / task.name, settings["engine"])
        entries[task.dataset] = task_entry(task, figures)
        kept[task.dataset] = (figures["tb"], figures["targets"])
    del model, lm
    gc.collect()
    if settings["quantized"]:
        model = load_causal_lm(spec, model_dir, quantize=True, adapter_dir=adapter)
        for task in tasks:
            prompts = [r["prompt"] for r in read_jsonl(task.data_path, ("prompt",))]
            print(f"crosscheck {task.name}: tunebench 4-bit", flush=True)
            q4, _ = timed_scores(model, tokenizer, prompts, task.labels, batch, share)
            fp32, targets = kept[task.dataset]
            entries[task.dataset]["fp32_vs_4bit"] = {
                **compare_scores(fp32, q4, targets, ("fp32", "4bit")),
                "answers_4bit": answer_counts(q4, task.labels)}
        del model
        gc.collect()
    return entries


def plan(params: dict, tasks: list, systems: list[str], models_dir: Path) -> list[tuple]:
    """(system, run, tasks) groups, checked before any model runs: each tuned group's
    adapter must exist (a missing one would otherwise fail after the other systems ran)."""
    from tunebench.running.params import dataset_entry

    groups: dict[tuple[str, str], list] = {}
    for task in tasks:
        groups.setdefault((task.system, dataset_entry(params, task.dataset).run), []).append(task)
    for (system, run), _ in groups.items():
        path = Path(models_dir) / run / "adapter_model.safetensors"
        if system == "tuned" and not path.is_file():
            raise FileNotFoundError(f"{path}: the tuned adapter of run {run} is missing (run "
                                    f"`dvc repro train-qlora@{run}`, or leave tuned out of "
                                    f"--systems)")
    return [(system, run, groups[(system, run)]) for system in systems
            for (s, run) in list(groups) if s == system]


def run_crosscheck(params: dict, datasets: list[str], systems: list[str], n: int | None,
                   settings: dict[str, Any], models_dir: Path) -> dict[str, Any]:
    """Export, check every system, and return the record of metrics/crosscheck.json."""
    from tunebench.evaluation.lmeval_tasks import causal_model, export_dataset
    from tunebench.io import sha256_file
    from tunebench.models.loading import resolve_model_dir
    from tunebench.running.params import section

    tasks = [t for d in datasets for t in export_dataset(
        params, d, systems, settings["instructions"], settings["work_dir"] / "tasks", n)]
    results: dict[str, dict] = {}
    record: dict[str, Any] = {"adapters": {}, "models": {}}
    for system, run, mine in plan(params, tasks, systems, models_dir):
        spec = causal_model(params, run, system)
        model_dir = resolve_model_dir(spec, Path(section(params, "paths")["model_cache"]))
        adapter = Path(models_dir) / run if system == "tuned" else None
        if adapter is not None:
            record["adapters"][run] = {
                "path": str(adapter), "sha256": sha256_file(adapter / "adapter_model.safetensors")}
        record["models"][system] = spec.name
        for dataset, entry in check_system(system, mine, spec, model_dir, adapter,
                                           settings).items():
            results.setdefault(dataset, {})[system] = entry
    record["results"] = results
    return record


def finish_record(record: dict[str, Any], settings: dict[str, Any]) -> dict[str, Any]:
    """Settings, goals and provenance around the results (no timestamps)."""
    from importlib import metadata

    import torch

    from tunebench.evaluation.crosscheck_math import GOALS
    from tunebench.evaluation.score import round_floats
    from tunebench.running.provenance import hardware, package_versions

    met = [all(e["goals_met"].values()) for r in record["results"].values() for e in r.values()]
    keep = {k: v for k, v in settings.items() if k not in ("work_dir", "instructions")}
    return round_floats({
        **record, "goals": GOALS, "all_goals_met": bool(met) and all(met),
        "settings": {**keep, "dtype": "float32", "torch_threads": torch.get_num_threads()},
        "packages": {**package_versions(), "lm_eval": metadata.version("lm_eval")},
        "hardware": hardware()})


def render_table(record: dict) -> str:
    """metrics/crosscheck.json as markdown: the cross-check table, then the split and 4-bit
    table (see docs/crosscheck.md for what every column compares)."""
    head = ("| dataset | system | prompt | n | agreement | max abs Δ loglik | accuracy tunebench "
            "| accuracy lm-eval | tunebench ex/s | lm-eval ex/s | speed ratio (end to end) |\n"
            "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    split = ("| dataset | system | split agreement | split max offset spread | answers, "
             "tunebench split | answers, lm-eval split | more likely: lm-eval / tunebench "
             "split / equal | 4-bit agreement | 4-bit max abs Δ |\n"
             "| --- | --- | ---: | ---: | --- | --- | ---: | ---: | ---: |")
    rows, more = [head], [split]
    for dataset, systems in sorted(record["results"].items()):
        for system, e in systems.items():
            rows.append(f"| {dataset} | {system} | {e['prompt_format']} | {e['n']} | "
                        f"{e['agreement']:.1%} | {e['max_abs_loglik_diff']:.1e} | "
                        f"{e['accuracy_tunebench']:.3f} | {e['accuracy_lmeval']:.3f} | "
                        f"{e['tunebench_examples_per_s']:.1f} | {e['lmeval_examples_per_s']:.1f} "
                        f"| {e['speed_ratio']:.2f}x ({e['speed_ratio_end_to_end']:.2f}x) |")
            s, q = e["split"], e.get("fp32_vs_4bit")
            share = "-" if "mean_log_ratio" not in s else " / ".join(
                f"{s[k]:.0%}" for k in ("lmeval_split_more_likely",
                                        "tunebench_split_more_likely", "equally_likely"))
            more.append(
                f"| {dataset} | {system} | {s['agreement']:.1%} | {s['max_offset_spread']:.1e} | "
                f"{_counts(s['answers']['tunebench_split'])} | "
                f"{_counts(s['answers']['lmeval_split'])} | "
                f"{share} | "
                f"{'-' if q is None else format(q['agreement'], '.1%')} | "
                f"{'-' if q is None else format(q['max_abs_loglik_diff'], '.2f')} |")
    return "\n".join(rows) + "\n\n" + "\n".join(more) + "\n"


def _counts(counts: dict[str, int]) -> str:
    return " / ".join(f"{label} {count}" for label, count in counts.items())


def build_parser() -> argparse.ArgumentParser:
    from tunebench.evaluation.lmeval_tasks import FINGPT, SYSTEMS

    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--params", type=Path, default=Path("params.yaml"))
    p.add_argument("--datasets", nargs="+", default=list(FINGPT))
    p.add_argument("--systems", nargs="+", choices=SYSTEMS, default=list(SYSTEMS))
    p.add_argument("--n", type=int, help="first N capped test ids per dataset (default: all)")
    # 16, not predict's 64: on the 2-core CPU both scorers ran faster at 16 (lm-eval's
    # full-vocabulary logits of 64 rows cost it most), so 16 is the fairer comparison.
    p.add_argument("--batch-size", type=int, default=16, help="both scorers (default: 16)")
    p.add_argument("--threads", type=int, help="torch threads (default: torch's own)")
    p.add_argument("--no-4bit", dest="quantized", action="store_false",
                   help="skip the 4-bit vs fp32 comparison")
    p.add_argument("--no-engine", dest="engine", action="store_false",
                   help="skip lm-eval's scorer on tunebench's own split (a quarter of the time)")
    p.add_argument("--models", type=Path, default=Path("models"),
                   help="folder of the adapters, <models>/<run>")
    p.add_argument("--instructions", type=Path, default=Path("data/instructions"))
    p.add_argument("--work-dir", type=Path, default=WORK_DIR, help="exports, lm-eval output")
    p.add_argument("--out", type=Path, default=Path("metrics/crosscheck.json"))
    return p


def main(argv: list[str] | None = None) -> int:
    from tunebench.cli import run_command

    args = build_parser().parse_args(argv)
    for name in ("n", "batch_size", "threads"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            print(f"error: --{name.replace('_', '-')} must be >= 1", file=sys.stderr)
            return 2
    try:
        import lm_eval  # noqa: F401
    except ImportError:
        print("error: lm-eval is not installed; run `make crosscheck` or "
              "pip install -e '.[crosscheck]'", file=sys.stderr)
        return 2
    return run_command(lambda: _run(args))


def _run(args: argparse.Namespace) -> None:
    import torch

    from tunebench.io import write_json
    from tunebench.running.params import dataset_entry, load_params, predict_settings

    if args.threads:
        torch.set_num_threads(args.threads)
    params = load_params(args.params)
    cfg = predict_settings(params, dataset_entry(params, args.datasets[0]).run)
    settings = {"batch_size": args.batch_size, "engine": args.engine,
                "share_prefix": bool(cfg.get("share_prefix", True)),
                "quantized": args.quantized, "n_requested": args.n,
                "work_dir": args.work_dir, "instructions": args.instructions}
    record = run_crosscheck(params, args.datasets, args.systems, args.n, settings,
                            args.models)
    record = finish_record(record, settings)
    write_json(args.out, record)
    print(render_table(record), end="")
    print(f"crosscheck: wrote {args.out}; all goals met: {record['all_goals_met']}")


if __name__ == "__main__":
    sys.exit(main())
