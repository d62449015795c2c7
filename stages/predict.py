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

from pathlib import Path

from stages._cli import parser, run
from tunebench.io import read_json, read_jsonl, sha256_file
from tunebench.models.families import family
from tunebench.models.predict import (
    ZERO_SHOT_SYSTEM,
    PredictJob,
    check_modes,
    check_settings,
    zero_shot_model,
)
from tunebench.running.params import (
    load_params,
    predict_settings,
    run_entry,
    run_model,
    section,
)


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
    test_path = args.instructions / "test.jsonl"
    common = {"task": task, "cfg": cfg, "params": params, "out_dir": args.out_dir,
              "rows": read_jsonl(test_path, ("id", "prompt", "completion")),
              "train_labels": _train_labels(args.instructions),
              "test_sha256": sha256_file(test_path)}
    spec = run_model(params, run_name)
    family(spec).predict(PredictJob(spec, _model_dir(spec, params), args.system, args.system,
                                    modes, args.adapter, **common))
    zero_shot = run_entry(params, run_name).get("zero_shot")
    if args.system == "base" and zero_shot:
        llm = zero_shot_model(params, run_name, zero_shot)
        llm_modes = check_modes(zero_shot.get("modes", modes), f"runs.{run_name}.zero_shot.modes",
                                summarization)
        family(llm).predict(PredictJob(llm, _model_dir(llm, params), ZERO_SHOT_SYSTEM, "base",
                                       llm_modes, None, **common))


def _train_labels(instructions: Path) -> list[str]:
    """The training split's answers (the loglik variant choice compares against them)."""
    path = instructions / "train.jsonl"
    return [r["completion"] for r in read_jsonl(path, ("completion",))] if path.is_file() else []


def _model_dir(spec, params) -> str:
    from tunebench.models.loading import resolve_model_dir

    return resolve_model_dir(spec, Path(section(params, "paths")["model_cache"]))


if __name__ == "__main__":
    run(main)
