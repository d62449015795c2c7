"""`make perf` on a tiny model: every figure present and consistent, the train loops compared
on the same real tokens, and partial runs (--only) keeping the other parts of the file."""

import json

import pytest

from tunebench.evaluation.parsing import get_parser
from tunebench.models.loading import ModelSpec, load_causal_lm, load_tokenizer
from tunebench.running import perf

LABELS = ["negative", "neutral", "positive"]
PROMPTS = [f"Instruction: What is the sentiment of this news? Please choose an answer from "
           f"{{negative/neutral/positive}}.\nInput: {text}\nAnswer: "
           for text in ("Profit rose.", "Sales fell sharply.", "The bank kept its guidance.",
                        "Shares were flat.", "Costs doubled.")]
CFG = {"naive_batch_size": 2, "naive_max_length": 80, "invariance_batch_sizes": [1, 4],
       "generate_batch_sizes": [2, 5], "dataset": "toy", "train_steps": 2, "train_batch_size": 2,
       "train_pad_to": 64}
PCFG = {"batch_size": 4, "max_new_tokens": {"base": 6, "tuned": 4}, "stop_strings": None,
        "share_prefix": True}


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    spec = ModelSpec.from_params("tiny", {"source": "local", "path": str(tiny_model_dir),
                                          "lora_targets": ["q_proj", "v_proj"]})
    return spec, load_tokenizer(spec, str(tiny_model_dir))


def test_predict_figures_are_complete_and_consistent(tiny, tiny_model_dir):
    spec, tokenizer = tiny
    model = load_causal_lm(spec, str(tiny_model_dir), quantize=False)
    parse = get_parser("strict")
    res = perf.predict_figures(model, tokenizer, PROMPTS, LABELS, parse, CFG, PCFG, "base")
    assert res["floor"]["x_floor"] == 1.0
    for mode in ("naive", "generate", "loglik"):
        f = res[mode]
        # Figures are rounded (seconds to 0.01 s), and a tiny model takes a few hundredths.
        assert f["examples_per_s"] > 0 and f["seconds"] >= 0
        assert f["x_floor"] > 0 and f["peak_mb"] > 0  # (floor seconds are too small to divide)
    assert res["generate_speedup_vs_naive"] > 0
    assert 0.0 <= res["cap_agreement_vs_512"] <= 1.0
    assert res["batch_invariance"]["batch_sizes"] == [1, 4]
    assert res["batch_invariance"]["differ"] == round(
        (1 - res["batch_invariance"]["agreement"]) * len(PROMPTS))
    assert sum(res["loglik_label_distribution"].values()) == len(PROMPTS)
    assert res["max_new_tokens"] == 6
    # The sweep re-times generate at other batch sizes; greedy labels must match batch 4's.
    assert set(res["generate_batch_sizes"]) == {"2", "5"}
    for f in res["generate_batch_sizes"].values():
        assert f["examples_per_s"] > 0 and f["speedup_vs_naive"] > 0
        assert f["agreement_vs_batch_4"] == 1.0
    assert "generate at batch 5" in perf.table({"model": "tiny", "threads": 1, "device": "cpu",
                                                 "n_prompts": 5, "base": res})


def test_train_loops_see_the_same_real_tokens(tiny, tiny_model_dir, tmp_path, monkeypatch):
    from tunebench.running.perf_train import train_figures

    spec, _ = tiny
    folder = tmp_path / "data/instructions/toy/toy"
    folder.mkdir(parents=True)
    rows = [{"id": str(i), "prompt": p, "completion": LABELS[i % 3]}
            for i, p in enumerate(PROMPTS[:4])]
    (folder / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    monkeypatch.chdir(tmp_path)
    out = train_figures(spec, str(tiny_model_dir), {"datasets": {"toy": {"run": "toy"}}}, CFG)
    loops = ("pad_to_512", "ours_dynamic", "ours_full_logits", "ours_grouped", "ours_packed",
             "bare_pytorch")
    assert out["mixed_precision"] in {"bf16", "fp32"}  # CPU: never fp16
    tokens = {out[name]["real_tokens"] for name in loops}
    assert len(tokens) == 1 and tokens.pop() > 0  # padding is never counted as work
    assert out["ours_vs_pad512"] == pytest.approx(
        out["ours_dynamic"]["tokens_per_s"] / out["pad_to_512"]["tokens_per_s"], rel=0.15)
    assert out["ours_vs_bare"] == pytest.approx(
        out["ours_dynamic"]["tokens_per_s"] / out["bare_pytorch"]["tokens_per_s"], rel=0.15)
    assert out["ours_packed_vs_dynamic"] == pytest.approx(
        out["ours_packed"]["tokens_per_s"] / out["ours_dynamic"]["tokens_per_s"], rel=0.15)
    bound = out["bound"]
    assert bound["matmul_tflops"] > 0 and bound["weights"] > 0
    assert bound["flop_per_token"] == 4 * bound["weights"]
    for name in loops:
        assert out[name]["fraction_of_bound"] == pytest.approx(
            out[name]["tokens_per_s"] / bound["tokens_per_s"], rel=0.01)


def test_table_prints_what_a_partial_run_has():
    result = {"model": "m", "threads": 2, "device": "cpu",
              "train": {"pad_to_512": {"tokens_per_s": 10.0, "peak_mb": 5.0},
                        "ours_vs_pad512": 1.5}}
    text = perf.table(result)
    assert "pad_to_512" in text and "10.0" in text and "dvc no-op" not in text
    assert "(fp32)" in text
    result["dvc_repro_noop"] = {"command": "dvc repro", "seconds": 1.2}
    assert "dvc no-op (dvc repro): 1.2 s" in perf.table(result)


@pytest.mark.slow
def test_dvc_noop_is_timed_only_on_an_up_to_date_pipeline(tmp_path, monkeypatch):
    import subprocess

    monkeypatch.chdir(tmp_path)
    for cmd in (["git", "init", "-q"], ["dvc", "init", "-q"],
                ["dvc", "config", "core.analytics", "false"]):
        subprocess.run(cmd, check=True)
    (tmp_path / "in.txt").write_text("a\n")
    (tmp_path / "dvc.yaml").write_text(
        "stages:\n  copy:\n    cmd: cp in.txt out.txt\n    deps: [in.txt]\n    outs: [out.txt]\n")
    subprocess.run(["dvc", "repro", "-q"], check=True)
    done = perf.dvc_noop_seconds(runs=2)
    assert done["up_to_date"] is True and done["command"] == "dvc repro"
    assert done["stages"] == 1 and len(done["runs"]) == 2 and done["seconds"] in done["runs"]
    (tmp_path / "in.txt").write_text("b\n")  # stale: only a dry run is timed, and says so
    stale = perf.dvc_noop_seconds(runs=1)
    assert stale["up_to_date"] is False and stale["command"] == "dvc repro --dry"
    assert (tmp_path / "out.txt").read_text() == "a\n"  # the dry run changed nothing
