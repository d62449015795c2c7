"""train-qlora: fine-tune the run's model with QLoRA on one run's training mixture.

Reads <instructions>/<dataset>/train.jsonl for every dataset of params `runs.<run>.mixture`
(each repeated by its replication factor, FinGPT-style), loads the run's model
(`runs.<run>.model`, else params `model`; 4-bit NF4 when the model sets load_in_4bit, plain
LoRA where its family cannot, said in the metrics) and trains a LoRA adapter by family:
causal LM (loss on the completion only), seq2seq (prompt -> completion) or encoder
classifier (text -> label, new head trained in full). Settings: params `train_qlora`,
overridden by `runs.<run>.train_qlora`. Where a mixture dataset has validation.jsonl, a
causal LM's completion loss on it is measured every epoch and the adapter of the best epoch
is kept (train_qlora.select_best). Writes the adapter (safetensors) to --out. Training metrics
(wall time, tokens/s, peak memory, trainable parameters) and the loss curve are logged with
DVCLive to --live.

Checkpoints go to <paths.model_cache>/../checkpoints/<run>-<fingerprint>, outside the DVC
output (DVC deletes outputs before a rerun): a killed run resumes from there when run again
with the same data, settings and model, and the folder is deleted once the adapter is saved.
SIGTERM saves a checkpoint and exits with status 143.
"""

from pathlib import Path

from stages._cli import parser, run
from tunebench.config import ConfigError
from tunebench.io import DataError, check_unique_ids, read_json, read_jsonl, write_json
from tunebench.params import load_params, run_entry, run_model, section
from tunebench.provenance import hardware, model_provenance, package_versions


def mixture_examples(instructions: Path, mixture: dict[str, int], where: str,
                     split: str = "train") -> tuple[list[dict], dict]:
    """Rows ({id, prompt, completion, text}) of every mixture dataset's `split`, each
    repeated `factor` times; a dataset without that split file is skipped for
    split != "train" (validation is optional, training data is not)."""
    present = sorted(p.name for p in instructions.iterdir() if p.is_dir())
    if sorted(mixture) != present:
        raise ConfigError(f"{where}.mixture names {sorted(mixture)} but {instructions} holds "
                          f"{present}: every dataset of the run needs a replication factor")
    examples, counts = [], {}
    for name, factor in sorted(mixture.items()):
        if not isinstance(factor, int) or factor < 1:
            raise ConfigError(
                f"{where}.mixture.{name}: expected a positive integer, got {factor!r}")
        path = instructions / name / f"{split}.jsonl"
        if split != "train" and not path.is_file():
            continue
        rows = read_jsonl(path, ("id", "prompt", "completion"))
        check_unique_ids([r["id"] for r in rows], str(path))
        for lineno, r in enumerate(rows, start=1):
            if not isinstance(r["completion"], str) or not r["completion"].strip():
                raise DataError(f"{path}:{lineno}: field 'completion' is empty or not a string")
        # Validation is for measuring, so it is never replicated.
        examples += rows * (factor if split == "train" else 1)
        counts[name] = {"examples": len(rows), "factor": factor if split == "train" else 1}
    if len(examples) != sum(c["examples"] * c["factor"] for c in counts.values()):
        raise DataError(f"{instructions}: mixture examples do not add up to {counts}")
    return examples, counts


def label_list(instructions: Path, mixture: dict[str, int]) -> list[str]:
    """The labels every mixture dataset shares (an encoder head has one label set)."""
    found = {name: read_json(instructions / name / "task.json")["labels"] for name in mixture}
    distinct = {tuple(labels) for labels in found.values()}
    if len(distinct) != 1 or not next(iter(distinct)):
        raise ConfigError(f"{instructions}: an encoder classifier needs one shared label set, "
                          f"got {found}")
    return list(next(iter(distinct)))


SUMMARY_KEYS = ("train_loss", "train_loss_final", "wall_time_s", "tokens_per_s", "train_tokens",
                "peak_memory_mb", "trainable_params", "total_params", "n_examples",
                "n_truncated", "steps", "resumed_from_step", "n_eval_examples",
                "eval_loss_best", "best_step", "best_epoch")


def train_family(spec, model_dir: str, rows: list[dict], eval_rows: list[dict], cfg,
                 out: Path, log, model_cache: Path, run_name: str, instructions: Path,
                 mixture: dict[str, int]) -> dict:
    """Dispatch on the model family: causal LM (QLoRA on prompt -> completion, validation
    loss per epoch, resumable), seq2seq (prompt -> completion) or encoder classifier
    (text -> label)."""
    if spec.family == "causal_lm":
        from tunebench.train import train_lora

        return train_lora(spec, model_dir, [(r["prompt"], r["completion"]) for r in rows], cfg,
                          out, log=log, checkpoint_root=model_cache.parent / "checkpoints",
                          run_name=run_name,
                          eval_examples=[(r["prompt"], r["completion"]) for r in eval_rows])
    if eval_rows:
        print(f"train-qlora {run_name}: {len(eval_rows)} validation rows not used "
              f"(validation loss is implemented for causal LMs only)")
    if spec.family == "seq2seq":
        from tunebench.seq2seq import train_seq2seq_lora

        return train_seq2seq_lora(spec, model_dir, [(r["prompt"], r["completion"]) for r in rows],
                                  cfg, out, log=log)
    from tunebench.encoder import input_texts, train_encoder_cls_lora

    return train_encoder_cls_lora(spec, model_dir, input_texts(rows, instructions),
                                  [r["completion"] for r in rows],
                                  label_list(instructions, mixture), cfg, out, log=log)


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--run", required=True, help="a key of params `runs`")
    p.add_argument("--instructions", type=Path, required=True,
                   help="folder with one sub-folder per dataset of the run")
    p.add_argument("--out", type=Path, required=True, help="adapter output folder")
    p.add_argument("--live", type=Path, required=True, help="DVCLive folder for metrics")
    args = p.parse_args()

    from dvclive import Live

    from tunebench.models import resolve_model_dir
    from tunebench.train import TrainConfig

    params = load_params(args.params)
    run_params = run_entry(params, args.run)
    where = f"runs.{args.run}"
    rows, counts = mixture_examples(args.instructions, run_params["mixture"], where)
    eval_rows, eval_counts = mixture_examples(args.instructions, run_params["mixture"], where,
                                              split="validation")
    spec = run_model(params, args.run)
    if run_params.get("adapter") is not None:  # a published adapter: installed, not trained
        from tunebench.hub import install_external_run

        install_external_run(run_params["adapter"], f"{where}.adapter", args.out,
                             args.live, {"run": args.run, "mixture": counts,
                                         "model": model_provenance(spec)})
        return
    # A run may override any training setting (e.g. the published sarcasm recipe).
    settings = {**section(params, "train_qlora"), **(run_params.get("train_qlora") or {})}
    try:
        cfg = TrainConfig.from_params(settings, f"train_qlora (+ {where}.train_qlora)")
    except ValueError as exc:
        raise ConfigError(f"params.yaml: {exc}") from None
    # runs.<run>.launch: re-runs this stage under `accelerate launch` (multi-GPU); the other
    # processes train in step but write their copies of the outputs to a scratch folder.
    from tunebench.launch import distributed_setup, scratch_outputs

    if not distributed_setup(run_params.get("launch"), f"{where}.launch",
                             "stages.train_qlora", spec.load_in_4bit):
        args.out, args.live = scratch_outputs()
    model_cache = Path(section(params, "paths")["model_cache"])
    model_dir = resolve_model_dir(spec, model_cache)
    with Live(dir=str(args.live), save_dvc_exp=False, dvcyaml=None, report=None) as live:
        def log(record):
            live.step = record["step"]
            if "eval_loss" in record:
                live.log_metric("eval/loss", record["eval_loss"])
            else:
                live.log_metric("train/loss", record["loss"])

        result = train_family(spec, model_dir, rows, eval_rows, cfg, args.out, log,
                              model_cache, args.run, args.instructions, run_params["mixture"])
        for key in SUMMARY_KEYS:
            if result.get(key) is not None:
                live.summary[key] = result[key]
        live.summary["family"] = spec.family
        live.summary["quantized"] = result.get("quantized", spec.load_in_4bit)
    write_json(args.live / "provenance.json", {
        "run": args.run, "mixture": counts, "validation": eval_counts,
        "model": model_provenance(spec), "train_qlora": vars(cfg),
        "quantization": result.get("quantization"), "selected": result.get("selected"),
        "eval_loss_curve": result.get("eval_loss_curve"), "packages": package_versions(),
        "mixed_precision": dict(zip(("bf16", "fp16"), cfg.mixed_precision(), strict=True)),
        "hardware": hardware()})
    print(f"train-qlora {args.run}: {result['steps']} steps, loss {result['train_loss']:.4f}, "
          f"{result['tokens_per_s']:.0f} tokens/s, adapter -> {args.out}")


if __name__ == "__main__":
    run(main)
