"""train-qlora: fine-tune the benchmark model with QLoRA on one run's training mixture.

Reads <instructions>/<dataset>/train.jsonl for every dataset of params `runs.<run>.mixture`
(each repeated by its replication factor, FinGPT-style), loads `models.<model>` (4-bit NF4
when the model sets load_in_4bit), trains a LoRA adapter with the loss on the completion
only (params `train_qlora`, overridden by `runs.<run>.train_qlora`), and writes the
adapter (safetensors) to --out. Training metrics
(wall time, tokens/s, peak memory, trainable parameters) and the loss curve are logged with
DVCLive to --live.

Checkpoints go to <paths.model_cache>/../checkpoints/<run>-<fingerprint>, outside the DVC
output (DVC deletes outputs before a rerun): a killed run resumes from there when run again
with the same data, settings and model, and the folder is deleted once the adapter is saved.
SIGTERM saves a checkpoint and exits with status 143.
"""

from pathlib import Path

from stages._cli import parser, run
from tunebench.config import ConfigError, check_keys
from tunebench.io import DataError, check_unique_ids, read_jsonl, write_json
from tunebench.params import benchmark_model, load_params, section
from tunebench.provenance import model_provenance, package_versions


def mixture_examples(instructions: Path, mixture: dict[str, int], where: str):
    """(prompt, completion) pairs of every mixture dataset, each repeated `factor` times."""
    present = sorted(p.name for p in instructions.iterdir() if p.is_dir())
    if sorted(mixture) != present:
        raise ConfigError(f"{where}.mixture names {sorted(mixture)} but {instructions} holds "
                          f"{present}: every dataset of the run needs a replication factor")
    examples, counts = [], {}
    for name, factor in sorted(mixture.items()):
        if not isinstance(factor, int) or factor < 1:
            raise ConfigError(
                f"{where}.mixture.{name}: expected a positive integer, got {factor!r}")
        path = instructions / name / "train.jsonl"
        rows = read_jsonl(path, ("id", "prompt", "completion"))
        check_unique_ids([r["id"] for r in rows], str(path))
        for lineno, r in enumerate(rows, start=1):
            if not isinstance(r["completion"], str) or not r["completion"].strip():
                raise DataError(f"{path}:{lineno}: field 'completion' is empty or not a string")
        examples += [(r["prompt"], r["completion"]) for r in rows] * factor
        counts[name] = {"examples": len(rows), "factor": factor}
    if len(examples) != sum(c["examples"] * c["factor"] for c in counts.values()):
        raise DataError(f"{instructions}: mixture examples do not add up to {counts}")
    return examples, counts


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
    from tunebench.train import TrainConfig, train_lora

    params = load_params(args.params)
    runs = section(params, "runs")
    if args.run not in runs:
        raise ConfigError(f"params.yaml: runs has no '{args.run}'")
    run_params = runs[args.run]
    check_keys(run_params, {"mixture", "train_qlora", "adapter", "launch"},
               f"params.yaml: runs.{args.run}", ("mixture",))
    examples, counts = mixture_examples(args.instructions, run_params["mixture"],
                                        f"runs.{args.run}")
    spec = benchmark_model(params)
    if run_params.get("adapter") is not None:  # a published adapter: installed, not trained
        from tunebench.hub import install_external_run

        install_external_run(run_params["adapter"], f"runs.{args.run}.adapter", args.out,
                             args.live, {"run": args.run, "mixture": counts,
                                         "model": model_provenance(spec)})
        return
    # A run may override any training setting (e.g. the published sarcasm recipe).
    settings = {**section(params, "train_qlora"), **(run_params.get("train_qlora") or {})}
    try:
        cfg = TrainConfig.from_params(settings, f"train_qlora (+ runs.{args.run}.train_qlora)")
    except ValueError as exc:
        raise ConfigError(f"params.yaml: {exc}") from None
    # runs.<run>.launch: re-runs this stage under `accelerate launch` (multi-GPU); the other
    # processes train in step but write their copies of the outputs to a scratch folder.
    from tunebench.launch import distributed_setup, scratch_outputs

    if not distributed_setup(run_params.get("launch"), f"runs.{args.run}.launch",
                             "stages.train_qlora", spec.load_in_4bit):
        args.out, args.live = scratch_outputs()
    model_cache = Path(section(params, "paths")["model_cache"])
    model_dir = resolve_model_dir(spec, model_cache)
    with Live(dir=str(args.live), save_dvc_exp=False, dvcyaml=None, report=None) as live:
        def log(record):
            live.step = record["step"]
            live.log_metric("train/loss", record["loss"])

        result = train_lora(spec, model_dir, examples, cfg, args.out, log=log,
                            checkpoint_root=model_cache.parent / "checkpoints", run_name=args.run)
        for key in ("train_loss", "train_loss_final", "wall_time_s", "tokens_per_s",
                    "train_tokens", "peak_memory_mb", "trainable_params", "total_params",
                    "n_examples", "n_truncated", "steps", "resumed_from_step"):
            live.summary[key] = result[key]
    write_json(args.live / "provenance.json", {
        "run": args.run, "mixture": counts, "model": model_provenance(spec),
        "train_qlora": vars(cfg), "packages": package_versions()})
    print(f"train-qlora {args.run}: {result['steps']} steps, loss {result['train_loss']:.4f}, "
          f"{result['tokens_per_s']:.0f} tokens/s, adapter -> {args.out}")


if __name__ == "__main__":
    run(main)
