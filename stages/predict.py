"""predict: answer every test example with the base or the fine-tuned model, in one or more
scoring modes, loading the model once.

Reads <instructions>/test.jsonl and task.json; renders each prompt (through the model's chat
template when `models.<model>.chat_template` is set). `--system base` uses the task's base
prompt (few-shot where the task says so); `--system tuned` loads the LoRA adapter from
--adapter on the same base. Each `--out MODE=PATH` (a bare PATH means generate) writes one
row per test example ({id, prompt_sha256, raw, parsed, target}) and a sidecar
<out>.meta.json (system = the file's stem, kind, mode, settings, label distribution, timing):
  generate  free greedy generation (length-sorted batches, shared-prefix KV cache, rows stop
            at EOS / a stop string / the cap), parsed strictly: a label or INVALID;
  loglik    the label whose tokens are most likely after the prompt (calibrated against
            content-free inputs when predict.calibrate is true); never INVALID;
  choice    greedy generation constrained to the label strings; never INVALID.
Finished batches go to a hidden `.<out>.partial` sibling; a rerun after a kill resumes from
it when its header (prompt hashes + settings) matches, and the output is written atomically.
"""

import time
from pathlib import Path

from stages._cli import parser, run
from tunebench.config import ConfigError, check_keys
from tunebench.io import read_json, read_jsonl, sha256_file, write_json, write_jsonl
from tunebench.params import benchmark_model, load_params, section
from tunebench.parsing import INVALID, get_parser
from tunebench.provenance import model_provenance, package_versions

PREDICT_KEYS = {"batch_size", "max_new_tokens", "parser", "stop_strings", "share_prefix",
                "calibrate", "content_free"}
REQUIRED_KEYS = {"batch_size", "max_new_tokens", "parser"}
MODES = ("generate", "loglik", "choice")


def parse_outs(values: list[str]) -> dict[str, Path]:
    outs: dict[str, Path] = {}
    for value in values:
        mode, sep, path = value.partition("=")
        mode, path = (mode, path) if sep else ("generate", value)
        if mode not in MODES:
            raise ConfigError(f"--out {value}: mode {mode!r} is not one of {MODES}")
        if mode in outs:
            raise ConfigError(f"--out: mode {mode!r} given twice")
        outs[mode] = Path(path)
    return outs


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--instructions", type=Path, required=True, help="one dataset's folder")
    p.add_argument("--system", choices=("base", "tuned"), required=True)
    p.add_argument("--adapter", type=Path, help="LoRA adapter folder (with --system tuned)")
    p.add_argument("--out", action="append", required=True, metavar="[MODE=]PATH",
                   help=f"predictions JSONL per mode ({', '.join(MODES)}); repeatable")
    args = p.parse_args()
    if (args.system == "tuned") != (args.adapter is not None):
        p.error("--adapter is required with --system tuned, and only then")
    outs = parse_outs(args.out)

    from tunebench.generate import prompt_sha256
    from tunebench.models import load_causal_lm, load_tokenizer, render_prompt, resolve_model_dir

    params = load_params(args.params)
    cfg = section(params, "predict")
    check_keys(cfg, PREDICT_KEYS, "params.yaml: predict", REQUIRED_KEYS)
    task = read_json(args.instructions / "task.json")
    rows = read_jsonl(args.instructions / "test.jsonl", ("id", "prompt", "completion"))
    key = "prompt_base" if args.system == "base" and task["base_prompt"] == "few_shot" else "prompt"
    parser_name = cfg["parser"] or task["parser"]

    spec = benchmark_model(params)
    model_dir = resolve_model_dir(spec, Path(section(params, "paths")["model_cache"]))
    tokenizer = load_tokenizer(spec, model_dir, padding_side="left")
    model = load_causal_lm(spec, model_dir, quantize=spec.load_in_4bit, adapter_dir=args.adapter)
    prompts = [render_prompt(tokenizer, r[key], spec.chat_template) for r in rows]
    hashes = [prompt_sha256(x) for x in prompts]
    adapter = None if args.adapter is None else {
        "path": str(args.adapter),
        "sha256": sha256_file(args.adapter / "adapter_model.safetensors")}
    settings = {
        "batch_size": cfg["batch_size"], "share_prefix": cfg.get("share_prefix", True),
        "max_new_tokens": _for_system(cfg["max_new_tokens"], args.system,
                                      "predict.max_new_tokens"),
        "stop_strings": _stops(cfg.get("stop_strings"), args.system),
        "calibrate": bool(cfg.get("calibrate", False)),
        "content_free": list(cfg.get("content_free") or ["N/A", "", "[MASK]"]),
    }
    common = {"system_kind": args.system, "task": task, "rows": rows, "prompts": prompts,
              "hashes": hashes, "parser": parser_name, "settings": settings,
              "provenance": {"model": model_provenance(spec), "adapter": adapter,
                             "prompt_field": key}}
    for mode, out in outs.items():
        predict_one_mode(mode, out, model, tokenizer, **common)


def predict_one_mode(mode, out, model, tokenizer, system_kind, task, rows, prompts, hashes,
                     parser, settings, provenance) -> None:
    from tunebench.partial import PartialWriter, load_partial, make_header, partial_path
    from tunebench.predict import content_free_prior, iter_mode, label_distribution

    labels, parse = task["labels"], get_parser(parser)
    mode_settings = {k: settings[k] for k in ("batch_size", "share_prefix")}
    if mode == "generate":
        mode_settings.update(max_new_tokens=settings["max_new_tokens"],
                             stop_strings=settings["stop_strings"], parser=parser)
    if mode == "loglik":
        mode_settings.update(calibrate=settings["calibrate"])
        if settings["calibrate"]:
            mode_settings["content_free"] = settings["content_free"]
    ids = [r["id"] for r in rows]
    header = make_header({"mode": mode, **mode_settings, **provenance}, ids, hashes)
    part = partial_path(out)
    done = load_partial(part, header, ids)
    if done:
        print(f"predict {out.name}: resuming, {len(done)}/{len(rows)} rows already done")
    start = time.perf_counter()
    prior = None
    if mode == "loglik" and settings["calibrate"]:
        prior = content_free_prior(model, tokenizer, prompts, labels, settings["content_free"])
    todo = [i for i, rid in enumerate(ids) if rid not in done]
    writer = PartialWriter(part, header, done)
    for batch in iter_mode(mode, model, tokenizer, [prompts[i] for i in todo], labels, parse,
                           mode_settings, prior):
        new = []
        for j, raw, parsed, extra in batch:
            i = todo[j]
            new.append({"id": ids[i], "prompt_sha256": hashes[i], "raw": raw, "parsed": parsed,
                        "target": rows[i]["completion"], **extra})
        writer.write(new)
        done.update((r["id"], r) for r in new)
    seconds = time.perf_counter() - start
    result = [done[rid] for rid in ids]
    write_jsonl(out, result)
    writer.close(remove=True)
    parsed = [r["parsed"] for r in result]
    invalid = sum(x == INVALID for x in parsed)
    meta = {
        "system": out.name.removesuffix(".jsonl"), "kind": system_kind, "mode": mode,
        "dataset": task["dataset"], **provenance, **mode_settings,
        "n": len(result), "invalid": invalid, "label_distribution":
            label_distribution(parsed, labels),
        "seconds": round(seconds, 3), "examples_per_s": round(len(todo) / max(seconds, 1e-9), 3),
        "packages": package_versions()}
    if mode == "generate":
        meta["parser"] = parser
    if mode == "loglik":
        meta["label_distribution_uncalibrated"] = label_distribution(
            [r["raw"] for r in result], labels)
        meta["calibration_prior"] = None if prior is None else [round(x, 6) for x in prior]
    write_json(out.with_suffix(".meta.json"), meta)
    print(f"predict {task['dataset']} {meta['system']} ({mode}): {len(result)} rows, "
          f"{invalid} invalid, {meta['examples_per_s']:.2f} examples/s, "
          f"labels {meta['label_distribution']}")


def _for_system(value, system: str, where: str):
    """A setting given once, or per system as {base: ..., tuned: ...}."""
    if isinstance(value, dict):
        if system not in value:
            raise ConfigError(f"params.yaml: {where} has no entry for '{system}'")
        value = value[system]
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ConfigError(f"params.yaml: {where}: expected a positive integer, got {value!r}")
    return value


def _stops(value, system: str) -> list[str] | None:
    if isinstance(value, dict):
        value = value.get(system)
    if value is not None and not (isinstance(value, list)
                                  and all(isinstance(s, str) and s for s in value)):
        raise ConfigError(f"params.yaml: predict.stop_strings: expected a list of non-empty "
                          f"strings (or one per system), got {value!r}")
    return value


if __name__ == "__main__":
    run(main)
