"""score: metrics for every system's predictions on one dataset.

Reads <instructions>/task.json, test.jsonl (and summary.json, for the sample sizes), and
every <predictions>/<system>.jsonl with its <system>.meta.json sidecar. Each system must
cover exactly the test ids. Writes --out (accuracy, F1, invalid rate, bootstrap 95% CIs,
McNemar of "tuned" against every other system, provenance; no timestamps) and
--confusion-dir/<system>.json ({"actual", "predicted"} rows for DVC's confusion plot).
Params: `score.n_boot`, `score.seed`.
"""

from pathlib import Path

from stages._cli import parser, run
from tunebench.config import ConfigError, check_keys
from tunebench.io import DataError, read_json, read_jsonl, write_json
from tunebench.params import load_params, section

SCORE_KEYS = ("n_boot", "seed")


def score_params(params: dict) -> tuple[int, int]:
    cfg = section(params, "score")
    check_keys(cfg, SCORE_KEYS, "params.yaml: score", SCORE_KEYS)
    n_boot, seed = cfg["n_boot"], cfg["seed"]
    if not isinstance(n_boot, int) or isinstance(n_boot, bool) or n_boot < 1:
        raise ConfigError(f"params.yaml: score.n_boot: expected an int >= 1, got {n_boot!r}")
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise ConfigError(f"params.yaml: score.seed: expected an int, got {seed!r}")
    return n_boot, seed


def read_systems(folder: Path) -> dict[str, tuple]:
    """system -> (rows, meta, rows path, meta path) for every <system>.jsonl in folder."""
    from tunebench.score import PRED_FIELDS

    if not folder.is_dir():
        raise DataError(f"{folder}: predictions folder not found")
    systems = {}
    for path in sorted(folder.glob("*.jsonl")):
        meta_path = path.with_name(f"{path.stem}.meta.json")
        systems[path.stem] = (read_jsonl(path, required=PRED_FIELDS), read_json(meta_path),
                              str(path), str(meta_path))
    return systems


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--dataset", required=True, help="dataset key (must match task.json)")
    p.add_argument("--instructions", type=Path, required=True,
                   help="folder from format-instructions (task.json, test.jsonl)")
    p.add_argument("--predictions", type=Path, required=True, help="folder of <system>.jsonl")
    p.add_argument("--out", type=Path, required=True, help="metrics JSON to write")
    p.add_argument("--confusion-dir", type=Path, required=True,
                   help="folder for <system>.json confusion rows")
    args = p.parse_args()
    # Imported after argument parsing: it pulls in scikit-learn, which --help does not need.
    from tunebench.score import score_dataset

    n_boot, seed = score_params(load_params(args.params))
    task = read_json(args.instructions / "task.json")
    if task.get("dataset") != args.dataset:
        raise DataError(f"{args.instructions / 'task.json'}: dataset {task.get('dataset')!r} "
                        f"but --dataset is {args.dataset!r}")
    test_path = args.instructions / "test.jsonl"
    summary_path = args.instructions / "summary.json"
    sample = read_json(summary_path) if summary_path.is_file() else {}
    record, confusion = score_dataset(
        task, read_jsonl(test_path, required=("id", "completion")),
        read_systems(args.predictions), n_boot, seed, sample, str(test_path))
    write_json(args.out, record)
    for system, rows in confusion.items():
        write_json(args.confusion_dir / f"{system}.json", rows)
    scores = ", ".join(f"{name} f1w={s['f1_weighted']:.3f}"
                       for name, s in record["systems"].items())
    print(f"score {args.dataset}: n={record['n']}; {scores}")


if __name__ == "__main__":
    run(main)
