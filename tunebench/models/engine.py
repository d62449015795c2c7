"""The training engine every model family shares: a transformers Trainer run over
pre-tokenized data with checkpoint resume, validation with best-epoch selection, SIGTERM
safety, loss records for DVCLive, and the adapter saved as safetensors.

Validation: given validation rows, their loss is evaluated at the end of every epoch (and at
the last step), without touching the training run (separate data, RNG state restored
afterwards). With `select_best` the adapter saved is the one from the evaluation with the
lowest loss: a CPU copy of the trainable (LoRA) weights is taken whenever the loss improves.

Interrupted runs resume: with a checkpoint folder (train-qlora passes one outside its DVC
output, which DVC deletes before a rerun), the Trainer saves its state every
`checkpoint_steps` steps into <folder>/<run>-<fingerprint>, where the fingerprint hashes the
tokenized training and validation data, the training config and the model; a later run with
the same fingerprint resumes from the newest complete checkpoint, and the folder is deleted
once the adapter is saved. Each new best validation snapshot is also written to that folder
(best-<step>.safetensors) before any later checkpoint, so a resumed run still selects an epoch
from before the interruption. SIGTERM stops training after the current step, saves a
checkpoint and raises Interrupted.

The family modules (causal.py, seq2seq.py, encoder.py) tokenize, load and wrap their model,
then call `train_adapter`. Heavy libraries are imported inside the functions that need them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import resource
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tunebench.io import Interrupted
from tunebench.models.loading import ModelSpec
from tunebench.models.train_qlora import TrainConfig

LossFn = Callable[..., tuple[Any, Any]]


@dataclass
class TrainJob:
    """What a family's training needs besides its data: the model, settings, where the
    adapter goes, where checkpoints go (None: no resume), and the loss-record sink."""

    spec: ModelSpec
    model_dir: str
    cfg: TrainConfig
    out_dir: Path
    log: Callable[[dict], None] | None = None
    checkpoint_root: Path | None = None
    run_name: str = "run"


def lora_config(spec: ModelSpec, cfg: TrainConfig, task_type: str,
                modules_to_save: list[str] | None = None):
    """The LoRA adapter of every family: rank, alpha and dropout from the settings, on the
    spec's target modules (plus fully trained `modules_to_save`, e.g. a new head)."""
    from peft import LoraConfig

    return LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                      target_modules=list(spec.lora_targets), bias="none", task_type=task_type,
                      modules_to_save=modules_to_save)


def train_adapter(job: TrainJob, model, data: list[dict], eval_data: list[dict], collator,
                  loss_fn: LossFn | None = None) -> dict:
    """Train the LoRA-wrapped `model` on tokenized `data` (rows with input_ids, labels and
    truncated), validating on `eval_data`; save the selected adapter to job.out_dir and
    return the training metrics. The collator counts the tokens it hands the model."""
    import torch

    trainable, total = model.get_nb_trainable_parameters()
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    folder = None
    if job.checkpoint_root is not None:
        run_id = fingerprint(job.spec, job.model_dir, data, job.cfg, eval_data)
        folder = Path(job.checkpoint_root) / f"{job.run_name}-{run_id}"
    run = run_trainer(model, data, collator, job.cfg, job.log, folder, eval_data, loss_fn)
    save_adapter(model, job.spec, Path(job.out_dir))  # the selected weights are in model
    if folder is not None:
        shutil.rmtree(folder, ignore_errors=True)  # the adapter is out: nothing left to resume
    train_wall = run["wall_time_s"] - run["eval_time_s"]
    # The whole run, also after a resume (the counters up to the checkpoint it resumed from
    # plus this process's); validation tokens and time are left out of the throughput.
    return {
        **run, "tokens_per_s": run["train_tokens"] / train_wall if train_wall > 0 else 0.0,
        "peak_memory_mb": peak_memory_mb(),
        "trainable_params": int(trainable), "total_params": int(total), "n_examples": len(data),
        "n_truncated": sum(d["truncated"] for d in data), "n_eval_examples": len(eval_data),
        "n_eval_truncated": sum(d["truncated"] for d in eval_data),
    }


def prepare_for_lora(model, quantized: bool, cfg: TrainConfig, lora_config):
    """Freeze the base (QLoRA recipe when 4-bit) and wrap it with trainable adapters; shared
    by every model family."""
    from peft import get_peft_model, prepare_model_for_kbit_training

    if quantized:
        # Freezes the base, upcasts norms to fp32 and enables input grads (QLoRA recipe).
        model = prepare_model_for_kbit_training(
            model, use_gradient_checkpointing=cfg.gradient_checkpointing,
            gradient_checkpointing_kwargs={"use_reentrant": False})
    elif cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    model = get_peft_model(model, lora_config)
    model.train()
    return model


def training_args(cfg: TrainConfig, scratch: str, checkpoints: bool = False):
    import torch
    from transformers import TrainingArguments

    on_gpu = torch.cuda.is_available()
    bf16, fp16 = cfg.mixed_precision()
    save = {"save_strategy": "no"}
    if checkpoints and cfg.checkpoint_steps > 0:
        # Two kept: should the newest be cut short by a kill, the one before still resumes.
        save = {"save_strategy": "steps", "save_steps": cfg.checkpoint_steps,
                "save_total_limit": 2, "save_only_model": False}
    # Evaluation (when the Trainer has an eval_dataset) is requested by _Validation, not by
    # eval_strategy, which keeps its default "no".
    return TrainingArguments(
        output_dir=scratch,  # checkpoints/optimizer state never land in the adapter folder
        num_train_epochs=cfg.epochs, max_steps=cfg.max_steps,
        per_device_train_batch_size=cfg.batch_size, gradient_accumulation_steps=cfg.grad_accum,
        per_device_eval_batch_size=cfg.batch_size,
        learning_rate=cfg.learning_rate, weight_decay=cfg.weight_decay,
        lr_scheduler_type=cfg.lr_scheduler, warmup_steps=cfg.warmup_ratio, optim=cfg.optim,
        train_sampling_strategy="group_by_length" if cfg.group_by_length else "random",
        bf16=bf16, fp16=fp16, logging_steps=cfg.logging_steps, logging_first_step=True,
        seed=cfg.seed, data_seed=cfg.seed, report_to="none", **save,
        push_to_hub=False, remove_unused_columns=False, disable_tqdm=False,
        use_cpu=not on_gpu, dataloader_pin_memory=on_gpu, dataloader_num_workers=0,
    )


def _point(logs: dict, step: int) -> dict | None:
    """A Trainer log entry as a training record {"step", "loss", "learning_rate"} or an
    evaluation record {"step", "epoch", "eval_loss"}; None for others (the end-of-run summary)."""
    if "loss" in logs:
        return {"step": step, "loss": float(logs["loss"]),
                "learning_rate": float(logs.get("learning_rate", 0.0))}
    if "eval_loss" in logs:
        return {"step": step, "epoch": float(logs["epoch"]), "eval_loss": float(logs["eval_loss"])}
    return None


def _points(log_history: list[dict]) -> list[dict]:
    """The training and evaluation records of a Trainer log history, in order."""
    return [p for r in log_history if (p := _point(r, int(r["step"]))) is not None]


COUNTERS = "tunebench_counters.json"  # beside each checkpoint: the run's totals up to it


class _Consumed:
    """Wraps a collator (which counts the tokens it hands out in `n_tokens`) to know the tokens
    of each batch, so the tokens of the batches the model has *trained on* can be told from
    those of a batch the data loader already fetched for the next step."""

    def __init__(self, collator):
        self.inner, self.counts = collator, []

    @property
    def n_tokens(self) -> int:
        return self.inner.n_tokens

    @n_tokens.setter
    def n_tokens(self, value: int) -> None:
        self.inner.n_tokens = value

    def __call__(self, features: list[dict]) -> dict:
        before = self.inner.n_tokens
        batch = self.inner(features)
        self.counts.append(self.inner.n_tokens - before)
        return batch

    def trained(self, micro_steps: int) -> int:
        return sum(self.counts[:micro_steps])


def _counters_callback(collator: _Consumed, prior: dict[str, float], clock: dict[str, float]):
    """Writes, into every checkpoint the Trainer saves, the run's totals up to that step
    (tokens trained on, wall and evaluation seconds), so a run resumed from it reports the
    whole run."""
    from transformers import TrainerCallback

    class _Counters(TrainerCallback):
        trainer = None

        def on_save(self, args, state, control, **kwargs):
            folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            if folder.is_dir() and self.trainer is not None:
                (folder / COUNTERS).write_text(json.dumps(_totals(
                    prior, collator.trained(self.trainer.micro_steps),
                    time.perf_counter() - clock["start"], self.trainer.eval_time_s)))

    return _Counters()


def _totals(prior: dict[str, float], tokens: int, wall: float, eval_s: float) -> dict[str, float]:
    return {"train_tokens": prior["train_tokens"] + tokens,
            "wall_time_s": prior["wall_time_s"] + wall,
            "eval_time_s": prior["eval_time_s"] + eval_s}


def log_callback(curve: list[dict], log: Callable[[dict], None] | None):
    """Forwards training and evaluation records to `log`; training records also go to `curve`."""
    from transformers import TrainerCallback

    class _Forward(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            point = _point(logs or {}, state.global_step)
            if point is not None and "loss" in point:
                curve.append(point)
            if point is not None and log is not None:
                log(point)

    return _Forward()


def run_trainer(model, data: list[dict], collator, cfg: TrainConfig,
                log: Callable[[dict], None] | None, checkpoint_dir: Path | None,
                eval_data: list[dict] | None = None, loss_fn: LossFn | None = None) -> dict:
    """Run a transformers Trainer, resuming from `checkpoint_dir` when it holds a complete
    checkpoint; SIGTERM saves a checkpoint and raises Interrupted. With `eval_data`, evaluates
    it every epoch (see _Validation) and, with cfg.select_best, leaves the best evaluation's
    weights in `model`. Returns the loss metrics, identical whether or not the run was resumed
    (they come from the trainer's log history, which checkpoints carry)."""
    curve: list[dict] = []
    validation = _Validation(model, cfg, checkpoint_dir) if eval_data else None
    prior = {"train_tokens": 0, "wall_time_s": 0.0, "eval_time_s": 0.0}
    clock = {"start": time.perf_counter()}
    with _trainer_dir(checkpoint_dir) as scratch:
        resume = latest_checkpoint(Path(scratch)) if checkpoint_dir is not None else None
        if resume is not None and (resume / COUNTERS).is_file():
            prior.update(json.loads((resume / COUNTERS).read_text()))
        if resume is not None:
            history = _points(json.loads((resume / "trainer_state.json").read_text())
                              ["log_history"])
            if log is not None:
                for point in history:
                    log(point)  # replay the records before the interruption (e.g. into DVCLive)
            if validation is not None:
                validation.resume([p for p in history if "eval_loss" in p])
        stop = _StopOnSignal()
        collator = _Consumed(collator)
        counters = _counters_callback(collator, prior, clock)
        callbacks = [log_callback(curve, log), stop.callback, counters]
        if validation is not None:
            callbacks.append(validation.callback)
        trainer = trainer_class(loss_fn)(
            model=model, train_dataset=data, eval_dataset=eval_data or None,
            data_collator=collator, callbacks=callbacks,
            args=training_args(cfg, scratch, checkpoints=checkpoint_dir is not None))
        counters.trainer = trainer
        clock["start"] = time.perf_counter()
        with stop.installed():
            result = trainer.train(resume_from_checkpoint=str(resume) if resume else None)
        totals = _totals(prior, collator.trained(trainer.micro_steps),
                         time.perf_counter() - clock["start"], trainer.eval_time_s)
        if stop.signalled:
            where = f"; checkpoint in {checkpoint_dir}" if checkpoint_dir is not None else ""
            raise Interrupted(f"training stopped by signal {stop.signalled} at step "
                              f"{trainer.state.global_step}{where}; run again to resume",
                              signum=stop.signalled)
    points = _points(trainer.state.log_history)
    curve = [p for p in points if "loss" in p]
    evals = [p for p in points if "eval_loss" in p]
    best = _best(evals)
    if validation is not None and cfg.select_best:
        validation.restore_best()
    steps = trainer.state.global_step
    # With every step logged (logging_steps 1, the default) the mean over the log history is
    # the exact mean loss, also across a resume; transformers' own value covers only the
    # steps run since the resume.
    logged = bool(curve) and curve[-1]["step"] == steps
    return {
        "train_loss": _mean_loss(curve) if logged else float(result.training_loss),
        "train_loss_final": curve[-1]["loss"] if curve else float("nan"),
        "loss_curve": curve, "wall_time_s": totals["wall_time_s"], "steps": steps,
        "train_tokens": totals["train_tokens"],
        "resumed_from_step": int(resume.name.split("-")[-1]) if resume else 0,
        "eval_loss_curve": evals, "eval_loss_best": best["eval_loss"] if best else None,
        "best_step": best["step"] if best else None,
        "best_epoch": best["epoch"] if best else None,
        "selected": "best" if validation is not None and cfg.select_best else "last",
        "eval_time_s": totals["eval_time_s"],
    }


def trainer_class(loss_fn: LossFn | None = None):
    """transformers' Trainer whose evaluation leaves the training run as it was: the RNG
    state (data order, dropout) is restored afterwards and validation tokens are not counted
    by the collator. The time evaluation takes is summed in `eval_time_s`. `loss_fn(model,
    inputs, num_items_in_batch) -> (loss, logits)` replaces the model's own loss on batches
    with labels (the causal LM's head-at-labels loss); None keeps the model's."""
    import torch
    from transformers import Trainer

    class _Trainer(Trainer):
        eval_time_s = 0.0
        micro_steps = 0  # training batches taken by this process (counted tokens: _Consumed)

        def training_step(self, *args, **kwargs):
            self.micro_steps += 1
            return super().training_step(*args, **kwargs)

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            if loss_fn is None or "labels" not in inputs:
                return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            loss, logits = loss_fn(model, inputs, num_items_in_batch)
            return (loss, {"loss": loss, "logits": logits}) if return_outputs else loss

        def evaluate(self, *args, **kwargs):
            start, tokens = time.perf_counter(), getattr(self.data_collator, "n_tokens", None)
            batches = len(getattr(self.data_collator, "counts", ()))
            devices = [torch.cuda.current_device()] if torch.cuda.is_available() else []
            with torch.random.fork_rng(devices):  # iterating a DataLoader draws a seed
                metrics = super().evaluate(*args, **kwargs)
            if tokens is not None:
                self.data_collator.n_tokens = tokens
            if hasattr(self.data_collator, "counts"):  # validation batches are not training
                del self.data_collator.counts[batches:]
            self.eval_time_s += time.perf_counter() - start
            return metrics

    return _Trainer


def _better(point: dict, best: dict | None) -> bool:
    """Whether evaluation `point` beats `best`: a lower loss; ties and NaN keep the earlier."""
    if best is None:
        return True
    loss, best_loss = point["eval_loss"], best["eval_loss"]
    return not math.isnan(loss) and (math.isnan(best_loss) or loss < best_loss)


def _best(evals: list[dict]) -> dict | None:
    """The evaluation record with the lowest loss, the earliest on ties; None without any."""
    best = None
    for point in evals:
        if _better(point, best):
            best = point
    return best


class _Validation:
    """Evaluates at the end of every epoch and at the last step, and keeps the best snapshot.

    `callback` requests the evaluation in on_step_end, so the Trainer runs it before a
    checkpoint saved at the same step, whose log history then holds it. With cfg.select_best
    each improvement is copied (trainable parameters only, to the CPU) and, with a checkpoint
    folder, also written there as best-<step>.safetensors, before any later checkpoint can
    record it; `resume` reloads the best evaluation of the resumed checkpoint's log history.
    """

    def __init__(self, model, cfg: TrainConfig, folder: Path | None) -> None:
        from transformers import TrainerCallback

        self.model, self.select_best, self.folder = model, cfg.select_best, folder
        self.best: dict | None = None  # the best evaluation record so far
        self.weights: dict | None = None  # the trainable parameters at that evaluation (CPU)
        outer = self

        class _Callback(TrainerCallback):
            def on_step_end(self, args, state, control, **kwargs):
                if float(state.epoch).is_integer() or state.global_step >= state.max_steps:
                    control.should_evaluate = True
                return control

            def on_evaluate(self, args, state, control, metrics=None, **kwargs):
                point = {"step": state.global_step, "epoch": float(state.epoch),
                         "eval_loss": float(metrics["eval_loss"])}
                outer.evaluated(point, write=args.should_save)  # one writer when multi-GPU

        self.callback = _Callback()

    def evaluated(self, point: dict, write: bool = True) -> None:
        """Take a snapshot if `point` is the best evaluation so far (and, with `write`, save it
        to the checkpoint folder)."""
        if not self.select_best or not _better(point, self.best):
            return
        from safetensors.torch import save_file

        self.best = point
        self.weights = {name: param.detach().cpu().clone()
                        for name, param in self.model.named_parameters() if param.requires_grad}
        if self.folder is not None and write:
            path = self._file(point["step"])
            tmp = path.with_name(f".{path.name}.tmp")
            save_file(self.weights, tmp, metadata={k: str(v) for k, v in point.items()})
            os.replace(tmp, path)  # never a half-written snapshot under the final name

    def resume(self, evals: list[dict]) -> None:
        """Take over the best of the evaluations before the interruption, from its file."""
        from safetensors.torch import load_file

        self.best = _best(evals) if self.select_best else None
        if self.best is not None:
            path = self._file(self.best["step"])
            if not path.is_file():
                raise FileNotFoundError(f"{path}: the best snapshot of the resumed run is "
                                        f"missing; delete {self.folder} to train from scratch")
            self.weights = load_file(path)

    def restore_best(self) -> None:
        """Load the best snapshot's weights back into the model."""
        import torch

        if self.weights is None:
            return
        params = {n: p for n, p in self.model.named_parameters() if p.requires_grad}
        if params.keys() != self.weights.keys():
            raise RuntimeError("the best snapshot does not match the trainable parameters")
        with torch.no_grad():
            for name, param in params.items():
                param.copy_(self.weights[name])

    def _file(self, step: int) -> Path:
        return Path(self.folder) / f"best-{step}.safetensors"


def _mean_loss(curve: list[dict]) -> float:
    """Step-weighted mean: a logged loss is the mean over the steps since the previous log."""
    total, previous = 0.0, 0
    for point in curve:
        total += point["loss"] * (point["step"] - previous)
        previous = point["step"]
    return total / previous if previous else float("nan")


@contextmanager
def _trainer_dir(checkpoint_dir: Path | None) -> Iterator[str]:
    """The Trainer's output folder: the persistent checkpoint folder, or a throw-away one."""
    if checkpoint_dir is None:
        with tempfile.TemporaryDirectory(prefix="tunebench-train-") as scratch:
            yield scratch
        return
    checkpoint_dir = Path(checkpoint_dir)
    # Checkpoints of the same run under another fingerprint can never be resumed: drop them.
    prefix = checkpoint_dir.name.rsplit("-", 1)[0] + "-"
    if checkpoint_dir.parent.is_dir():
        for stale in checkpoint_dir.parent.glob(f"{prefix}*"):
            if stale != checkpoint_dir and stale.name.rsplit("-", 1)[0] + "-" == prefix:
                shutil.rmtree(stale, ignore_errors=True)
    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    yield str(checkpoint_dir)


def latest_checkpoint(folder: Path) -> Path | None:
    """The newest complete `checkpoint-<step>` in folder. Complete = its trainer_state.json,
    which the Trainer writes last, parses; a checkpoint cut short by a kill is removed."""
    found = []
    for path in Path(folder).glob("checkpoint-*"):
        suffix = path.name.split("-")[-1]
        if path.is_dir() and suffix.isdigit():
            found.append((int(suffix), path))
    for _, path in sorted(found, reverse=True):
        try:
            json.loads((path / "trainer_state.json").read_text(encoding="utf-8"))
            if (path / "adapter_model.safetensors").is_file():
                return path
        except (OSError, ValueError):
            pass
        shutil.rmtree(path, ignore_errors=True)
    return None


def fingerprint(spec: ModelSpec, model_dir: str, data: list[dict], cfg: TrainConfig,
                eval_data: list[dict] | None = None) -> str:
    """16 hex digits identifying a training run: tokenized training and validation data,
    config, model spec and the model folder's files (name, size, mtime). A checkpoint resumes
    only the same run."""
    digest = hashlib.sha256()
    setup = {"cfg": dataclasses.asdict(cfg), "spec": dataclasses.asdict(spec),
             "model_dir": str(model_dir)}
    digest.update(json.dumps(setup, sort_keys=True, default=str).encode())
    folder = Path(model_dir)
    if folder.is_dir():
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                stat = path.stat()
                digest.update(f"{path.relative_to(folder)}:{stat.st_size}:{stat.st_mtime_ns}"
                              .encode())
    for row in data:
        digest.update(json.dumps([row["input_ids"], row["labels"]]).encode())
    if eval_data:  # after a marker: moving a row from training to validation changes the hash
        digest.update(b"validation")
        for row in eval_data:
            digest.update(json.dumps([row["input_ids"], row["labels"]]).encode())
    return digest.hexdigest()[:16]


class _StopOnSignal:
    """Turns SIGTERM into: finish this step, save a checkpoint, stop. `installed()` sets the
    handler only while training runs; `callback` is the TrainerCallback that acts on it."""

    def __init__(self) -> None:
        from transformers import TrainerCallback

        self.signalled: int | None = None
        outer = self

        class _Callback(TrainerCallback):
            def on_step_end(self, args, state, control, **kwargs):
                if outer.signalled is not None:
                    control.should_save = args.save_strategy != "no"
                    control.should_training_stop = True
                return control

        self.callback = _Callback()

    @contextmanager
    def installed(self) -> Iterator[None]:
        """SIGTERM (and a first Ctrl-C) stop after this step; a second Ctrl-C stops at once."""
        def handler(signum, frame):
            if signum == signal.SIGINT and self.signalled is not None:
                raise KeyboardInterrupt
            self.signalled = signum

        if threading.current_thread() is not threading.main_thread():
            yield  # signal handlers can only be set from the main thread
            return
        previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            yield
        finally:
            for sig, old_handler in previous.items():
                signal.signal(sig, old_handler)


def save_adapter(model, spec: ModelSpec, out_dir: Path) -> None:
    """Save into a temporary folder beside out_dir and rename it into place, so a kill never
    leaves a half-written adapter where the next stage would take it as complete."""
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}-", dir=out_dir.parent))
    try:
        _write_adapter(model, spec, tmp)
        os.chmod(tmp, 0o755)  # mkdtemp makes it owner-only
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _sort_adapter_config(path: Path) -> None:
    """peft writes `target_modules` from a set, in an order that changes between processes; sorted,
    the same adapter gives the same adapter_config.json bytes (and the same DVC hash)."""
    config = json.loads(path.read_text(encoding="utf-8"))
    if isinstance(config.get("target_modules"), list):
        config["target_modules"] = sorted(config["target_modules"])
    path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def _write_adapter(model, spec: ModelSpec, out_dir: Path) -> None:
    # peft records the base path, which here is a machine-specific temp/cache folder; a stable
    # name keeps the adapter folder identical across machines (loading ignores this field).
    model.peft_config["default"].base_model_name_or_path = spec.id or spec.name
    # No full embedding copies: LoRA targets are explicit, and "auto" would try to read the
    # (renamed) base path to check for a resized vocabulary.
    model.save_pretrained(out_dir, safe_serialization=True, save_embedding_layers=False)
    _sort_adapter_config(out_dir / "adapter_config.json")
    readme = out_dir / "README.md"  # peft's auto-generated model card template: not an output
    if readme.is_file():
        readme.unlink()
    for stray in ("adapter_model.bin", "optimizer.pt", "scheduler.pt"):
        if (out_dir / stray).exists():
            raise RuntimeError(f"unexpected {stray} in {out_dir}")


def peak_memory_mb() -> float:
    """Peak accelerator memory on GPU; on CPU the process's peak RSS (whole process lifetime)."""
    import torch

    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB

