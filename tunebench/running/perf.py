"""`make perf`: speed of prediction and training, measured side by side in one process.

python -m tunebench.running.perf [--params params.yaml] [--n N] [--out metrics/perf.json]
                         [--only predict|train|dvc ...]

Same model, inputs and machine for every figure: FPB test prompts (params `perf`), the
benchmark model (base and with the fine-tuned adapter models/<run>). Prints a table and
writes metrics/perf.json (a DVC metrics file).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import time
from pathlib import Path

from tunebench.running.perf_timing import timed

PARTS = ("predict", "train", "dvc")


def naive_generate(model, tokenizer, prompts, batch_size: int, max_length: int) -> list[str]:
    """The published-style loop: input order, batches of 8, max_length, no new-token cap."""
    import torch

    from tunebench.models.generate import _left_pad, pad_id_of
    from tunebench.models.loading import encode_prompt

    out = []
    for i in range(0, len(prompts), batch_size):
        ids, mask = _left_pad([encode_prompt(tokenizer, p) for p in prompts[i:i + batch_size]],
                              pad_id_of(tokenizer))
        with torch.inference_mode():
            gen = model.generate(input_ids=ids, attention_mask=mask, max_length=max_length,
                                 do_sample=False, pad_token_id=pad_id_of(tokenizer))
        out += tokenizer.batch_decode(gen[:, ids.shape[1]:], skip_special_tokens=True)
    return out


def forward_floor(model, tokenizer, prompts, batch_size: int) -> None:
    """One batched forward pass over the prompts (our batching, no prefix reuse)."""
    import torch

    from tunebench.models.generate import _left_pad, length_batches, pad_id_of
    from tunebench.models.loading import encode_prompt

    enc = [encode_prompt(tokenizer, p) for p in prompts]
    for batch in length_batches([len(e) for e in enc], batch_size):
        ids, mask = _left_pad([enc[i] for i in batch], pad_id_of(tokenizer))
        with torch.inference_mode():
            model(input_ids=ids, attention_mask=mask, logits_to_keep=1)


def predict_figures(model, tokenizer, prompts, labels, parse, cfg, pcfg, system) -> dict:
    from tunebench.models.generate import generate
    from tunebench.models.loglik import loglik_scores, pick

    n, res = len(prompts), {}
    cap = pcfg["max_new_tokens"][system] if isinstance(pcfg["max_new_tokens"], dict) \
        else pcfg["max_new_tokens"]
    stops = pcfg.get("stop_strings")
    stops = stops.get(system) if isinstance(stops, dict) else stops
    _, floor_s, floor_mem = timed(lambda: forward_floor(model, tokenizer, prompts,
                                                        pcfg["batch_size"]))
    naive, naive_s, naive_mem = timed(lambda: naive_generate(
        model, tokenizer, prompts, cfg["naive_batch_size"], cfg["naive_max_length"]))
    ours, ours_s, ours_mem = timed(lambda: generate(
        model, tokenizer, prompts, pcfg["batch_size"], cap, stops, False,
        pcfg.get("share_prefix", True)))
    scores, ll_s, ll_mem = timed(lambda: loglik_scores(model, tokenizer, prompts, labels,
                                                       pcfg["batch_size"], progress=False))
    naive_p = [parse(t, labels) for t in naive]
    ours_p = [parse(t, labels) for t in ours]
    b1, b16 = cfg["invariance_batch_sizes"]
    one = [parse(t, labels) for t in generate(model, tokenizer, prompts, b1, cap, stops, False)]
    many = [parse(t, labels) for t in generate(model, tokenizer, prompts, b16, cap, stops, False)]
    for name, secs, mem in (("floor", floor_s, floor_mem), ("naive", naive_s, naive_mem),
                            ("generate", ours_s, ours_mem), ("loglik", ll_s, ll_mem)):
        res[name] = {"examples_per_s": round(n / secs, 3), "seconds": round(secs, 2),
                     "x_floor": round(secs / floor_s, 2), "peak_mb": mem}
    ll_pred = [pick(s, labels) for s in scores]
    res["generate_speedup_vs_naive"] = round(naive_s / ours_s, 2)
    same_cap = sum(a == b for a, b in zip(naive_p, ours_p, strict=True))
    same_batch = sum(a == b for a, b in zip(one, many, strict=True))
    res["cap_agreement_vs_512"] = round(same_cap / n, 4)
    res["batch_invariance"] = {"batch_sizes": [b1, b16], "agreement": round(same_batch / n, 4),
                               "differ": n - same_batch}
    res["loglik_label_distribution"] = {lab: ll_pred.count(lab) for lab in labels}
    res["invalid"] = {"naive": naive_p.count("INVALID"), "generate": ours_p.count("INVALID")}
    res["max_new_tokens"], res["stop_strings"] = cap, stops
    res["generate_batch_sizes"] = {}
    for size in cfg.get("generate_batch_sizes") or []:
        texts, secs, mem = timed(lambda size=size: generate(
            model, tokenizer, prompts, size, cap, stops, False, pcfg.get("share_prefix", True)))
        same = sum(parse(t, labels) == p for t, p in zip(texts, ours_p, strict=True))
        res["generate_batch_sizes"][str(size)] = {
            "examples_per_s": round(n / secs, 3), "seconds": round(secs, 2), "peak_mb": mem,
            "speedup_vs_naive": round(naive_s / secs, 2),
            f"agreement_vs_batch_{pcfg['batch_size']}": round(same / n, 4)}
    return res


def dvc_noop_seconds(runs: int = 3) -> dict:
    """Wall time of `dvc repro` on the pipeline as it is (the median of `runs`); a no-op only
    when `dvc status` finds nothing to do, else `--dry` (and up_to_date false)."""
    status = subprocess.run(["dvc", "status", "-q"], capture_output=True, text=True)
    cmd = ["dvc", "repro"] if status.returncode == 0 else ["dvc", "repro", "--dry"]
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(cmd, capture_output=True, text=True, check=True)
        times.append(round(time.perf_counter() - start, 2))
    stages = subprocess.run(["dvc", "stage", "list"], capture_output=True, text=True, check=True)
    return {"seconds": sorted(times)[len(times) // 2], "runs": times, "command": " ".join(cmd),
            "up_to_date": status.returncode == 0, "stages": len(stages.stdout.splitlines())}


def _arguments() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--n", type=int, help="override perf.n_prompts")
    ap.add_argument("--out", type=Path, default=Path("metrics/perf.json"))
    ap.add_argument("--skip-train", action="store_true")
    ap.add_argument("--only", choices=PARTS, action="append",
                    help="measure only these parts (repeatable) and keep the other parts of an "
                         "existing --out file; each part's ratios still come from one run")
    return ap.parse_args()


def main() -> None:
    args = _arguments()
    parts = set(args.only or PARTS) - ({"train"} if args.skip_train else set())

    import torch

    from tunebench.data.tasks import load_task
    from tunebench.data.tasks import render_prompt as task_prompt
    from tunebench.evaluation.parsing import get_parser
    from tunebench.io import read_json, read_parquet, write_json
    from tunebench.models.loading import (
        apply_prompt_format,
        load_causal_lm,
        load_tokenizer,
        resolve_model_dir,
    )
    from tunebench.running.params import benchmark_model, load_params, section

    params = load_params(Path(args.params))
    cfg, pcfg = section(params, "perf"), section(params, "predict")
    n = args.n or cfg["n_prompts"]
    ds = cfg["dataset"]
    task = load_task(Path("tasks") / f"{ds}.yaml",
                     (params["datasets"][ds] or {}).get("overrides"))
    df = read_parquet(Path(f"data/labeled/{ds}/test.parquet"))
    records = df.to_dict("records")[:n]
    spec = benchmark_model(params)
    model_dir = resolve_model_dir(spec, Path(section(params, "paths")["model_cache"]))
    tokenizer = load_tokenizer(spec, model_dir)
    texts = [task_prompt(task, r) for r in records]
    prompts_of = {system: [apply_prompt_format(tokenizer, t, spec.format_for(system),
                                               spec.system_prompt) for t in texts]
                  for system in ("base", "tuned")}  # each system as predict asks it
    prompts = prompts_of["base"]
    labels, parse = list(task.labels), get_parser(task.parser)
    result = read_json(args.out) if args.only and args.out.is_file() else {}
    result.update({"model": spec.name, "threads": torch.get_num_threads(),
                   "device": "cuda" if torch.cuda.is_available() else "cpu"})
    run = params["datasets"][ds]["run"]
    if "predict" in parts:
        result["n_prompts"] = len(prompts)
        for system, adapter in (("base", None), ("tuned", Path("models") / run)):
            model = load_causal_lm(spec, model_dir, quantize=spec.load_in_4bit,
                                   adapter_dir=adapter)
            result[system] = predict_figures(model, tokenizer, prompts_of[system], labels,
                                             parse, cfg, pcfg, system)
            print(system, json.dumps(result[system]), flush=True)
            del model
    if "train" in parts:
        from tunebench.running.perf_train import train_figures

        result["train"] = train_figures(spec, model_dir, params, cfg)
    if "dvc" in parts:
        result["dvc_repro_noop"] = dvc_noop_seconds()
    write_json(args.out, result)
    print(table(result))


def table(r: dict) -> str:
    lines = [f"perf: {r.get('n_prompts')} {r['model']} prompts, {r['threads']} threads, "
             f"{r['device']}", f"{'predict':<22}{'ex/s':>8}{'s':>9}{'x floor':>9}{'peak MB':>9}"]
    for system in [s for s in ("base", "tuned") if s in r]:
        for mode in ("floor", "naive", "generate", "loglik"):
            f = r[system][mode]
            lines.append(f"{system + ' ' + mode:<22}{f['examples_per_s']:>8}{f['seconds']:>9}"
                         f"{f['x_floor']:>9}{f['peak_mb']:>9}")
        s = r[system]
        lines.append(f"  {system}: generate {s['generate_speedup_vs_naive']}x naive; same labels "
                     f"as 512-token run {s['cap_agreement_vs_512']:.1%}; batch "
                     f"{s['batch_invariance']['batch_sizes']} agreement "
                     f"{s['batch_invariance']['agreement']:.1%}; loglik labels "
                     f"{s['loglik_label_distribution']}")
        for size, f in s.get("generate_batch_sizes", {}).items():
            lines.append(f"  {system}: generate at batch {size}: {f['examples_per_s']} ex/s, "
                         f"{f['speedup_vs_naive']}x naive, peak {f['peak_mb']} MB")
    if "train" in r:
        lines.append(f"{'train':<22}{'real tok/s':>11}{'peak MB':>9}  "
                     f"({r['train'].get('mixed_precision', 'fp32')})")
        for name, f in r["train"].items():
            if isinstance(f, dict) and name != "bound":
                share = (f" {f['fraction_of_bound']:.1%} of bound"
                         if "fraction_of_bound" in f else "")
                lines.append(f"{name:<22}{f['tokens_per_s']:>11}{f['peak_mb']:>9}{share}")
        if "bound" in r["train"]:
            b = r["train"]["bound"]
            lines.append(f"  bound: {b['tokens_per_s']} tok/s ({b['matmul_tflops']} TFLOP/s "
                         f"matmul probe, {b['flop_per_token'] / 1e9:.2f} GFLOP/token)")
    if "dvc_repro_noop" in r:
        d = r["dvc_repro_noop"]
        lines.append(f"dvc no-op ({d['command']}): {d['seconds']} s"
                     + (f" (median of {d['runs']}, {d['stages']} stages)" if "runs" in d else ""))
    return "\n".join(lines)


if __name__ == "__main__":
    main()
