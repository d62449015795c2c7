"""predict: answer every test example with the base or the fine-tuned model.

Reads <instructions>/test.jsonl and task.json; renders each prompt (through the model's chat
template when `models.<model>.chat_template` is set), generates greedily in length-sorted,
left-padded batches, decodes only the new tokens, and parses the answer strictly: a
canonical label or INVALID. `--system base` uses the task's base prompt (few-shot where the
task says so); `--system tuned` loads the LoRA adapter from --adapter on the same base.
Writes one row per test example to --out ({id, prompt_sha256, raw, parsed, target}) and a
sidecar <out>.meta.json (model, adapter, settings, timing).
"""

import time
from pathlib import Path

from stages._cli import parser, run
from tunebench.config import ConfigError, check_keys
from tunebench.io import read_json, read_jsonl, sha256_file, write_json, write_jsonl
from tunebench.params import benchmark_model, load_params, section
from tunebench.parsing import INVALID, get_parser
from tunebench.provenance import model_provenance, package_versions

PREDICT_KEYS = {"batch_size", "max_new_tokens", "parser", "stop_strings"}


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--instructions", type=Path, required=True, help="one dataset's folder")
    p.add_argument("--system", choices=("base", "tuned"), required=True)
    p.add_argument("--adapter", type=Path, help="LoRA adapter folder (with --system tuned)")
    p.add_argument("--out", type=Path, required=True, help="predictions JSONL")
    args = p.parse_args()
    if (args.system == "tuned") != (args.adapter is not None):
        p.error("--adapter is required with --system tuned, and only then")

    from tunebench.generate import generate, prompt_sha256
    from tunebench.models import load_causal_lm, load_tokenizer, render_prompt, resolve_model_dir

    params = load_params(args.params)
    cfg = section(params, "predict")
    check_keys(cfg, PREDICT_KEYS, "params.yaml: predict", PREDICT_KEYS - {"stop_strings"})
    task = read_json(args.instructions / "task.json")
    rows = read_jsonl(args.instructions / "test.jsonl", ("id", "prompt", "completion"))
    key = "prompt_base" if args.system == "base" and task["base_prompt"] == "few_shot" else "prompt"
    parser_name = cfg["parser"] or task["parser"]
    parse = get_parser(parser_name)

    spec = benchmark_model(params)
    model_dir = resolve_model_dir(spec, Path(section(params, "paths")["model_cache"]))
    tokenizer = load_tokenizer(spec, model_dir, padding_side="left")
    model = load_causal_lm(spec, model_dir, quantize=spec.load_in_4bit, adapter_dir=args.adapter)
    prompts = [render_prompt(tokenizer, r[key], spec.chat_template) for r in rows]
    max_new = _for_system(cfg["max_new_tokens"], args.system, "predict.max_new_tokens")
    start = time.perf_counter()
    answers = generate(model, tokenizer, prompts, batch_size=cfg["batch_size"],
                       max_new_tokens=max_new, stop_strings=cfg.get("stop_strings"))
    seconds = time.perf_counter() - start

    out = [{"id": r["id"], "prompt_sha256": prompt_sha256(prompt), "raw": answer,
            "parsed": parse(answer, task["labels"]), "target": r["completion"]}
           for r, prompt, answer in zip(rows, prompts, answers, strict=True)]
    write_jsonl(args.out, out)
    invalid = sum(r["parsed"] == INVALID for r in out)
    write_json(args.out.with_suffix(".meta.json"), {
        "system": args.system, "kind": args.system, "dataset": task["dataset"],
        "model": model_provenance(spec), "prompt_field": key, "parser": parser_name,
        "adapter": None if args.adapter is None else {
            "path": str(args.adapter),
            "sha256": sha256_file(args.adapter / "adapter_model.safetensors")},
        "batch_size": cfg["batch_size"], "max_new_tokens": max_new,
        "stop_strings": cfg.get("stop_strings"), "n": len(out), "invalid": invalid,
        "seconds": round(seconds, 3), "examples_per_s": round(len(out) / seconds, 3),
        "packages": package_versions()})
    print(f"predict {task['dataset']} {args.system}: {len(out)} rows, {invalid} invalid, "
          f"{len(out) / seconds:.2f} examples/s")


def _for_system(value, system: str, where: str) -> int:
    """A setting given once, or per system as {base: ..., tuned: ...}."""
    if isinstance(value, dict):
        if system not in value:
            raise ConfigError(f"params.yaml: {where} has no entry for '{system}'")
        value = value[system]
    if not isinstance(value, int) or value < 1:
        raise ConfigError(f"params.yaml: {where}: expected a positive integer, got {value!r}")
    return value


if __name__ == "__main__":
    run(main)
