"""The lm-eval cross-check: export (YAML + JSONL), the token split at the prompt/answer
boundary on the tiny model, the ingest of an lm-eval samples file, the comparison math, and
(slow, needs the optional extra) the whole cross-check on the tiny model."""

import json
import math
from pathlib import Path

import pytest
import yaml

from tunebench.evaluation import crosscheck_math as cm
from tunebench.evaluation.crosscheck import render_table
from tunebench.evaluation.crosscheck_run import natural_split, token_pairs
from tunebench.evaluation.lmeval_samples import main as ingest_main
from tunebench.evaluation.lmeval_samples import read_samples, to_predictions
from tunebench.evaluation.lmeval_tasks import export_dataset, load_exported, write_task
from tunebench.io import DataError, read_json, read_jsonl, write_json, write_jsonl

LABELS = ["negative", "neutral", "positive"]
FRAME = ("Instruction: What is the sentiment of this news? Please choose an answer from "
         "{{negative/neutral/positive}}.\nInput: {}\nAnswer: ")
TEXTS = ["Profit rose 12 percent.", "The company reported a loss.", "The bank said so.",
         "Shares fell sharply in early trading.", "Sales grew while costs stayed flat."]
TARGETS = ["positive", "negative", "neutral", "negative", "positive"]


def write_instructions(root: Path, few_shot: bool = False) -> Path:
    folder = root / "toyrun" / "toy"
    rows = [{"id": f"t{i}", "prompt": FRAME.format(t), "completion": y, "text": t,
             **({"prompt_base": "Example: x\n" + FRAME.format(t)} if few_shot else {})}
            for i, (t, y) in enumerate(zip(TEXTS, TARGETS, strict=True))]
    write_jsonl(folder / "test.jsonl", rows)
    write_json(folder / "task.json", {"dataset": "toy", "task": "toy", "version": 3,
                                      "type": "classification", "labels": LABELS,
                                      "parser": "strict", "run": "toyrun",
                                      "base_prompt": "few_shot" if few_shot else "zero_shot"})
    return root


def toy_params(tmp_path: Path, model_dir: Path) -> dict:
    return {"format_instructions": {"seed": 42}, "datasets": {"toy": {"run": "toyrun"}},
            "runs": {"toyrun": {"mixture": {"toy": 1}}}, "model": "tiny",
            "models": {"tiny": {"source": "local", "path": str(model_dir),
                                "chat_template": True, "lora_targets": ["q_proj", "v_proj"],
                                "prompt_format": {"base": "chat", "tuned": "raw"}}},
            "paths": {"model_cache": str(tmp_path / "cache")},
            "predict": {"batch_size": 2, "max_new_tokens": 4, "parser": None,
                        "share_prefix": True},
            "score": {"n_boot": 50, "seed": 0}}


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    from tunebench.models.loading import ModelSpec, load_tokenizer

    spec = ModelSpec.from_params("tiny", {"source": "local", "path": str(tiny_model_dir)})
    return load_tokenizer(spec, str(tiny_model_dir))


# --- export ----------------------------------------------------------------------------------

@pytest.mark.parametrize("few_shot", [False, True])
def test_export_writes_an_offline_lmeval_task_per_system(tmp_path, tiny_model_dir, tokenizer,
                                                         few_shot):
    from tunebench.models.loading import apply_prompt_format

    root = write_instructions(tmp_path / "instructions", few_shot)
    params = toy_params(tmp_path, tiny_model_dir)
    tasks = export_dataset(params, "toy", ["base", "tuned", "base-raw"], root,
                           tmp_path / "out", n=3)
    assert [t.name for t in tasks] == ["tunebench_toy_base", "tunebench_toy_tuned",
                                       "tunebench_toy_base_raw"]
    source = read_jsonl(root / "toyrun" / "toy" / "test.jsonl")[:3]
    key = "prompt_base" if few_shot else "prompt"
    expected = {"base": [apply_prompt_format(tokenizer, r[key], "chat") for r in source],
                "tuned": [r["prompt"] for r in source], "base-raw": [r[key] for r in source]}
    for task in tasks:
        config = yaml.safe_load(task.yaml_path.read_text())
        assert config["dataset_path"] == "json" and config["output_type"] == "multiple_choice"
        data_file = Path(config["dataset_kwargs"]["data_files"]["test"])
        assert data_file.is_absolute() and data_file == task.data_path.resolve()
        assert (config["doc_to_text"], config["doc_to_target"]) == ("prompt", "target")
        assert config["doc_to_choice"] == LABELS and config["target_delimiter"] == ""
        assert config["metadata"]["tunebench"]["system"] == task.system
        rows = read_jsonl(task.data_path)
        assert [r["id"] for r in rows] == ["t0", "t1", "t2"]
        assert [r["prompt"] for r in rows] == expected[task.system]
        assert [r["label"] for r in rows] == TARGETS[:3]
        assert [r["target"] for r in rows] == [LABELS.index(y) for y in TARGETS[:3]]
        assert load_exported(task.yaml_path) == task
    assert tasks[0].prompt_format == "chat" and tasks[1].prompt_format == "raw"


def test_export_names_a_row_with_an_unknown_label(tmp_path, tiny_model_dir):
    root = write_instructions(tmp_path / "instructions")
    path = root / "toyrun" / "toy" / "test.jsonl"
    rows = read_jsonl(path)
    rows[1]["completion"] = "bullish"
    write_jsonl(path, rows)
    with pytest.raises(DataError, match=r"test\.jsonl:2: completion 'bullish'"):
        export_dataset(toy_params(tmp_path, tiny_model_dir), "toy", ["tuned"], root,
                       tmp_path / "out", n=None)


# --- the token split at the prompt/answer boundary -------------------------------------------

def joint_split(tokenizer, prompt: str, label: str) -> tuple[list[int], list[int]]:
    """lm-eval's documented rule, restated: trailing whitespace of the context moves into the
    continuation; context + continuation is tokenized as one text and cut after the context."""
    from tunebench.models.loading import encode_prompt

    cut = len(prompt.rstrip())
    context = encode_prompt(tokenizer, prompt[:cut])
    whole = encode_prompt(tokenizer, prompt + label)
    assert whole[:len(context)] == context
    return context, whole[len(context):]


@pytest.mark.parametrize("fmt", ["raw", "chat"])
def test_natural_split_gives_lmevals_tokens_and_differs_from_tunebenchs(tokenizer, fmt):
    from tunebench.models.loading import apply_prompt_format

    prompts = [apply_prompt_format(tokenizer, FRAME.format(t), fmt) for t in TEXTS]
    ws, stripped, natural = natural_split(prompts, tuple(LABELS), "toy")
    assert ws == (" " if fmt == "raw" else "\n")
    ours = token_pairs(tokenizer, stripped, natural)
    own = token_pairs(tokenizer, prompts, LABELS)
    for prompt, (context, conts), (own_context, own_conts) in zip(prompts, ours, own,
                                                                  strict=True):
        for label, cont, own_cont in zip(LABELS, conts, own_conts, strict=True):
            assert (context, cont) == joint_split(tokenizer, prompt, label)
            # The same text. Raw: BPE merges the space into the label, so other tokens; chat:
            # the same tokens, lm-eval's answer starting one token (the newline) earlier.
            assert (context + cont == own_context + own_cont) == (fmt == "chat")
            assert tokenizer.decode(context + cont) == tokenizer.decode(own_context + own_cont)


def test_prompts_with_different_trailing_whitespace_are_refused():
    with pytest.raises(DataError, match="toy: the prompts end in different whitespace"):
        natural_split(["a: ", "b:\n"], ("x", "y"), "toy")


# --- ingest of an lm-eval samples file -------------------------------------------------------

def exported_task(tmp_path: Path):
    from tunebench.models.generate import prompt_sha256

    rows = [{"id": f"t{i}", "prompt": FRAME.format(t), "label": y, "target": LABELS.index(y),
             "prompt_sha256": prompt_sha256(FRAME.format(t))}
            for i, (t, y) in enumerate(zip(TEXTS, TARGETS, strict=True))]
    info = {"dataset": "toy", "system": "base", "kind": "base", "prompt_format": "raw"}
    return write_task(tmp_path / "tasks", "toy", "base", rows, LABELS, info, 3), rows


def sample_line(doc_id: int, doc: dict, scores: list[float]) -> dict:
    """One line as lm-eval 0.4.13 writes it: arguments per choice, responses as strings."""
    return {"doc_id": doc_id, "doc": doc, "target": str(doc["target"]),
            "arguments": {f"gen_args_{k}": {"arg_0": doc["prompt"][:-1],
                                            "arg_1": " " + label}
                          for k, label in enumerate(LABELS)},
            "resps": [[[str(s), "False"]] for s in scores],
            "filtered_resps": [[str(s), "False"] for s in scores],
            "filter": "none", "metrics": ["acc"], "acc": 0.0}


SCORES = [[-3.0, -2.5, -0.25], [-0.5, -1.0, -2.0], [-1.0, -1.0, -4.0], [-2.0, -0.1, -3.0],
          [-1.5, -2.5, -1.25]]


def write_samples(path: Path, rows: list[dict], lines: list[dict] | None = None) -> Path:
    lines = lines or [sample_line(i, r, s) for i, (r, s) in enumerate(zip(rows, SCORES,
                                                                           strict=True))]
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    return path


def test_samples_become_loglik_predictions(tmp_path):
    task, rows = exported_task(tmp_path)
    samples = read_samples(write_samples(tmp_path / "s.jsonl", rows), task.labels)
    assert [s["id"] for s in samples] == [r["id"] for r in rows]
    assert samples[0]["scores"] == SCORES[0]
    preds = to_predictions(samples, task.labels)
    # argmax; the tie on row 3 goes to the earlier label, as lm-eval's numpy argmax does
    assert [p["parsed"] for p in preds] == ["positive", "negative", "negative", "neutral",
                                            "positive"]
    assert [p["target"] for p in preds] == TARGETS
    assert preds[0]["prompt_sha256"] == rows[0]["prompt_sha256"]
    assert preds[0]["scores"] == dict(zip(LABELS, SCORES[0], strict=True))


@pytest.mark.parametrize(("change", "fragment"), [
    (lambda line: "{not json", r"s\.jsonl:2: not a valid UTF-8 JSON line"),
    (lambda line: {**line, "filtered_resps": line["filtered_resps"][:2]},
     r"s\.jsonl:2: field filtered_resps must hold one"),
    (lambda line: {**line, "filtered_resps": [["nan?", "False"]] * 3},
     r"s\.jsonl:2: filtered_resps\[0\]: expected \[loglik, is_greedy\]"),
    (lambda line: {**line, "doc": {"prompt": "x"}}, r"s\.jsonl:2: field doc must hold id"),
    (lambda line: {**line, "arguments": {f"gen_args_{k}": {"arg_0": "Q: ", "arg_1": lab}
                                         for k, lab in enumerate(LABELS)}},
     r"s\.jsonl:2: lm-eval scored .* not the exported prompt"),
    (lambda line: {**line, "doc": {**line["doc"], "id": "t0"}}, r"s\.jsonl:2: id 't0' already"),
])
def test_a_malformed_sample_names_file_and_line(tmp_path, change, fragment):
    task, rows = exported_task(tmp_path)
    lines = [sample_line(i, r, s) for i, (r, s) in enumerate(zip(rows, SCORES, strict=True))]
    lines[1] = change(lines[1])
    path = tmp_path / "s.jsonl"
    path.write_text("".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines))
    with pytest.raises(DataError, match=fragment):
        read_samples(path, task.labels)


def test_ingest_cli_writes_predictions_and_scores_against_other_systems(tmp_path, capsys,
                                                                        repo_root):
    task, rows = exported_task(tmp_path)
    samples = write_samples(tmp_path / "s.jsonl", rows)
    other = tmp_path / "base-loglik.jsonl"
    write_jsonl(other, [{"id": r["id"], "prompt_sha256": "x", "raw": "neutral",
                         "parsed": "neutral", "target": r["label"]} for r in rows])
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"score": {"n_boot": 50, "seed": 0}}))
    out = tmp_path / "lmeval_base-loglik.jsonl"
    code = ingest_main(["--samples", str(samples), "--task", str(task.yaml_path), "--out",
                        str(out), "--compare", str(other), "--params", str(params),
                        "--markdown", str(tmp_path / "t.md")])
    assert code == 0
    preds, meta = read_jsonl(out), read_json(out.with_suffix(".meta.json"))
    assert len(preds) == 5 and meta["system"] == "lmeval_base-loglik" and meta["n"] == 5
    assert meta["kind"] == "base" and meta["label_distribution"]["neutral"] == 1
    table = capsys.readouterr().out
    assert table == (tmp_path / "t.md").read_text()
    assert "| lmeval_base-loglik | 0.600 [" in table  # 3 of 5 right
    assert "| base-loglik | 0.200 [" in table and "| -0.400 | " in table

    bad = tmp_path / "bad.jsonl"
    bad.write_text(samples.read_text() + "{\n")
    code = ingest_main(["--samples", str(bad), "--task", str(task.yaml_path), "--out",
                        str(out), "--params", str(params)])
    assert code == 2 and f"{bad}:6: not a valid UTF-8 JSON line" in capsys.readouterr().err


# --- the comparison math ---------------------------------------------------------------------

def test_compare_scores_counts_agreement_differences_and_offsets():
    a = [[-1.0, -2.0, -3.0], [-2.0, -1.0, -3.0], [-1.0, -1.0, -0.5]]
    b = [[-1.5, -2.5, -3.5], [-1.0, -1.2, -3.0], [-1.0, -1.0, -0.5]]
    r = cm.compare_scores(a, b, [0, 1, 2], ("x", "y"))
    assert r["n"] == 3 and r["agreement"] == pytest.approx(2 / 3)
    assert r["max_abs_loglik_diff"] == pytest.approx(1.0)
    assert r["max_offset_spread"] == pytest.approx(1.2)  # row 2: -1.0 and +0.2
    assert (r["accuracy_x"], r["accuracy_y"]) == (1.0, pytest.approx(2 / 3))
    shifted = [[x - 7.0 for x in row] for row in a]  # one more token scored before each label
    same = cm.compare_scores(a, shifted, [0, 1, 2])
    assert same["agreement"] == 1.0 and same["max_offset_spread"] == pytest.approx(0.0)
    with pytest.raises(ValueError, match="same non-zero number"):
        cm.compare_scores(a, b[:2], [0, 1, 2])


def test_argmax_ties_answer_counts_split_preference_and_goals():
    assert cm.argmax([-1.0, -1.0, -2.0]) == 0
    assert cm.answer_counts([[0, -1, -2], [0, -1, -2]], LABELS) == {
        "negative": 2, "neutral": 0, "positive": 0}
    # tunebench split: boundary -0.5 then label; lm-eval split: whitespace + label at once
    pref = cm.split_preference([[-2.0, -1.0, -1.0]], [-0.5], [[-2.0, -2.5, -1.5]])
    assert pref == {"lmeval_split_more_likely": pytest.approx(1 / 3),
                    "tunebench_split_more_likely": pytest.approx(1 / 3),
                    "equally_likely": pytest.approx(1 / 3),  # -1.5 vs -0.5 - 1.0: same tokens
                    "mean_log_ratio": pytest.approx((0.5 - 1.0 + 0.0) / 3)}
    entry = {"agreement": 0.996, "max_abs_loglik_diff": 2e-3, "accuracy_tunebench": 0.5,
             "accuracy_lmeval": 0.5, "speed_ratio": 1.9}
    assert cm.goals_met(entry) == {"agreement": True, "max_abs_loglik_diff": False,
                                   "accuracy_equal": True, "speed_ratio": False}
    assert math.isclose(cm.speed(10, 2.0), 5.0) and cm.speed(1, 0.0) > 0


def test_render_table_shows_every_task_and_system():
    entry = {"n": 4, "prompt_format": "chat", "agreement": 1.0, "max_abs_loglik_diff": 2e-6,
             "accuracy_tunebench": 0.5, "accuracy_lmeval": 0.5, "tunebench_examples_per_s": 30.0,
             "lmeval_examples_per_s": 10.0, "speed_ratio": 3.0, "speed_ratio_end_to_end": 4.5,
             "split": {"agreement": 1.0, "max_offset_spread": 1e-6,
                       "answers": {"tunebench_split": {"a": 3, "b": 1},
                                   "lmeval_split": {"a": 3, "b": 1}},
                       "lmeval_split_more_likely": 0.25, "tunebench_split_more_likely": 0.75,
                       "equally_likely": 0.0, "mean_log_ratio": 0.5},
             "fp32_vs_4bit": {"agreement": 0.75, "max_abs_loglik_diff": 1.5}}
    table = render_table({"results": {"fpb": {"base": entry, "tuned": {**entry,
                                                                        "fp32_vs_4bit": None}}}})
    assert "| fpb | base | chat | 4 | 100.0% | 2.0e-06 | 0.500 | 0.500 | 30.0 | 10.0 | " \
           "3.00x (4.50x) |" in table
    assert "| fpb | base | 100.0% | 1.0e-06 | a 3 / b 1 | a 3 / b 1 | 25% / 75% / 0% | 75.0% | " \
           "1.50 |" in table
    assert "| fpb | tuned | 100.0% | 1.0e-06 | a 3 / b 1 | a 3 / b 1 | 25% / 75% / 0% | - | - |" \
           in table


# --- with lm-eval installed ------------------------------------------------------------------

def tiny_adapter(model_dir: Path, out: Path) -> Path:
    """A LoRA adapter with non-zero random weights, so the tuned model differs from base."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(1)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                        init_lora_weights=False, task_type="CAUSAL_LM")
    get_peft_model(model, config).save_pretrained(out)
    return out


def test_lmevals_own_split_and_engine_match_tunebench_on_the_tiny_model(tiny_model_dir,
                                                                        tokenizer):
    pytest.importorskip("lm_eval", reason="lm-eval (the optional extra `crosscheck`) is not "
                        "installed: pip install -e '.[crosscheck]'")
    from tunebench.evaluation.crosscheck_run import lmeval_on_tokens, lmeval_pairs, load_lmeval
    from tunebench.models.loading import ModelSpec, apply_prompt_format, load_causal_lm
    from tunebench.models.loglik import loglik_scores

    lm = load_lmeval(str(tiny_model_dir), None, batch_size=2)
    spec = ModelSpec.from_params("tiny", {"source": "local", "path": str(tiny_model_dir)})
    model = load_causal_lm(spec, str(tiny_model_dir), quantize=False)
    for fmt in ("raw", "chat"):
        prompts = [apply_prompt_format(tokenizer, FRAME.format(t), fmt) for t in TEXTS]
        _, stripped, natural = natural_split(prompts, tuple(LABELS), "toy")
        assert lmeval_pairs(lm, prompts, LABELS) == token_pairs(tokenizer, stripped, natural)
        ours = loglik_scores(model, tokenizer, prompts, LABELS, 2, True, False)
        theirs = lmeval_on_tokens(lm, token_pairs(tokenizer, prompts, LABELS))
        assert cm.compare_scores(ours, theirs, [0] * 5)["max_abs_loglik_diff"] < 1e-4


def test_a_missing_adapter_stops_the_crosscheck_before_any_model_runs(tmp_path,
                                                                       tiny_model_dir, capsys):
    pytest.importorskip("lm_eval", reason="lm-eval (the optional extra `crosscheck`) is not "
                        "installed: pip install -e '.[crosscheck]'")
    from tunebench.evaluation.crosscheck import main

    root = write_instructions(tmp_path / "instructions")
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(toy_params(tmp_path, tiny_model_dir)))
    code = main(["--params", str(params), "--datasets", "toy", "--instructions", str(root),
                 "--models", str(tmp_path / "models"), "--work-dir", str(tmp_path / "work"),
                 "--out", str(tmp_path / "c.json")])
    err = capsys.readouterr().err
    assert code == 2 and "models/toyrun/adapter_model.safetensors: the tuned adapter" in err
    assert not (tmp_path / "c.json").exists()


@pytest.mark.slow
def test_crosscheck_end_to_end_on_the_tiny_model(tmp_path, tiny_model_dir):
    pytest.importorskip("lm_eval", reason="lm-eval (the optional extra `crosscheck`) is not "
                        "installed: pip install -e '.[crosscheck]'")
    from tunebench.evaluation.crosscheck import main

    root = write_instructions(tmp_path / "instructions")
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(toy_params(tmp_path, tiny_model_dir)))
    tiny_adapter(tiny_model_dir, tmp_path / "models" / "toyrun")
    out = tmp_path / "crosscheck.json"
    code = main(["--params", str(params), "--datasets", "toy", "--n", "4", "--threads", "1",
                 "--batch-size", "3",
                 "--instructions", str(root), "--models", str(tmp_path / "models"),
                 "--work-dir", str(tmp_path / "work"), "--out", str(out)])
    assert code == 0
    record = read_json(out)
    assert record["settings"]["batch_size"] == 3 and record["packages"]["lm_eval"]
    assert set(record["results"]["toy"]) == {"base", "tuned", "base-raw"}
    for system, e in record["results"]["toy"].items():
        assert e["n"] == 4 and e["token_mismatches"] == 0, system
        assert e["agreement"] == 1.0 and e["max_abs_loglik_diff"] < 1e-4, system
        assert e["lmeval_on_tunebench_split"]["max_abs_loglik_diff"] < 1e-4, system
        assert e["goals_met"]["accuracy_equal"] and e["split"]["n_boundary_consistent"] == 4
        assert e["fp32_vs_4bit"]["n"] == 4 and e["speed_ratio"] > 0
    chat, raw = record["results"]["toy"]["base"], record["results"]["toy"]["base-raw"]
    assert chat["split"]["max_offset_spread"] < 1e-4  # chat: one shared newline token
    assert chat["split"]["equally_likely"] == 1.0 and raw["split"]["equally_likely"] < 1.0
    assert raw["split"]["max_offset_spread"] > 1e-3  # raw: " neutral" is another token
    tuned = record["results"]["toy"]["tuned"]["accuracy_tunebench"]
    assert record["adapters"]["toyrun"]["sha256"] and isinstance(tuned, float)
    assert "| toy | tuned | raw | 4 |" in render_table(record)
