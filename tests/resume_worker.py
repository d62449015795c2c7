"""Subprocess entry point for tests/test_resume.py: one training run of a tiny model of one
family, through the shared engine (tunebench.models.engine).

python -m tests.resume_worker FAMILY MODEL_DIR OUT_DIR CHECKPOINT_ROOT RESULT_JSON [STEP_DELAY_S]

FAMILY is causal_lm, seq2seq or encoder_cls. Each logged step sleeps STEP_DELAY_S so the test
can kill the run mid-way; the delay does not change what is computed.
"""

import sys
import time
from pathlib import Path

from tunebench.io import write_json
from tunebench.models.engine import TrainJob
from tunebench.models.loading import ModelSpec
from tunebench.models.train_qlora import TrainConfig

PROMPTS = [("Instruction: What is the sentiment of this news?\nInput: Profit rose.\nAnswer: ",
            "positive"),
           ("Instruction: What is the sentiment of this news?\nInput: Shares fell.\nAnswer: ",
            "negative"),
           ("Instruction: What is the sentiment of this news?\nInput: Results in line.\nAnswer: ",
            "neutral")]
LABELS = ["negative", "neutral", "positive"]
# 6 examples, batch 2 -> 3 steps an epoch; 4 epochs = 12 steps, a checkpoint every 3.
# Dropout stays on so that resuming must restore the RNG state, not just the weights.
EXAMPLES = PROMPTS * 2
CONFIG = TrainConfig(epochs=4, batch_size=2, learning_rate=5e-3, lora_dropout=0.1, bf16=False,
                     checkpoint_steps=3, seed=7, max_seq_len=64)
TARGETS = {"causal_lm": ["q_proj", "v_proj"], "seq2seq": ["q", "v"],
           "encoder_cls": ["query", "value"]}


def spec(model_dir, family: str = "causal_lm") -> ModelSpec:
    extra = {"chat_template": True} if family == "causal_lm" else {"family": family}
    return ModelSpec.from_params("tiny", {"source": "local", "path": str(model_dir),
                                          "load_in_4bit": True, "lora_targets": TARGETS[family],
                                          **extra})


def train(family: str, model_dir, out_dir: Path, root: Path, log=None) -> dict:
    """One run of the family's training function on EXAMPLES with CONFIG."""
    from tunebench.models.causal import train_lora
    from tunebench.models.encoder import train_encoder_cls_lora
    from tunebench.models.seq2seq import train_seq2seq_lora

    job = TrainJob(spec(model_dir, family), str(model_dir), CONFIG, out_dir, log, root, "tiny")
    if family == "causal_lm":
        return train_lora(job.spec, job.model_dir, EXAMPLES, CONFIG, out_dir, log, root, "tiny")
    if family == "seq2seq":
        return train_seq2seq_lora(job, EXAMPLES)
    return train_encoder_cls_lora(job, [p for p, _ in EXAMPLES], [c for _, c in EXAMPLES],
                                  LABELS)


def main() -> None:
    family, model_dir, out_dir, root, result = sys.argv[1:6]
    delay = float(sys.argv[6]) if len(sys.argv) > 6 else 0.0

    def log(point):
        print(f"step {point['step']}", flush=True)
        time.sleep(delay)

    metrics = train(family, model_dir, Path(out_dir), Path(root), log)
    write_json(Path(result), {k: v for k, v in metrics.items() if k != "peak_memory_mb"})


if __name__ == "__main__":
    from stages._cli import run

    run(main)
