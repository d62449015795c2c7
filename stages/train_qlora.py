"""train-qlora: fine-tune the run's model with QLoRA on one run's training mixture.

Reads <instructions>/<dataset>/train.jsonl for every dataset of params `runs.<run>.mixture`
(each repeated by its replication factor, FinGPT-style), loads the run's model
(`runs.<run>.model`, else params `model`; 4-bit NF4 when the model sets load_in_4bit, plain
LoRA where its family cannot, said in the metrics) and trains a LoRA adapter by family:
causal LM (loss on the completion only), seq2seq (prompt -> completion) or encoder
classifier (text -> label, new head trained in full). Settings: params `train_qlora`,
overridden by `runs.<run>.train_qlora`. Where a mixture dataset has validation.jsonl, the
loss on it (a causal LM's: on the completion only) is measured every epoch and the adapter of
the best epoch is kept (train_qlora.select_best); every family trains through the same
engine (tunebench/models/engine.py). Writes the adapter (safetensors) to --out. Training metrics
(wall time, tokens/s, peak memory, trainable parameters) and the loss curve are logged with
DVCLive to --live.

Checkpoints go to <paths.model_cache>/../checkpoints/<run>-<fingerprint>, outside the DVC
output (DVC deletes outputs before a rerun): a killed run resumes from there when run again
with the same data, settings and model (any family), and the folder is deleted once the
adapter is saved. SIGTERM saves a checkpoint and exits with status 143.
"""

from pathlib import Path

from stages._cli import parser, run
from tunebench.io import write_json
from tunebench.models.train_qlora import SUMMARY_KEYS, mixture_examples, train_settings
from tunebench.running.params import load_params, run_entry, run_model, section
from tunebench.running.provenance import hardware, model_provenance, package_versions


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--run", required=True, help="a key of params `runs`")
    p.add_argument("--instructions", type=Path, required=True,
                   help="folder with one sub-folder per dataset of the run")
    p.add_argument("--out", type=Path, required=True, help="adapter output folder")
    p.add_argument("--live", type=Path, required=True, help="DVCLive folder for metrics")
    args = p.parse_args()

    from dvclive import Live

    from tunebench.models.engine import TrainJob
    from tunebench.models.families import family
    from tunebench.models.loading import resolve_model_dir

    params = load_params(args.params)
    run_params = run_entry(params, args.run)
    where = f"runs.{args.run}"
    mixture = run_params["mixture"]
    rows, counts = mixture_examples(args.instructions, mixture, where)
    eval_rows, eval_counts = mixture_examples(args.instructions, mixture, where, "validation")
    spec = run_model(params, args.run)
    if run_params.get("adapter") is not None:  # a published adapter: installed, not trained
        from tunebench.running.hub import install_external_run

        install_external_run(run_params["adapter"], f"{where}.adapter", args.out,
                             args.live, {"run": args.run, "mixture": counts,
                                         "model": model_provenance(spec)})
        return
    cfg = train_settings(params, args.run)
    # runs.<run>.launch: re-runs this stage under `accelerate launch` (multi-GPU); the other
    # processes train in step but write their copies of the outputs to a scratch folder.
    from tunebench.running.launch import distributed_setup, scratch_outputs

    if not distributed_setup(run_params.get("launch"), f"{where}.launch",
                             "stages.train_qlora", spec.load_in_4bit):
        args.out, args.live = scratch_outputs()
    model_cache = Path(section(params, "paths")["model_cache"])
    with Live(dir=str(args.live), save_dvc_exp=False, dvcyaml=None, report=None) as live:
        def log(record):
            live.step = record["step"]
            if "eval_loss" in record:
                live.log_metric("eval/loss", record["eval_loss"])
            else:
                live.log_metric("train/loss", record["loss"])

        job = TrainJob(spec, resolve_model_dir(spec, model_cache), cfg, args.out, log,
                       model_cache.parent / "checkpoints", args.run)
        result = family(spec).train(job, rows, eval_rows, args.instructions, mixture)
        for key in SUMMARY_KEYS:
            if result.get(key) is not None:
                live.summary[key] = result[key]
        live.summary["family"] = spec.family
        live.summary["quantized"] = result.get("quantized", spec.load_in_4bit)
    write_json(args.live / "provenance.json", {
        "run": args.run, "mixture": counts, "validation": eval_counts, **provenance(spec, cfg,
                                                                                    result)})
    print(f"train-qlora {args.run}: {result['steps']} steps, loss {result['train_loss']:.4f}, "
          f"{result['tokens_per_s']:.0f} tokens/s, adapter -> {args.out}")


def provenance(spec, cfg, result: dict) -> dict:
    """What trained the adapter: model, settings, precision, packages, hardware."""
    return {"model": model_provenance(spec), "train_qlora": vars(cfg),
            "quantization": result.get("quantization"), "selected": result.get("selected"),
            "eval_loss_curve": result.get("eval_loss_curve"), "packages": package_versions(),
            "mixed_precision": dict(zip(("bf16", "fp16"), cfg.mixed_precision(), strict=True)),
            "hardware": hardware()}


if __name__ == "__main__":
    run(main)
