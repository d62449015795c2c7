"""The encoder-classification family (e.g. distilbert-base-uncased, all-MiniLM-L6-v2): LoRA
SEQ_CLS on the attention projections named by the spec's lora_targets (BERT: query/value,
DistilBERT: q_lin/v_lin), a new classification head trained in full, and argmax prediction.

The "base" system is the same encoder with a freshly initialised, seeded head: near chance by
construction, and identical between runs with the same seed. Heavy imports stay inside functions.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tunebench.config import ConfigError
from tunebench.io import DataError
from tunebench.models.engine import TrainJob, lora_config, prepare_for_lora, train_adapter
from tunebench.models.loading import ModelSpec, finish_loading, load_kwargs, quantization_plan
from tunebench.models.predict import PredictJob, write_predictions
from tunebench.models.train_qlora import label_list as mixture_labels
from tunebench.models.train_qlora import pad_rows, reject_packing, train_settings
from tunebench.running.provenance import model_provenance

# Names transformers' *ForSequenceClassification classes give the layers they add on top of the
# encoder (+ BERT's pooler, absent from some checkpoints): kept out of 4-bit, since they train.
HEAD_NAMES = ("pre_classifier", "classifier", "score", "pooler")

TASK_TYPE = "SEQ_CLS"  # peft task type of the adapter


def load_encoder_cls(spec: ModelSpec, model_dir: str, label_list: list[str], quantize: bool,
                     seed: int, adapter_dir: Path | None = None):
    """Encoder + a new head for label_list, seeded; returns (model, names of the new modules).

    Only an encoder checkpoint is accepted: a head already in the checkpoint would not be the
    untrained base the benchmark compares against. With adapter_dir the trained LoRA weights and
    head replace the fresh ones.
    """
    from transformers import AutoModelForSequenceClassification, set_seed

    if len(set(label_list)) != len(label_list) or len(label_list) < 2:
        raise ValueError(f"label_list must hold >= 2 distinct labels, got {label_list}")
    set_seed(seed)  # the new head's initial weights come from the global torch RNG
    model, info = AutoModelForSequenceClassification.from_pretrained(
        model_dir, num_labels=len(label_list), id2label=dict(enumerate(label_list)),
        label2id={label: i for i, label in enumerate(label_list)}, output_loading_info=True,
        **load_kwargs(spec, model_dir, quantize, skip_modules=HEAD_NAMES))
    head = sorted({key.rsplit(".", 1)[0] for key in info["missing_keys"]})
    if not head:
        raise ValueError(f"models.{spec.name}: {model_dir} already has a classification head; "
                         "the base system needs an untrained one (use an encoder checkpoint)")
    return finish_loading(model, quantize, adapter_dir), head


def encode_texts(tokenizer, texts: list[str], max_len: int) -> list[dict]:
    """Token ids cut to max_len (the tokenizer keeps [CLS]/[SEP]); `truncated` marks the cut."""
    full = tokenizer(texts)["input_ids"]
    cut = tokenizer(texts, truncation=True, max_length=max_len)["input_ids"]
    return [{"input_ids": c, "truncated": len(f) > len(c)} for f, c in zip(full, cut, strict=True)]


@dataclass
class ClassCollator:
    """Right-pads a batch to its longest row; passes integer labels through when present."""

    pad_token_id: int
    n_tokens: int = 0

    def __call__(self, features: list[dict]) -> dict:
        import torch

        rows = [f["input_ids"] for f in features]
        self.n_tokens += sum(len(row) for row in rows)
        batch = {"input_ids": torch.tensor(pad_rows(rows, self.pad_token_id)),
                 "attention_mask": torch.tensor(pad_rows([[1] * len(row) for row in rows], 0))}
        if "labels" in features[0]:
            batch["labels"] = torch.tensor([f["labels"] for f in features])
        return batch


def input_texts(rows: list[dict], where: Path) -> list[str]:
    """The bare input texts an encoder reads (format-instructions writes them as "text")."""
    missing = [r["id"] for r in rows if not isinstance(r.get("text"), str)]
    if missing:
        raise DataError(f"{where}: {len(missing)} row(s) lack a string field 'text' (an "
                        f"encoder reads the bare input), e.g. id {missing[0]!r}")
    return [r["text"] for r in rows]


def train_encoder_cls_lora(job: TrainJob, texts: list[str], labels: list[str],
                           label_list: list[str], eval_texts: list[str] | None = None,
                           eval_labels: list[str] | None = None) -> dict:
    """Train LoRA (SEQ_CLS) on the spec's attention modules plus the full new head with the
    shared engine (resume, validation, SIGTERM); save the adapter (head included) to
    job.out_dir; return training metrics with `quantized`."""
    from tunebench.models.loading import load_tokenizer

    spec, cfg = job.spec, job.cfg
    reject_packing(cfg, spec.family)
    if not texts or len(texts) != len(labels):
        raise ValueError(f"need as many labels as texts (> 0), got {len(texts)} and {len(labels)}")
    index = {label: i for i, label in enumerate(label_list)}
    unknown = sorted((set(labels) | set(eval_labels or [])) - set(index))
    if unknown:
        raise ValueError(f"labels {unknown} are not in label_list {label_list}")
    tokenizer = load_tokenizer(spec, job.model_dir, padding_side="right")

    def encoded(some_texts: list[str], some_labels: list[str]) -> list[dict]:
        data = encode_texts(tokenizer, some_texts, cfg.max_seq_len) if some_texts else []
        for row, label in zip(data, some_labels, strict=True):
            row["labels"] = index[label]
        return data

    data, eval_data = encoded(texts, labels), encoded(eval_texts or [], eval_labels or [])
    quantized, why = quantization_plan(spec)
    model, head = load_encoder_cls(spec, job.model_dir, label_list, quantized, seed=cfg.seed)
    # peft extends modules_to_save in place
    model = prepare_for_lora(model, quantized, cfg,
                             lora_config(spec, cfg, TASK_TYPE, modules_to_save=list(head)))
    metrics = train_adapter(job, model, data, eval_data, ClassCollator(tokenizer.pad_token_id))
    return {**metrics, "head_modules": head, "family": "encoder_cls", "quantized": quantized,
            "quantization": why}


def train(job: TrainJob, rows: list[dict], eval_rows: list[dict], instructions: Path,
          mixture: dict[str, int]) -> dict:
    """The family interface: text -> label rows -> adapter (LoRA + head) and metrics."""
    return train_encoder_cls_lora(job, input_texts(rows, instructions),
                                  [r["completion"] for r in rows],
                                  mixture_labels(instructions, mixture),
                                  input_texts(eval_rows, instructions),
                                  [r["completion"] for r in eval_rows])


def predict(job: PredictJob) -> None:
    """The family interface: argmax over the head (untrained for base: seeded like the head
    the fine-tuning started from). Never INVALID."""
    import time

    from tunebench.models.generate import prompt_sha256
    from tunebench.models.loading import load_tokenizer

    if job.summarization:
        raise ConfigError(f"params.yaml: runs.{job.task['run']}: model {job.spec.name} is an "
                          "encoder classifier and cannot summarize")
    train = train_settings(job.params, job.task["run"])  # the head's seed, the max length
    tokenizer = load_tokenizer(job.spec, job.model_dir, padding_side="right")
    model, _ = load_encoder_cls(job.spec, job.model_dir, job.task["labels"],
                                job.spec.load_in_4bit, seed=train.seed, adapter_dir=job.adapter)
    texts = input_texts(job.rows, Path(job.task["dataset"]))
    start = time.perf_counter()
    labels = predict_encoder_cls(model, tokenizer, texts, job.task["labels"],
                                 job.cfg["batch_size"], train.max_seq_len)
    write_predictions(job, "argmax", [prompt_sha256(x) for x in texts], labels, labels,
                      time.perf_counter() - start,
                      {"batch_size": job.cfg["batch_size"], "max_len": train.max_seq_len,
                       "head_seed": train.seed, "model": model_provenance(job.spec),
                       "adapter": job.adapter_record(), "prompt_field": "text"})


def predict_encoder_cls(model, tokenizer, texts: list[str], label_list: list[str],
                        batch_size: int = 16, max_len: int = 512) -> list[str]:
    """The argmax label per text, in order: every answer is a label, none can be invalid."""
    import torch

    if model.config.num_labels != len(label_list):
        raise ValueError(f"model has {model.config.num_labels} labels, label_list "
                         f"{len(label_list)}")
    rows = encode_texts(tokenizer, texts, max_len)
    collate, device = ClassCollator(tokenizer.pad_token_id), next(model.parameters()).device
    model.eval()
    predicted: list[str] = []
    for start in range(0, len(rows), batch_size):
        batch = collate(rows[start:start + batch_size])
        with torch.inference_mode():
            logits = model(**{k: v.to(device) for k, v in batch.items()}).logits
        predicted += [label_list[i] for i in logits.argmax(dim=-1).tolist()]
    return predicted
