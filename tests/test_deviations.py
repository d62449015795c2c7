"""Published-recipe presets and the generated deviations table: every preset holds every row
and names params keys that exist; a params change moves the right row; the paper profile
follows FinGPT v3.3 where the code can; `--check` catches a stale docs/deviations.md and the
committed one is current. No model or heavy library is loaded."""

from __future__ import annotations

import copy
import re

import pytest
import yaml

from tests.conftest import REPO_ROOT
from tunebench.config import ConfigError
from tunebench.evaluation import deviations
from tunebench.evaluation.presets import SETTINGS, load_preset, load_presets
from tunebench.models.loading import ModelSpec
from tunebench.models.train_qlora import TrainConfig
from tunebench.running import profile
from tunebench.running.params import DATASET_KEYS, RUN_KEYS

PRESETS_DIR = REPO_ROOT / "profiles" / "presets"
PRESETS = load_presets(PRESETS_DIR)
TASKS = REPO_ROOT / "tasks"
BASE = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())
ROWS = [key for key, _ in SETTINGS]


def table(params, run):
    """{setting: Row} of one run."""
    rows = deviations.deviation_rows(params, PRESETS, TASKS)
    return {r.setting: r for r in rows if r.run == run}


def paper(variant):
    return deviations.compose_profile(BASE, "paper", variant, REPO_ROOT / "profiles")


def test_presets_load_and_hold_every_row():
    assert set(PRESETS) == {"fingpt-v3.3", "fingpt-benchmark", "hr-bias", "sarcasm",
                            "flan-t5-summarization", "distilbert-imdb"}
    for name, preset in PRESETS.items():
        assert list(preset["settings"]) == ROWS, name  # every row, in table order
        for key, entry in preset["settings"].items():
            assert entry["text"], (name, key)
            assert ("how" in entry) != ("missing" in entry), (name, key)


def test_fingpt_presets_hold_the_issue_settings():
    v33 = {k: e["value"] for k, e in PRESETS["fingpt-v3.3"]["settings"].items()}
    assert v33["base_model"] == ["NousResearch/Llama-2-13b-hf"]
    assert {d: (s["rows"], s["replicate"]) for d, s in v33["train_data"].items()} == {
        "fpb": (3634, 6), "fiqa_sa": (938, 21), "tfns": (9543, 2), "nwgi": (16184, 1)}
    assert (v33["epochs"], v33["learning_rate"], v33["weight_decay"]) == (2, 1e-4, 0.01)
    assert v33["warmup"]["steps"] == 1000
    assert v33["effective_batch"] == {"batch_size": 4, "grad_accum": 8, "processes": 1}
    assert (v33["lora_targets"], v33["lora_r"], v33["lora_alpha"], v33["lora_dropout"]) == (
        ["q_proj", "v_proj"], 8, 32, 0.1)
    assert (v33["precision"], v33["prompt_loss"], v33["over_length"], v33["parser"]) == (
        "int8", "in_loss", "drop", "fingpt")
    assert v33["label_targets"]["nwgi"] == 7
    assert v33["test_split"]["fiqa_sa"]["rows"] == 275
    assert "0.882" in PRESETS["fingpt-v3.3"]["settings"]["metric"]["text"]
    bench = {k: e["value"] for k, e in PRESETS["fingpt-benchmark"]["settings"].items()}
    assert bench["warmup"] == {"ratio": 0.05, "schedule": "linear"}
    assert bench["effective_batch"] == {"batch_size": 4, "grad_accum": 8, "processes": 4}
    assert (bench["lora_targets"], bench["precision"]) == (["q_proj", "k_proj", "v_proj"],
                                                           "float16")
    assert bench["validation"] == {"share": 0.2, "select": "best"}


# A preset's `how` names params keys: each must be one the code reads.
KEYS = {
    r"train_qlora\.(\w+)": {f.name for f in TrainConfig.__dataclass_fields__.values()},
    r"models\.<m>\.(\w+)": set(ModelSpec.__dataclass_fields__) - {"name"},
    r"datasets\.(?:<d>|\w+)\.(\w+)": DATASET_KEYS,
    r"runs\.<run>\.(\w+)": RUN_KEYS,
    r"predict\.(\w+)": set(BASE["predict"]),
    r"fetch\.(\w+)": set(BASE["fetch"]),
}


def test_every_how_names_a_params_key_the_code_reads():
    seen = 0
    for name, preset in PRESETS.items():
        for key, entry in preset["settings"].items():
            for pattern, known in KEYS.items():
                for found in re.findall(pattern, entry.get("how", "")):
                    seen += 1
                    assert found in known, f"{name}: settings.{key}.how names {found!r}"
    assert seen > 50


def test_settings_marked_missing_are_missing_from_the_code():
    """When one of these lands, its preset entries should move from `missing` to `how`."""
    assert "warmup_steps" not in TrainConfig.__dataclass_fields__
    with pytest.raises(ValueError, match="warmup_ratio"):
        TrainConfig.from_params({"warmup_ratio": 1000})
    assert "load_in_8bit" not in ModelSpec.__dataclass_fields__
    assert not {"prompt_loss", "over_length"} & set(TrainConfig.__dataclass_fields__)
    v33 = PRESETS["fingpt-v3.3"]["settings"]
    for key in ("warmup", "precision", "prompt_loss", "over_length", "label_targets"):
        assert "missing" in v33[key], key


def test_cpu_default_fingpt_departs_from_the_benchmark_recipe():
    assert BASE["recipes"]["fingpt"] == "fingpt-benchmark"
    rows = table(BASE, "fingpt")
    assert list(rows) == ROWS
    expected = {"warmup": "yes", "weight_decay": "yes", "lora_r": "yes", "metric": "yes",
                "learning_rate": "no", "epochs": "no", "lora_targets": "no", "parser": "yes",
                "validation": "no", "test_split": "no", "precision": "no",
                "prompt_loss": "not expressible", "over_length": "not expressible",
                "train_data": "unknown"}
    assert {k: rows[k].match for k in expected} == expected
    assert rows["learning_rate"].here == "0.0002"
    # Strict parsing, and score reads the same stored answers with FinGPT's rule too.
    assert rows["parser"].here.startswith("strict; the same answers also read by fingpt")
    assert rows["prompt_loss"].how.startswith("missing: ")


def _set_lr(p):
    p["runs"]["fingpt"]["train_qlora"]["learning_rate"] = 0.0001


def _set_targets(p):
    p["models"]["smollm2"]["lora_targets"] = ["q_proj", "k_proj", "v_proj"]


def _set_batch(p):
    p["runs"]["fingpt"]["train_qlora"].update(batch_size=4, grad_accum=8)
    p["runs"]["fingpt"]["launch"] = {"config": "configs/accelerate/ddp.yaml",
                                     "num_processes": 4}


def _hold_out(p):
    for dataset in ("fpb", "fiqa_sa", "tfns", "nwgi"):
        p["datasets"][dataset]["validation_share"] = 0.2


def _set_parser(p):
    p["predict"]["parser"] = "fingpt"


def _fp16(p):
    p["models"]["smollm2"].update(load_in_4bit=False, dtype="float16")


@pytest.mark.parametrize(("setting", "change", "here"), [
    ("learning_rate", _set_lr, "0.0001"),
    ("lora_targets", _set_targets, "q_proj, k_proj, v_proj"),
    ("effective_batch", _set_batch, "4 × 8 × 4 processes = 128"),
    ("validation", _hold_out, "fpb 20% of train held out"),
    ("precision", _fp16, "float16 weights, no quantization"),
])
def test_a_params_change_moves_its_row(setting, change, here):
    before = table(BASE, "fingpt")
    params = copy.deepcopy(BASE)
    change(params)
    after = table(params, "fingpt")
    assert before[setting].match == "no" and after[setting].match == "yes"
    assert after[setting].here.startswith(here) and before[setting].here != after[setting].here
    assert {k: r for k, r in after.items() if k != setting} == {
        k: r for k, r in before.items() if k != setting}


def test_parsing_with_fingpts_rule_alone_moves_the_parser_row():
    params = copy.deepcopy(BASE)
    _set_parser(params)
    before, after = table(BASE, "fingpt")["parser"], table(params, "fingpt")["parser"]
    assert (before.match, after.match) == ("yes", "yes") and after.here == "fingpt"
    assert before.here != after.here


def test_paper_fingpt_follows_v33_where_the_code_can():
    params = paper("mistral7b-fingpt")
    assert params["recipes"]["fingpt"] == "fingpt-v3.3"
    rows = table(params, "fingpt")
    yes = {"prompt_format", "epochs", "learning_rate", "weight_decay", "effective_batch",
           "lora_targets", "lora_r", "lora_alpha", "lora_dropout", "max_seq_len", "metric",
           "parser"}
    not_expressible = {"base_model", "warmup", "precision", "prompt_loss", "over_length",
                       "label_targets"}
    assert {k for k, r in rows.items() if r.match == "yes"} == yes
    assert {k for k, r in rows.items() if r.match == "not expressible"} == not_expressible
    # Strict parsing, with FinGPT's rule read from the same answers (so: yes); the mirror's
    # FiQA-SA and NWGI splits are not FinGPT's.
    assert {k: r.match for k, r in rows.items() if k in ("parser", "train_data", "test_split",
                                                          "validation")} == {
        "parser": "yes", "train_data": "no", "test_split": "no", "validation": "unknown"}
    hub = copy.deepcopy(params)
    hub["fetch"]["mirror"] = None  # FinGPT's own splits and training rows, from the Hub
    assert {k: r.match for k, r in table(hub, "fingpt").items()
            if k in ("train_data", "test_split")} == {"train_data": "yes", "test_split": "yes"}


def test_an_installed_published_adapter_matches_every_training_row():
    params = paper("fingpt-v33")
    rows = table(params, "fingpt_v33")
    for key in deviations.TRAINING:
        assert rows[key].match == "yes", key
        assert "FinGPT/fingpt-sentiment_llama2-13b_lora" in rows[key].here
    assert rows["parser"].match == "yes"
    assert rows["base_model"].match == "not expressible"  # chat weights, not NousResearch's
    other = copy.deepcopy(params)
    other["runs"]["fingpt_v33"]["adapter"]["id"] = "someone/else"
    assert {table(other, "fingpt_v33")[k].match for k in deviations.TRAINING} == {"no"}


@pytest.mark.parametrize("variant", profile.runnable("paper", REPO_ROOT / "profiles"))
def test_every_paper_run_has_a_table(variant):
    params = paper(variant)
    rows = deviations.deviation_rows(params, PRESETS, TASKS)
    assert {r.run for r in rows} == set(params["runs"])
    assert len(rows) == len(ROWS) * len(params["runs"])
    assert {r.match for r in rows} <= set(deviations.MATCHES)


def test_unknown_preset_is_refused_and_absent_runs_are_skipped():
    params = copy.deepcopy(BASE)
    params["recipes"] = {"fingpt": "fingpt-v3"}
    with pytest.raises(ConfigError, match=r"recipes\.fingpt: no preset 'fingpt-v3'.*fingpt-v3\.3"):
        deviations.deviation_rows(params, PRESETS, TASKS)
    params["recipes"] = {"fingpt": "fingpt-v3.3", "no_such_run": "sarcasm"}
    assert {r.run for r in deviations.deviation_rows(params, PRESETS, TASKS)} == {"fingpt"}


def _write_preset(tmp_path, edit):
    data = yaml.safe_load((PRESETS_DIR / "sarcasm.yaml").read_text())
    edit(data)
    path = tmp_path / "sarcasm.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@pytest.mark.parametrize(("edit", "message"), [
    (lambda d: d["settings"].pop("epochs"), r"settings: missing required field\(s\) epochs"),
    (lambda d: d["settings"]["epochs"].update(missing="x"), r"settings\.epochs: give exactly"),
    (lambda d: d["settings"]["lora_r"].update(value="eight"), r"settings\.lora_r\.value"),
    (lambda d: d["settings"]["warmup"].update(value={"steps": 1, "ratio": 0.1}),
     r"settings\.warmup\.value"),
    (lambda d: d.update(name="other"), "differs from the file name"),
    (lambda d: d["settings"]["epochs"].update(valeu=1), r"unknown key 'valeu'.*'value'"),
])
def test_a_bad_preset_names_its_file_and_key(tmp_path, edit, message):
    path = _write_preset(tmp_path, edit)
    with pytest.raises(ConfigError, match=message) as err:
        load_preset(path)
    assert str(path) in str(err.value)


def test_render_markdown_escapes_cells():
    row = deviations.Row("r", "p", "epochs", "epochs", "a | b", "<x>", "yes", "k")
    text = deviations.render_markdown([row])
    assert "### run `r` vs preset `p`" in text and "Rows: 1 yes." in text
    assert "| epochs | a \\| b | &lt;x&gt; | **yes** | k |" in text


def test_check_fails_when_the_doc_is_stale(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(REPO_ROOT)
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(BASE, sort_keys=False))
    out = tmp_path / "deviations.md"
    args = ["--params", str(params), "--out", str(out)]
    assert deviations.main(args) == 0
    assert deviations.main([*args, "--check"]) == 0
    changed = copy.deepcopy(BASE)
    _set_lr(changed)
    params.write_text(yaml.safe_dump(changed, sort_keys=False))
    assert deviations.main([*args, "--check"]) == 1
    assert "is stale" in capsys.readouterr().err
    assert deviations.main(args) == 0
    assert "| 0.0001 | **yes** |" in out.read_text()  # now the benchmark's 1e-4
    assert deviations.main([*args, "--check"]) == 0


def test_the_committed_doc_is_current(monkeypatch):
    monkeypatch.chdir(REPO_ROOT)
    assert deviations.main(["--check"]) == 0, "run `python -m tunebench.evaluation.deviations`"


def test_help(capsys):
    with pytest.raises(SystemExit) as exit_:
        deviations.main(["--help"])
    assert exit_.value.code == 0 and "--check" in capsys.readouterr().out


def test_report_section_follows_the_params():
    """The report's deviations section has one table per compared run, generated from the
    params it is given: a learning-rate change shows in it."""
    text = deviations.report_section(BASE, PRESETS, TASKS)
    assert text.startswith("## Deviations from the published recipes")
    runs = deviations.recipes(BASE, PRESETS)
    assert text.count("### run `") == len(runs) >= 1
    fingpt = text.split("### run `fingpt`")[1].split("### run")[0]
    assert "| learning rate |" in fingpt and "| 0.0002 |" in fingpt
    params = copy.deepcopy(BASE)
    _set_lr(params)
    changed = deviations.report_section(params, PRESETS, TASKS)
    assert changed.count("| 0.0001 |") == text.count("| 0.0001 |") + 1
    params["recipes"] = {}
    assert "No run names a published recipe" in deviations.report_section(params, PRESETS,
                                                                           TASKS)
