"""baselines: non-LLM reference systems for one dataset.

Classification: majority class and TF-IDF + logistic regression (majority.jsonl,
tfidf_logreg.jsonl) trained on the ids of <instructions>/train.jsonl (the examples the LLM is
fine-tuned on, texts from <labeled>/train.parquet joined by id), and the strong floor
tfidf_full.jsonl: the same classifier fitted on the whole <labeled>/train.parquet (training
texts equal to a test text left out, counted). All predict the ids of
<instructions>/test.jsonl (texts from <labeled>/test.parquet). Summarization: the lead (the
first `baselines.lead.sentences` sentences of the test source), written as lead.jsonl.
Writes <system>.jsonl and <system>.meta.json into --out (prediction schema: id,
prompt_sha256, raw, parsed, target).
Params: `baselines.tfidf_logreg` (TfidfLogregConfig fields), `baselines.lead.sentences`.
"""

from pathlib import Path

from stages._cli import parser, run
from tunebench.evaluation.baselines import (
    baseline_config,
    join_texts,
    lead_sentences,
    run_baselines,
    run_lead,
    run_strong_floor,
)
from tunebench.io import (
    DataError,
    read_json,
    read_jsonl,
    read_parquet,
    sha256_file,
    write_json,
    write_jsonl,
)
from tunebench.running.params import load_params

ROW_FIELDS = ("id", "prompt", "completion")


def read_split(instructions: Path, labeled: Path, split: str) -> tuple[list[dict], list[str]]:
    """Instruction rows of one split and their texts from the labeled parquet."""
    rows = read_jsonl(instructions / f"{split}.jsonl", required=ROW_FIELDS)
    path = labeled / f"{split}.parquet"
    return rows, join_texts(rows, read_parquet(path, columns=("id", "text", "label")), str(path))


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--dataset", required=True, help="dataset key (must match task.json)")
    p.add_argument("--instructions", type=Path, required=True,
                   help="folder from format-instructions (train/test.jsonl, task.json)")
    p.add_argument("--labeled", type=Path, required=True, help="folder from label-transform")
    p.add_argument("--out", type=Path, required=True, help="predictions folder")
    args = p.parse_args()
    params = load_params(args.params)
    cfg = baseline_config(params)
    task = read_json(args.instructions / "task.json")
    if task.get("dataset") != args.dataset:
        raise DataError(f"{args.instructions / 'task.json'}: dataset {task.get('dataset')!r} "
                        f"but --dataset is {args.dataset!r}")
    test_rows, test_texts = read_split(args.instructions, args.labeled, "test")
    test_sha256 = sha256_file(args.instructions / "test.jsonl")  # score checks it
    if task.get("type") == "summarization":
        # The lead of the text the models saw (instructions "text": cut to max_words).
        results = run_lead(test_rows, [r["text"] for r in test_rows], lead_sentences(params))
        done = f"lead of {len(test_rows)} test sources"
    else:
        train_rows, train_texts = read_split(args.instructions, args.labeled, "train")
        results = run_baselines(train_rows, train_texts, test_rows, test_texts, cfg)
        full = read_parquet(args.labeled / "train.parquet", columns=("id", "text", "label"))
        results.update(run_strong_floor([str(t) for t in full["text"]],
                                        [str(lab) for lab in full["label"]],
                                        test_rows, test_texts, cfg))
        strong = results["tfidf_full"][1]
        done = (f"train={len(train_rows)} test={len(test_rows)}; "
                f"majority={results['majority'][1]['majority_label']}; "
                f"strong floor on {strong['n_train']} training texts "
                f"({strong['n_train_dropped_test_overlap']} equal to a test text left out)")
    for system, (rows, meta) in results.items():
        write_jsonl(args.out / f"{system}.jsonl", rows)
        write_json(args.out / f"{system}.meta.json",
                   {**meta, "dataset": args.dataset, "test_sha256": test_sha256})
    print(f"baselines {args.dataset}: {done}")


if __name__ == "__main__":
    run(main)
