"""End to end: the whole DAG with a tiny model on a few examples per dataset; then a no-op
`dvc repro`, a param change that reruns only what depends on it, and `dvc metrics diff`
between two git branches."""

import json
import re

import pytest

from tests.project import make_project, project_env, run

pytestmark = pytest.mark.slow


def tiny_params(model_dir, bert_dir):
    return {
        "format_instructions": {"seed": 42, "caps": {"train": 6, "test": 5}, "max_words": None},
        "datasets": {"fpb": {"run": "fingpt"}, "tfns": {"run": "fingpt"},
                     "xsum": {"run": "xsum", "caps": {"train": 4, "test": 3}, "max_words": 40},
                     "imdb": {"run": "imdb", "caps": {"train": 8, "test": 4}, "max_words": 40}},
        "model": "tiny",
        "models": {"tiny": {"source": "local", "path": str(model_dir), "dtype": "float32",
                            "load_in_4bit": True, "lora_targets": ["q_proj", "v_proj"],
                            "chat_template": True},
                   "tinybert": {"source": "local", "path": str(bert_dir),
                                "family": "encoder_cls", "load_in_4bit": True,
                                "lora_targets": ["query", "value"]}},
        "train_qlora": {"epochs": 1, "learning_rate": 0.001, "batch_size": 2,
                        "max_seq_len": 256, "seed": 42},
        "runs": {"fingpt": {"mixture": {"fpb": 2, "tfns": 1}},
                 "xsum": {"mixture": {"xsum": 1},
                          "predict": {"modes": ["generate"], "max_new_tokens": 6}},
                 "imdb": {"mixture": {"imdb": 1}, "model": "tinybert",
                          "train_qlora": {"max_seq_len": 64},
                          "zero_shot": {"model": "tiny", "modes": ["loglik"]}}},
        "predict": {"batch_size": 4, "max_new_tokens": {"base": 6, "tuned": 4},
                    "parser": None, "modes": ["generate", "loglik"]},
        "score": {"n_boot": 50, "seed": 0, "bertscore": {"model": "tinybert", "num_layers": 2}},
    }


def ran_stages(output: str) -> set[str]:
    return set(re.findall(r"Running stage '([^']+)'", output))


@pytest.fixture(scope="module")
def project(tmp_path_factory, tiny_model_dir, tiny_bert_dir, mirror_dir):
    root = tmp_path_factory.mktemp("full") / "p"
    make_project(root, mirror_dir, tiny_params(tiny_model_dir, tiny_bert_dir))
    env = project_env(mirror_dir)
    first = run(["dvc", "repro"], root, env)
    return root, env, first


def test_first_repro_runs_every_stage_and_scores_all_systems(project):
    root, _, first = project
    assert {"train-qlora@fingpt", "predict-base@fpb", "predict-tuned@tfns", "baselines@fpb",
            "score@tfns", "report"} <= ran_stages(first)
    for name in ("fpb", "tfns"):
        metrics = json.loads((root / f"metrics/datasets/{name}.json").read_text())
        loglik = {f"{system}-loglik{variant}" for system in ("base", "tuned")
                  for variant in ("", "_mean", "_calibrated")}  # predict's loglik variants
        assert set(metrics["systems"]) == {"base", "tuned", "majority", "tfidf_logreg",
                                          "tfidf_full", *loglik}
        assert all(s["n"] == 5 for s in metrics["systems"].values())
        assert "tuned_vs_base" in metrics["comparisons"]
        rows = (root / f"data/predictions/{name}/tuned/tuned.jsonl").read_text().splitlines()
        assert len(rows) == 5
    adapter = root / "models/fingpt"
    assert (adapter / "adapter_model.safetensors").is_file()
    assert not list(adapter.glob("*.bin"))
    train = json.loads((root / "metrics/train/fingpt/metrics.json").read_text())
    assert train["n_examples"] == 6 * 2 + 6 and train["steps"] == 9
    assert (root / "metrics/report.md").is_file() and (root / "metrics/summary.csv").is_file()


def test_summarization_and_encoder_datasets_run_in_the_same_dag(project):
    root, _, first = project
    assert {"train-qlora@xsum", "train-qlora@imdb", "baselines@xsum", "score@xsum",
            "score@imdb"} <= ran_stages(first)
    xsum = json.loads((root / "metrics/datasets/xsum.json").read_text())
    assert xsum["type"] == "summarization" and set(xsum["systems"]) == {"lead", "base", "tuned"}
    assert all(s["n"] == 3 for s in xsum["systems"].values())
    assert xsum["bertscore"]["num_layers"] == 2
    assert (root / xsum["figures"]["boxplot"]).is_file()
    imdb = json.loads((root / "metrics/datasets/imdb.json").read_text())
    assert set(imdb["systems"]) == {"majority", "tfidf_logreg", "tfidf_full", "base",
                                    "tuned", "zeroshot_llm-loglik", "zeroshot_llm-loglik_mean",
                                    "zeroshot_llm-loglik_calibrated"}
    assert imdb["systems"]["base"]["meta"]["mode"] == "argmax"
    assert imdb["systems"]["zeroshot_llm-loglik"]["meta"]["model"]["name"] == "tiny"
    train = json.loads((root / "metrics/train/imdb/metrics.json").read_text())
    assert train["family"] == "encoder_cls" and train["n_examples"] == 8
    report = (root / "metrics/report.md").read_text()
    assert "xsum" in report and "imdb" in report


def test_noop_repro_reruns_nothing(project):
    root, env, _ = project
    out = run(["dvc", "repro"], root, env)
    assert ran_stages(out) == set(), out


def test_param_change_reruns_only_dependent_stages(project):
    root, env, _ = project
    params = (root / "params.yaml").read_text()
    (root / "params.yaml").write_text(params.replace("tuned: 4", "tuned: 5"))
    out = run(["dvc", "repro"], root, env)
    # Every predict stage reads `predict` (runs may override parts of it), so they rerun;
    # their sidecars carry timings, so scores and the report follow. Training and the data
    # stages do not rerun.
    datasets = ("fpb", "tfns", "xsum", "imdb")
    assert ran_stages(out) == {f"{stage}@{name}" for name in datasets
                               for stage in ("predict-base", "predict-tuned", "score")
                               } | {"report"}, out


def test_metrics_diff_across_branches(project):
    root, env, _ = project
    run(["git", "add", "-A"], root, env)
    run(["git", "commit", "-qm", "results"], root, env)
    base = run(["git", "rev-parse", "--abbrev-ref", "HEAD"], root, env).strip()
    run(["git", "checkout", "-qb", "other-seed"], root, env)
    params = (root / "params.yaml").read_text()
    (root / "params.yaml").write_text(params.replace("n_boot: 50", "n_boot: 60"))
    run(["dvc", "repro"], root, env)
    run(["git", "add", "-A"], root, env)
    run(["git", "commit", "-qm", "more resamples"], root, env)
    diff = run(["dvc", "metrics", "diff", base, "--json"], root, env, stdout_only=True)
    changed = json.loads(diff)
    assert "metrics/datasets/fpb.json" in changed, diff
    assert any("n_boot" in key for key in changed["metrics/datasets/fpb.json"]), diff
