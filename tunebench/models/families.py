"""The model families, one table: each family is a module with the same interface, and the
stages (train-qlora, predict) and the perf tool dispatch through `family(spec)`.

A family module provides
    train(job: engine.TrainJob, rows, eval_rows, instructions, mixture) -> metrics dict
        fine-tune a LoRA adapter on format-instructions rows through engine.train_adapter
        (checkpoint resume, validation with best-epoch selection, SIGTERM, DVCLive records)
        and save it to job.out_dir;
    predict(job: predict.PredictJob) -> None
        answer the job's test rows in each of its modes and write the prediction files.
Adding a family means one module and one entry here (and its name in models.FAMILIES).
"""

from __future__ import annotations

from types import ModuleType

from tunebench.config import ConfigError
from tunebench.models import causal, encoder, seq2seq
from tunebench.models.loading import ModelSpec

FAMILIES: dict[str, ModuleType] = {"causal_lm": causal, "seq2seq": seq2seq,
                                   "encoder_cls": encoder}


def family(spec: ModelSpec) -> ModuleType:
    """The module that trains and predicts with models of spec.family."""
    try:
        return FAMILIES[spec.family]
    except KeyError:
        raise ConfigError(f"models.{spec.name}.family: unknown family {spec.family!r}; "
                          f"known: {list(FAMILIES)}") from None
