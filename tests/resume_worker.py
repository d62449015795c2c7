"""Subprocess entry point for tests/test_resume.py: one train_lora run on the tiny model.

python -m tests.resume_worker MODEL_DIR OUT_DIR CHECKPOINT_ROOT RESULT_JSON [STEP_DELAY_S]

Each logged step sleeps STEP_DELAY_S so the test can kill the run mid-way; the delay does not
change what is computed.
"""

import sys
import time
from pathlib import Path

from tunebench.io import write_json
from tunebench.models import ModelSpec
from tunebench.train import TrainConfig, train_lora

PROMPTS = [("Instruction: What is the sentiment of this news?\nInput: Profit rose.\nAnswer: ",
            "positive"),
           ("Instruction: What is the sentiment of this news?\nInput: Shares fell.\nAnswer: ",
            "negative"),
           ("Instruction: What is the sentiment of this news?\nInput: Results in line.\nAnswer: ",
            "neutral")]
# 6 examples, batch 2 -> 3 steps an epoch; 4 epochs = 12 steps, a checkpoint every 3.
# Dropout stays on so that resuming must restore the RNG state, not just the weights.
EXAMPLES = PROMPTS * 2
CONFIG = TrainConfig(epochs=4, batch_size=2, learning_rate=5e-3, lora_dropout=0.1, bf16=False,
                     checkpoint_steps=3, seed=7)


def spec(model_dir) -> ModelSpec:
    return ModelSpec.from_params("tiny", {"source": "local", "path": str(model_dir),
                                          "load_in_4bit": True, "chat_template": True,
                                          "lora_targets": ["q_proj", "v_proj"]})


def main() -> None:
    model_dir, out_dir, root, result = sys.argv[1:5]
    delay = float(sys.argv[5]) if len(sys.argv) > 5 else 0.0

    def log(point):
        print(f"step {point['step']}", flush=True)
        time.sleep(delay)

    metrics = train_lora(spec(model_dir), model_dir, EXAMPLES, CONFIG, Path(out_dir), log=log,
                         checkpoint_root=Path(root), run_name="tiny")
    write_json(Path(result), {k: v for k, v in metrics.items() if k != "peak_memory_mb"})


if __name__ == "__main__":
    from stages._cli import run

    run(main)
