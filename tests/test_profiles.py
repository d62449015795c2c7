"""Profiles: every config of every runnable variant builds (quantization, LoRA, training
arguments, accelerate), no weights downloaded; blocked and unpinned variants fail clearly;
`dvc repro --dry` of the paper profile; the GPU workflow's structure and shell."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO_ROOT
from tunebench import profile
from tunebench.config import ConfigError
from tunebench.hub import SHA

PROFILES = REPO_ROOT / "profiles"
BASE = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())
PAPER_RUNNABLE = ["mistral7b-tfns", "mistral7b-fingpt", "mistral7b-hr-bias", "mistral7b-sarc",
                  "chatglm2-tfns"]
FAKE_SHA = "0123456789abcdef0123456789abcdef01234567"  # tests only, never written to a profile


def cases():
    return [(name, v) for name in ("paper", "gpu-smoke")
            for v in profile.runnable(name, PROFILES)]


def build(name, variant):
    return profile.build(name, variant, BASE, PROFILES, REPO_ROOT / "tasks")[1]


def runs_settings(params):
    """(run, merged train settings, launch) as train-qlora computes them."""
    for run, entry in params["runs"].items():
        yield run, {**params["train_qlora"], **(entry.get("train_qlora") or {})}, \
            entry.get("launch")


def test_runnable_variants():
    assert profile.runnable("paper", PROFILES) == PAPER_RUNNABLE
    assert profile.runnable("gpu-smoke", PROFILES) == ["default"]


@pytest.mark.parametrize(("name", "variant"), cases())
def test_variant_composes_and_validates(name, variant, monkeypatch):
    monkeypatch.chdir(REPO_ROOT)  # accelerate config paths are relative to the repo root
    params = build(name, variant)
    assert params["profile"] == {"name": name, "variant": variant}
    for key in ("fetch", "label_transform", "score", "paths"):  # untouched sections survive
        assert key in params


def test_paper_is_full_size_and_pinned():
    profile_data = profile.load_profile("paper", PROFILES)
    assert set(profile_data["params"]["format_instructions"]["caps"].values()) == {None}
    for name, model in profile_data["params"]["models"].items():
        assert model["source"] == "hub", name
        assert SHA.fullmatch(model["revision"]), name


def test_trust_remote_code_only_for_chatglm2():
    models = profile.load_profile("paper", PROFILES)["params"]["models"]
    assert {n for n, m in models.items() if m.get("trust_remote_code")} == {"chatglm2"}


def test_published_hyperparameters():
    fingpt = build("paper", "mistral7b-fingpt")
    assert fingpt["runs"]["fingpt"]["mixture"] == {"fpb": 6, "fiqa_sa": 21, "tfns": 2, "nwgi": 1}
    cfg = fingpt["train_qlora"]
    assert (cfg["epochs"], cfg["learning_rate"], cfg["lora_r"], cfg["lora_alpha"],
            cfg["lora_dropout"], cfg["bf16"]) == (2, 1e-4, 8, 32, 0.1, False)
    assert fingpt["models"]["mistral7b"]["dtype"] == "float16"  # FinGPT trained in fp16
    sarc = build("paper", "mistral7b-sarc")
    _, settings, _ = next(runs_settings(sarc))
    from tunebench.train import TrainConfig

    c = TrainConfig.from_params(settings)
    assert (c.learning_rate, c.epochs, c.grad_accum, c.batch_size, c.optim, c.warmup_ratio,
            c.lr_scheduler, c.weight_decay, c.lora_r, c.lora_alpha, c.lora_dropout,
            c.max_seq_len) == (2e-5, 4, 8, 1, "paged_adamw_8bit", 0.3, "constant", 0.001, 8, 16,
                               0.05, 512)
    assert sarc["models"][sarc["model"]]["lora_targets"] == [
        "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj", "lm_head"]


@pytest.mark.parametrize(("name", "variant"), cases())
def test_library_configs_build(name, variant, monkeypatch):
    """The objects the stages build: BitsAndBytesConfig, LoraConfig, TrainingArguments,
    and the accelerate config each run launches with. No weights are loaded."""
    import torch
    from accelerate.commands.config.config_args import load_config_from_file
    from peft import LoraConfig
    from transformers import BitsAndBytesConfig

    from tunebench import train
    from tunebench.launch import LaunchSpec, accelerate_command
    from tunebench.params import benchmark_model

    monkeypatch.chdir(REPO_ROOT)
    params = build(name, variant)
    spec = benchmark_model(params)
    # models.load_causal_lm's quantization config, with the dtype a bf16 GPU would pick.
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    from tunebench.models import torch_dtype

    dtype = torch_dtype(spec)
    assert dtype in (torch.float16, torch.bfloat16)
    monkeypatch.undo()
    monkeypatch.chdir(REPO_ROOT)
    if spec.load_in_4bit:
        bnb = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                 bnb_4bit_use_double_quant=True, bnb_4bit_compute_dtype=dtype)
        assert bnb.load_in_4bit and bnb.bnb_4bit_compute_dtype == dtype
    for run, settings, launch in runs_settings(params):
        cfg = train.TrainConfig.from_params(settings, f"runs.{run}")
        lora = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                          target_modules=list(spec.lora_targets), bias="none",
                          task_type="CAUSAL_LM")
        assert set(lora.target_modules) == set(spec.lora_targets)
        if cfg.optim == "paged_adamw_8bit":
            # TrainingArguments checks bitsandbytes can page on CUDA; the CPU build cannot.
            cfg = train.TrainConfig.from_params({**settings, "optim": "adamw_torch"})
        args = train._training_args(cfg, str(REPO_ROOT / ".cache" / "unused"))
        assert args.learning_rate == cfg.learning_rate
        assert args.gradient_accumulation_steps == cfg.grad_accum
        assert args.per_device_train_batch_size == cfg.batch_size
        if launch is not None:
            spec_l = LaunchSpec.from_params(launch, f"runs.{run}.launch")
            accel = load_config_from_file(str(spec_l.config))
            assert accel.distributed_type.value == "MULTI_GPU"
            cmd = accelerate_command(spec_l, 2, "stages.train_qlora", ["--run", run], 12345)
            assert cmd[:4] == ["accelerate", "launch", "--config_file", str(spec_l.config)]


def test_fingpt_v33_needs_its_adapter_pinned():
    with pytest.raises(ConfigError, match=r"adapter.revision is 'UNPINNED'.*commits/main"):
        build("paper", "fingpt-v33")
    data = profile.load_profile("paper", PROFILES)
    assert "not pinned" in profile.blocker(data["variants"]["fingpt-v33"])


def test_fingpt_v33_builds_once_pinned(tmp_path):
    text = (PROFILES / "paper.yaml").read_text().replace("revision: UNPINNED",
                                                         f"revision: {FAKE_SHA}")
    (tmp_path / "paper.yaml").write_text(text)
    shutil.copytree(REPO_ROOT / "configs", tmp_path / "configs")
    _, params = profile.build("paper", "fingpt-v33", BASE, tmp_path, REPO_ROOT / "tasks")
    run = params["runs"]["fingpt_v33"]
    assert run["adapter"]["id"] == "FinGPT/fingpt-sentiment_llama2-13b_lora"
    assert params["models"][params["model"]]["id"] == "meta-llama/Llama-2-13b-chat-hf"
    assert params["predict"]["parser"] == "fingpt"


@pytest.mark.parametrize("variant", ["flan-t5-summarization", "distilbert-imdb"])
def test_other_families_are_listed_but_blocked(variant):
    with pytest.raises(ConfigError, match="cannot run yet: needs the"):
        build("paper", variant)


def test_layers_replace_whole_sections():
    prof = {"params": {"runs": {"a": {"mixture": {"x": 1}}}},
            "variants": {"v": {"params": {"datasets": {"x": {"run": "a"}}}}}}
    base = {"datasets": {"fpb": {"run": "fingpt"}, "y": {}}, "runs": {"fingpt": {}}, "keep": 1}
    out = profile.compose(base, prof, "p", "v")
    assert out["datasets"] == {"x": {"run": "a"}} and out["runs"] == {"a": {"mixture": {"x": 1}}}
    assert out["keep"] == 1 and out["profile"] == {"name": "p", "variant": "v"}


def test_apply_writes_params_and_refuses_unknown(tmp_path, monkeypatch):
    monkeypatch.chdir(REPO_ROOT)
    out = tmp_path / "params.yaml"
    shutil.copy(REPO_ROOT / "params.yaml", out)
    assert profile.main(["apply", "paper", "mistral7b-tfns", "--params", str(out)]) == 0
    written = yaml.safe_load(out.read_text())
    assert written["model"] == "mistral7b" and list(written["datasets"]) == ["tfns"]
    assert out.read_text().startswith("# Generated by")
    # Applying again over a generated file reads the committed CPU default instead.
    assert profile.main(["apply", "paper", "chatglm2-tfns", "--params", str(out),
                         "--base", str(REPO_ROOT / "params.yaml")]) == 0
    assert profile.main(["apply", "paper", "nope", "--params", str(out)]) == 2
    assert profile.main(["apply", "paper", "--params", str(out)]) == 2  # several variants


def test_validation_names_the_field():
    params = build("paper", "mistral7b-tfns")
    params["runs"]["tfns"]["mixture"] = {"tfns": 1, "fpb": 1}
    with pytest.raises(ConfigError, match=r"runs.tfns.mixture names"):
        profile.validate(params, REPO_ROOT / "tasks")


def placeholder_outputs(project: Path) -> None:
    """Empty stand-ins for every stage output. In a repo that never ran, `dvc repro --dry`
    stops at the first stage whose dependency (an upstream output) does not exist yet, as
    it hashes dependencies; with stand-ins (no lock file) every stage shows as changed."""
    from dvc.repo import Repo

    with Repo(str(project)) as repo:
        paths = [Path(out.fs_path) for stage in repo.index.stages for out in stage.outs]
    for path in paths:
        if path.suffix:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.touch()
        else:
            path.mkdir(parents=True, exist_ok=True)


@pytest.mark.slow
def test_dvc_repro_dry_of_the_paper_profile(tmp_path, mirror_dir):
    """Every runnable paper variant is a valid DVC pipeline (dvc repro --dry, in a copy)."""
    from tests.project import make_project, project_env, run

    for variant in PAPER_RUNNABLE:
        dest = make_project(tmp_path / variant, mirror_dir)
        for folder in ("profiles", "configs"):
            shutil.copytree(REPO_ROOT / folder, dest / folder)
        env = project_env(mirror_dir)
        run([sys.executable, "-m", "tunebench.profile", "apply", "paper", variant], dest, env)
        placeholder_outputs(dest)
        out = run(["dvc", "repro", "--dry"], dest, env)
        params = yaml.safe_load((dest / "params.yaml").read_text())
        for run_name in params["runs"]:
            assert f"train-qlora@{run_name}" in out, out[-2000:]
        for dataset in params["datasets"]:
            assert f"predict-tuned@{dataset}" in out and f"score@{dataset}" in out
        assert "Running stage 'report'" in out


# --- the GPU workflow -------------------------------------------------------------------

WORKFLOW = REPO_ROOT / ".github" / "workflows" / "gpu-bench.yml"


def load_workflow():
    data = yaml.safe_load(WORKFLOW.read_text())
    data["on"] = data.pop(True)  # YAML 1.1 reads the key `on` as true
    return data


def test_workflow_structure():
    wf = load_workflow()
    assert set(wf["on"]) == {"pull_request", "push", "workflow_dispatch"}
    assert wf["on"]["push"]["branches"] == ["main"]
    bench = wf["jobs"]["bench"]
    assert "self-hosted" in bench["runs-on"] and "gpu" in bench["runs-on"]
    assert bench["needs"] == "plan"
    assert "fromJSON(needs.plan.outputs.matrix)" in bench["strategy"]["matrix"]["include"]
    steps = bench["steps"]
    runs = "\n".join(s.get("run", "") for s in steps)
    assert 'make bench PROFILE="$PROFILE" VARIANT="$VARIANT"' in runs
    assert "dvc metrics diff origin/main --md" in runs and "$GITHUB_STEP_SUMMARY" in runs
    assert steps[0]["with"]["fetch-depth"] == 0
    upload = next(s for s in steps if s.get("uses", "").startswith("actions/upload-artifact"))
    paths = upload["with"]["path"].split()
    assert {"metrics/report.md", "metrics/plots"} <= set(paths)
    assert upload["if"] == "always()"
    assert bench["env"]["HF_TOKEN"] == "${{ secrets.HF_TOKEN }}"
    for job in wf["jobs"].values():
        for step in job["steps"]:
            assert "uses" in step or "run" in step


def test_workflow_plan_matches_profiles(monkeypatch):
    monkeypatch.chdir(REPO_ROOT)
    sys.path.insert(0, str(WORKFLOW.parent))
    try:
        import plan
    finally:
        sys.path.pop(0)
    assert plan.plan("pull_request", "") == [{"profile": "gpu-smoke", "variant": "default"}]
    assert [m["variant"] for m in plan.plan("push", "")] == PAPER_RUNNABLE
    assert plan.plan("workflow_dispatch", "mistral7b-sarc") == [
        {"profile": "paper", "variant": "mistral7b-sarc"}]
    with pytest.raises(SystemExit):
        plan.plan("workflow_dispatch", "fingpt-v33")


def test_workflow_yamllint_and_shellcheck(tmp_path):
    lint = subprocess.run(
        [sys.executable, "-m", "yamllint", "-s", "-d",
         "{extends: relaxed, rules: {line-length: {max: 100}}}", str(WORKFLOW.parent),
         str(PROFILES), str(REPO_ROOT / "configs")], capture_output=True, text=True)
    assert lint.returncode == 0, lint.stdout
    if shutil.which("shellcheck") is None:
        pytest.skip("shellcheck not installed (apt-get install shellcheck)")
    for job, spec in load_workflow()["jobs"].items():
        for i, step in enumerate(spec["steps"]):
            if "run" not in step:
                continue
            # ${{ }} expressions are substituted by Actions before bash sees the script.
            script = tmp_path / f"{job}-{i}.sh"
            script.write_text("#!/usr/bin/env bash\nset -eo pipefail\n" + step["run"])
            check = subprocess.run(["shellcheck", "-S", "warning", str(script)],
                                   capture_output=True, text=True)
            assert check.returncode == 0, f"{job} step {i}:\n{check.stdout}"
