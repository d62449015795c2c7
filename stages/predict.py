"""predict: answer every test example with the base or the fine-tuned model of the dataset's
run, in each scoring mode of params `predict.modes` (overridden by `runs.<run>.predict`),
loading the model once.

Reads <instructions>/test.jsonl and task.json. The run's model (`runs.<run>.model`, else
params `model`) decides how:
  causal LM   prompts formatted per system as the model's `prompt_format` says (raw, chat,
              chat_no_system; unset: chat when `chat_template` is set, else raw);
              `--system base` uses the task's base prompt (few-shot where the task says so),
              `--system tuned` the LoRA adapter from --adapter on the same base. Modes:
    generate  free greedy generation (length-sorted batches, shared-prefix KV cache, rows
              stop at EOS / a stop string / the cap), parsed strictly: a label or INVALID;
              for summarization the generated text is the answer;
    loglik    the label whose tokens are most likely after the prompt (calibrated against
              content-free inputs when predict.calibrate is true); never INVALID;
    choice    greedy generation constrained to the label strings; never INVALID.
  seq2seq     greedy generation from the prompt (no chat template).
  encoder     argmax of the classification head over the input text (mode argmax); the base
              head is untrained, seeded like the one fine-tuning starts from.
A run with `zero_shot: {model, modes}` also answers with that causal LM as system
zeroshot_llm (with --system base), e.g. beside an encoder whose base is near chance.
Writes --out-dir/<system>.jsonl (generate, argmax) and <system>-<mode>.jsonl, one row per
test example ({id, prompt_sha256, raw, parsed, target}), each with a .meta.json sidecar
(system, kind, mode, settings, label distribution or empty-summary count, timing). Causal
modes write finished batches to a hidden `.<out-dir>-<file>.partial` beside --out-dir; a
rerun after a kill resumes from it when its header (prompt hashes + settings) matches.
"""

import time
from pathlib import Path

from stages._cli import parser, run
from tunebench.config import ConfigError
from tunebench.io import read_json, read_jsonl, sha256_file, write_json, write_jsonl
from tunebench.params import load_params, predict_settings, run_entry, run_model, section
from tunebench.parsing import INVALID, get_parser
from tunebench.predict import check_modes, check_settings, for_system, zero_shot_model
from tunebench.provenance import hardware, model_provenance, package_versions

ZERO_SHOT_SYSTEM = "zeroshot_llm"  # the causal LM prompted zero-shot beside an encoder run


def output_name(system: str, mode: str) -> str:
    """base.jsonl for generate (the reproduction), base-loglik.jsonl etc. for the others."""
    return f"{system}.jsonl" if mode in ("generate", "argmax") else f"{system}-{mode}.jsonl"


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--instructions", type=Path, required=True, help="one dataset's folder")
    p.add_argument("--system", choices=("base", "tuned"), required=True)
    p.add_argument("--adapter", type=Path, help="LoRA adapter folder (with --system tuned)")
    p.add_argument("--out-dir", type=Path, required=True,
                   help="folder for <system>[-<mode>].jsonl and .meta.json files")
    args = p.parse_args()
    if (args.system == "tuned") != (args.adapter is not None):
        p.error("--adapter is required with --system tuned, and only then")

    params = load_params(args.params)
    task = read_json(args.instructions / "task.json")
    run_name = task["run"]
    cfg = predict_settings(params, run_name)
    where = f"predict (+ runs.{run_name}.predict)"
    check_settings(cfg, where)
    summarization = task.get("type", "classification") == "summarization"
    modes = check_modes(cfg.get("modes", ["generate"]), f"{where}.modes", summarization,
                        args.system)
    rows = read_jsonl(args.instructions / "test.jsonl", ("id", "prompt", "completion"))
    spec = run_model(params, run_name)
    common = {"task": task, "rows": rows, "cfg": cfg, "params": params, "out_dir": args.out_dir}
    train_labels = _train_labels(args.instructions)
    if spec.family == "causal_lm":
        predict_causal(spec, args.system, args.system, modes, args.adapter,
                       train_labels=train_labels, **common)
    elif spec.family == "seq2seq":
        predict_seq2seq(spec, args.system, args.adapter, **common)
    else:
        if summarization:
            raise ConfigError(f"params.yaml: runs.{run_name}: model {spec.name} is an encoder "
                              "classifier and cannot summarize")
        predict_encoder(spec, args.system, args.adapter, **common)
    zero_shot = run_entry(params, run_name).get("zero_shot")
    if args.system == "base" and zero_shot:
        llm = zero_shot_model(params, run_name, zero_shot)
        at = f"runs.{run_name}.zero_shot"
        predict_causal(llm, ZERO_SHOT_SYSTEM, "base",
                       check_modes(zero_shot.get("modes", modes), f"{at}.modes", summarization),
                       None, train_labels=train_labels, **common)


def _train_labels(instructions: Path) -> list[str]:
    """The training split's answers (the loglik variant choice compares against them)."""
    path = instructions / "train.jsonl"
    return [r["completion"] for r in read_jsonl(path, ("completion",))] if path.is_file() else []


def _model_dir(spec, params) -> str:
    from tunebench.models import resolve_model_dir

    return resolve_model_dir(spec, Path(section(params, "paths")["model_cache"]))


def _adapter_record(adapter: Path | None) -> dict | None:
    if adapter is None:
        return None
    return {"path": str(adapter), "sha256": sha256_file(adapter / "adapter_model.safetensors")}


def predict_causal(spec, name: str, kind: str, modes: list[str], adapter: Path | None, task,
                   rows, cfg, params, out_dir: Path, train_labels: list[str]) -> None:
    """A causal LM in every mode, loading it once; rendered through its chat template."""
    from tunebench.generate import prompt_sha256
    from tunebench.models import apply_prompt_format, load_causal_lm, load_tokenizer

    key = "prompt_base" if kind == "base" and task["base_prompt"] == "few_shot" else "prompt"
    model_dir = _model_dir(spec, params)
    tokenizer = load_tokenizer(spec, model_dir, padding_side="left")
    model = load_causal_lm(spec, model_dir, quantize=spec.load_in_4bit, adapter_dir=adapter)
    fmt = spec.format_for(kind)  # the tuned model is asked the way it was trained
    prompts = [apply_prompt_format(tokenizer, r[key], fmt, spec.system_prompt) for r in rows]
    settings = {
        "batch_size": cfg["batch_size"], "share_prefix": cfg.get("share_prefix", True),
        "max_new_tokens": for_system(cfg["max_new_tokens"], kind, "predict.max_new_tokens"),
        "stop_strings": _stops(cfg.get("stop_strings"), kind),
        "calibrate": bool(cfg.get("calibrate", False)),
        "content_free": list(cfg.get("content_free") or ["N/A", "", "[MASK]"]),
    }
    parser_name = None if task.get("type") == "summarization" else cfg["parser"] or task["parser"]
    common = {"system_kind": kind, "task": task, "rows": rows, "prompts": prompts,
              "hashes": [prompt_sha256(x) for x in prompts], "parser": parser_name,
              "settings": settings, "train_labels": train_labels,
              "provenance": {"model": model_provenance(spec), "adapter": _adapter_record(adapter),
                             "prompt_field": key, "prompt_format": fmt}}
    for mode in modes:
        out = out_dir / output_name(name, mode)
        # Outside the DVC output folder, which DVC empties before a rerun: a resume survives.
        partial = out_dir.parent / f".{out_dir.name}-{out.name}.partial"
        predict_one_mode(mode, out, model, tokenizer, partial=partial, **common)


def predict_seq2seq(spec, system: str, adapter: Path | None, task, rows, cfg, params,
                    out_dir: Path) -> None:
    """An encoder-decoder: greedy generation from the prompt (no chat template)."""
    from tunebench.generate import prompt_sha256
    from tunebench.models import load_tokenizer
    from tunebench.seq2seq import generate_seq2seq, load_seq2seq

    model_dir = _model_dir(spec, params)
    tokenizer = load_tokenizer(spec, model_dir, padding_side="right")
    model = load_seq2seq(spec, model_dir, quantize=spec.load_in_4bit, adapter_dir=adapter)
    cap = for_system(cfg["max_new_tokens"], system, "predict.max_new_tokens")
    prompts = [r["prompt"] for r in rows]
    start = time.perf_counter()
    texts = generate_seq2seq(model, tokenizer, prompts, cfg["batch_size"], cap)
    parse = _parse_for(task, cfg)
    write_predictions(out_dir / output_name(system, "generate"), task, rows,
                      [prompt_sha256(x) for x in prompts], texts, [parse(t) for t in texts],
                      {"system_kind": system, "mode": "generate", "seconds":
                       time.perf_counter() - start, "max_new_tokens": cap,
                       "batch_size": cfg["batch_size"], "model": model_provenance(spec),
                       "adapter": _adapter_record(adapter), "prompt_field": "prompt"})


def predict_encoder(spec, system: str, adapter: Path | None, task, rows, cfg, params,
                    out_dir: Path) -> None:
    """An encoder classifier: argmax over its head (untrained for base: seeded like the head
    the fine-tuning started from). Never INVALID."""
    from tunebench.encoder import input_texts, load_encoder_cls, predict_encoder_cls
    from tunebench.generate import prompt_sha256
    from tunebench.models import load_tokenizer
    from tunebench.train import TrainConfig

    train = TrainConfig.from_params({**section(params, "train_qlora"), **(
        run_entry(params, task["run"]).get("train_qlora") or {})})
    model_dir = _model_dir(spec, params)
    tokenizer = load_tokenizer(spec, model_dir, padding_side="right")
    model, _ = load_encoder_cls(spec, model_dir, task["labels"], spec.load_in_4bit,
                                seed=train.seed, adapter_dir=adapter)
    texts = input_texts(rows, Path(task["dataset"]))
    start = time.perf_counter()
    labels = predict_encoder_cls(model, tokenizer, texts, task["labels"], cfg["batch_size"],
                                 train.max_seq_len)
    write_predictions(out_dir / output_name(system, "argmax"), task, rows,
                      [prompt_sha256(x) for x in texts], labels, labels,
                      {"system_kind": system, "mode": "argmax", "seconds":
                       time.perf_counter() - start, "batch_size": cfg["batch_size"],
                       "max_len": train.max_seq_len, "head_seed": train.seed,
                       "model": model_provenance(spec), "adapter": _adapter_record(adapter),
                       "prompt_field": "text"})


def _parse_for(task, cfg):
    if task.get("type") == "summarization":
        return str.strip
    parse = get_parser(cfg["parser"] or task["parser"])
    return lambda text: parse(text, task["labels"])


def write_predictions(out: Path, task, rows, hashes, raws, parsed, info: dict) -> None:
    """Prediction rows and their .meta.json sidecar (the schema predict_one_mode writes)."""
    result = [{"id": r["id"], "prompt_sha256": h, "raw": raw, "parsed": p,
               "target": r["completion"]}
              for r, h, raw, p in zip(rows, hashes, raws, parsed, strict=True)]
    write_jsonl(out, result)
    seconds = info.pop("seconds")
    kind = info.pop("system_kind")
    meta = {"system": out.name.removesuffix(".jsonl"), "kind": kind, "dataset": task["dataset"],
            **info, "n": len(result), "seconds": round(seconds, 3),
            "examples_per_s": round(len(result) / max(seconds, 1e-9), 3),
            "packages": package_versions(), "hardware": hardware(),
            **_answer_counts(task, parsed)}
    write_json(out.with_suffix(".meta.json"), meta)
    print(f"predict {task['dataset']} {meta['system']} ({meta['mode']}): {len(result)} rows, "
          f"{meta['examples_per_s']:.2f} examples/s")


def _answer_counts(task, parsed: list[str]) -> dict:
    """Invalid answers and the label distribution; for summaries, the empty ones."""
    from tunebench.predict import label_distribution

    if task.get("type") == "summarization":
        return {"invalid": 0, "n_empty": sum(not p.strip() for p in parsed)}
    return {"invalid": sum(x == INVALID for x in parsed),
            "label_distribution": label_distribution(parsed, task["labels"])}


def predict_one_mode(mode, out, model, tokenizer, system_kind, task, rows, prompts, hashes,
                     parser, settings, provenance, partial: Path,
                     train_labels: list[str]) -> None:
    """One causal-LM mode, resumable: finished batches go to `partial` first. parser None
    means summarization: the answer is the generated text, stripped."""
    from tunebench.partial import PartialWriter, load_partial, make_header
    from tunebench.predict import content_free_prior, iter_mode, loglik_variants

    labels = task["labels"]
    parse = get_parser(parser) if parser else (lambda text, _labels: text.strip())
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
    part = partial
    done = load_partial(part, header, ids)
    if done:
        print(f"predict {out.name}: resuming, {len(done)}/{len(rows)} rows already done")
    start = time.perf_counter()
    prior = None
    if mode == "loglik":  # also for the calibrated variant when calibrate is off
        prior = content_free_prior(model, tokenizer, prompts, labels, settings["content_free"])
    pick_prior = prior if settings["calibrate"] else None
    todo = [i for i, rid in enumerate(ids) if rid not in done]
    writer = PartialWriter(part, header, done)
    for batch in iter_mode(mode, model, tokenizer, [prompts[i] for i in todo], labels, parse,
                           mode_settings, pick_prior):
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
    meta = {
        "system": out.name.removesuffix(".jsonl"), "kind": system_kind, "mode": mode,
        "dataset": task["dataset"], **provenance, **mode_settings,
        "n": len(result), **_answer_counts(task, parsed),
        "seconds": round(seconds, 3), "examples_per_s": round(len(todo) / max(seconds, 1e-9), 3),
        "packages": package_versions(), "hardware": hardware()}
    if mode == "generate":
        meta["parser"] = parser
    if mode == "loglik":
        from tunebench.predict import label_distribution

        meta["label_distribution_uncalibrated"] = label_distribution(
            [r["raw"] for r in result], labels)
        meta["calibration_prior"] = [round(x, 6) for x in prior]
        main_meta, variants = loglik_variants(out, tokenizer, result, labels, prior,
                                              train_labels, settings["calibrate"])
        for path, variant_rows, variant_meta in variants:
            write_jsonl(path, variant_rows)
            counts = _answer_counts(task, [r["parsed"] for r in variant_rows])
            write_json(path.with_suffix(".meta.json"),
                       {**meta, **variant_meta, **counts, "system": path.stem})
        meta.update(main_meta)
    write_json(out.with_suffix(".meta.json"), meta)
    print(f"predict {task['dataset']} {meta['system']} ({mode}): {len(result)} rows, "
          f"{meta['invalid']} invalid, {meta['examples_per_s']:.2f} examples/s, "
          f"labels {meta.get('label_distribution', '-')}")


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
