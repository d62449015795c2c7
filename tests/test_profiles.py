"""Profiles: every config of every runnable variant builds (quantization, LoRA, training
arguments, accelerate), no weights downloaded; blocked and unpinned variants fail clearly;
mixed precision, dtype and device per machine (GPUs faked); `dvc repro --dry` of the paper
profile; the GPU workflow's structure and shell."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO_ROOT
from tunebench.config import ConfigError
from tunebench.running import profile
from tunebench.running.hub import SHA

PROFILES = REPO_ROOT / "profiles"
TASKS = REPO_ROOT / "tasks"
BASE = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())
PAPER_RUNNABLE = ["mistral7b-tfns", "mistral7b-fingpt", "mistral7b-hr-bias", "mistral7b-sarc",
                  "chatglm2-tfns", "fingpt-v33", "flan-t5-summarization", "distilbert-imdb"]
FAKE_SHA = "0123456789abcdef0123456789abcdef01234567"  # tests only, never written to a profile
FLAN = "flan-t5-summarization"  # BERTScore with a hub encoder (roberta-large)


def cases():
    return [(name, v) for name in ("paper", "gpu-smoke", "cpu-quick")
            for v in profile.runnable(name, PROFILES)]


def build(name, variant):
    return profile.build(name, variant, BASE, PROFILES, REPO_ROOT / "tasks")[1]


def runs_settings(params):
    """(run, merged train settings, launch) as train-qlora computes them."""
    for run, entry in params["runs"].items():
        yield run, {**params["train_qlora"], **(entry.get("train_qlora") or {})}, \
            entry.get("launch")


def fake_gpu(monkeypatch, native_bf16: bool | None, count: int = 1) -> None:
    """None: no CUDA. True: an Ampere+ GPU. False: an older GPU (a T4 or V100), where torch's
    is_bf16_supported() still says yes unless including_emulation=False."""
    import torch

    cuda = native_bf16 is not None
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count if cuda else 0)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported",
                        lambda including_emulation=True: cuda and (native_bf16
                                                                   or including_emulation))


def test_runnable_variants():
    assert profile.runnable("paper", PROFILES) == PAPER_RUNNABLE
    assert profile.runnable("gpu-smoke", PROFILES) == ["default"]
    assert profile.runnable("cpu-quick", PROFILES) == ["default"]


def test_cpu_quick_keeps_every_dataset_on_tiny_caps():
    quick = build("cpu-quick", "default")
    assert quick["datasets"].keys() == BASE["datasets"].keys()
    assert quick["runs"] == BASE["runs"]  # the same runs and mixtures, smaller samples
    for name, entry in quick["datasets"].items():
        assert entry["caps"]["test"] <= 48 and entry["caps"]["train"] <= 64, name
    assert quick["train_qlora"]["max_steps"] == 4


def test_smoke_must_be_a_boolean(tmp_path):
    (tmp_path / "odd.yaml").write_text(yaml.safe_dump(
        {"description": "x", "smoke": "yes", "params": {}, "variants": {"v": {"params": {}}}}))
    with pytest.raises(ConfigError, match="smoke must be true or false, not 'yes'"):
        profile.load_profile("odd", tmp_path)


@pytest.mark.parametrize(("name", "variant"), cases())
def test_variant_composes_and_validates(name, variant, monkeypatch):
    monkeypatch.chdir(REPO_ROOT)  # accelerate config paths are relative to the repo root
    params = build(name, variant)
    smoke = {"smoke": True} if name == "cpu-quick" else {}  # only that one is marked smoke
    assert params["profile"] == {"name": name, "variant": variant, **smoke}
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
    from tunebench.models.train_qlora import TrainConfig

    c = TrainConfig.from_params(settings)
    assert (c.learning_rate, c.epochs, c.grad_accum, c.batch_size, c.optim, c.warmup_ratio,
            c.lr_scheduler, c.weight_decay, c.lora_r, c.lora_alpha, c.lora_dropout,
            c.max_seq_len) == (2e-5, 4, 8, 1, "paged_adamw_8bit", 0.3, "constant", 0.001, 8, 16,
                               0.05, 512)
    assert sarc["models"][sarc["model"]]["lora_targets"] == [
        "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj", "lm_head"]


def check_library_configs(params, monkeypatch):
    """The objects the stages build: BitsAndBytesConfig (every model the params use, with
    the dtype a bf16 GPU would pick), LoraConfig of each run's family, TrainingArguments, and
    the accelerate config each run launches with. No weights are loaded."""
    import torch
    from accelerate.commands.config.config_args import load_config_from_file

    from tunebench.models import engine
    from tunebench.models import train_qlora as train
    from tunebench.models.encoder import HEAD_NAMES
    from tunebench.models.families import family
    from tunebench.models.loading import bnb_4bit_config, torch_dtype
    from tunebench.running.launch import LaunchSpec, accelerate_command
    from tunebench.running.params import model_spec, run_model

    specs = {key: model_spec(params, key, where)
             for where, key in profile.model_keys(params, REPO_ROOT / "tasks")}
    fake_gpu(monkeypatch, native_bf16=True)
    dtypes = {key: torch_dtype(spec) for key, spec in specs.items()}
    monkeypatch.undo()
    monkeypatch.chdir(REPO_ROOT)
    for key, spec in specs.items():
        assert dtypes[key] == (torch.bfloat16 if spec.dtype == "auto"
                               else getattr(torch, spec.dtype)), key
        if spec.load_in_4bit:  # models.load_causal_lm's / models.load_kwargs' recipe
            heads = HEAD_NAMES if spec.family == "encoder_cls" else ()
            bnb = bnb_4bit_config(dtypes[key], heads)
            assert bnb.load_in_4bit and bnb.bnb_4bit_compute_dtype == dtypes[key]
    for run, settings, launch in runs_settings(params):
        spec = run_model(params, run)
        cfg = train.TrainConfig.from_params(settings, f"runs.{run}")
        lora = engine.lora_config(spec, cfg, family(spec).TASK_TYPE,
                                  ["classifier"] if spec.family == "encoder_cls" else None)
        assert set(lora.target_modules) == set(spec.lora_targets)
        if cfg.optim == "paged_adamw_8bit":
            # TrainingArguments checks bitsandbytes can page on CUDA; the CPU build cannot.
            cfg = train.TrainConfig.from_params({**settings, "optim": "adamw_torch"})
        args = engine.training_args(cfg, str(REPO_ROOT / ".cache" / "unused"))
        assert args.learning_rate == cfg.learning_rate
        assert args.gradient_accumulation_steps == cfg.grad_accum
        assert args.per_device_train_batch_size == cfg.batch_size
        assert args.fp16 is False  # this machine has no GPU: never fp16
        if launch is not None:
            spec_l = LaunchSpec.from_params(launch, f"runs.{run}.launch")
            accel = load_config_from_file(str(spec_l.config))
            assert accel.distributed_type.value == "MULTI_GPU"
            cmd = accelerate_command(spec_l, 2, "stages.train_qlora", ["--run", run], 12345)
            assert cmd[:4] == ["accelerate", "launch", "--config_file", str(spec_l.config)]


@pytest.mark.parametrize(("name", "variant"), cases())
def test_library_configs_build(name, variant, monkeypatch):
    monkeypatch.chdir(REPO_ROOT)
    check_library_configs(build(name, variant), monkeypatch)


def test_fingpt_v33_runs_with_its_adapter_explicitly_unpinned():
    """No commit of the v3.3 adapter is known: it says pinned: false, so the variant runs
    (its provenance flags the run unpinned); an unpinned revision without it still blocks."""
    data = profile.load_profile("paper", PROFILES)
    assert profile.blocker(data["variants"]["fingpt-v33"]) is None
    params = build("paper", "fingpt-v33")
    adapter = params["runs"]["fingpt_v33"]["adapter"]
    assert (adapter["id"], adapter["revision"], adapter["pinned"]) == (
        "FinGPT/fingpt-sentiment_llama2-13b_lora", "main", False)
    assert params["models"][params["model"]]["id"] == "meta-llama/Llama-2-13b-chat-hf"
    assert params["predict"]["parser"] == "fingpt"
    del adapter["pinned"]
    with pytest.raises(ConfigError, match=r"adapter.revision is 'main'.*commits/main"):
        profile.validate(params, TASKS)
    variant = data["variants"]["fingpt-v33"]
    del variant["params"]["runs"]["fingpt_v33"]["adapter"]["pinned"]
    assert "not pinned" in profile.blocker(variant)


def test_fingpt_v33_builds_once_pinned(tmp_path):
    text = (PROFILES / "paper.yaml").read_text().replace(
        "revision: main\n            pinned: false", f"revision: {FAKE_SHA}")
    assert FAKE_SHA in text
    (tmp_path / "paper.yaml").write_text(text)
    shutil.copytree(REPO_ROOT / "configs", tmp_path / "configs")
    _, params = profile.build("paper", "fingpt-v33", BASE, tmp_path, REPO_ROOT / "tasks")
    adapter = params["runs"]["fingpt_v33"]["adapter"]
    assert adapter["revision"] == FAKE_SHA and "pinned" not in adapter


def test_flan_t5_validates_with_its_hub_bertscore_encoder():
    """The score stage fetches a hub encoder at its pinned revision: validation accepts it,
    and the hub check (`profile run`, before DVC) reads it beside the model."""
    data = profile.load_profile("paper", PROFILES)
    assert "blocked" not in data["variants"][FLAN]
    assert profile.blocker(data["variants"][FLAN]) is None
    params = build("paper", FLAN)
    assert params["profile"] == {"name": "paper", "variant": FLAN}
    spec = profile.bertscore_model(params)
    assert (spec.name, spec.source, spec.id) == ("roberta_large", "hub", "roberta-large")
    assert spec.revision == params["models"]["roberta_large"]["revision"]
    assert SHA.fullmatch(spec.revision)
    flan_revision = params["models"]["flan_t5_base"]["revision"]
    assert [(r.where, r.id, r.revision) for r in profile.all_hub_repos(params, TASKS)] == [
        ("models.flan_t5_base", "google/flan-t5-base", flan_revision),
        ("models.roberta_large", "roberta-large", spec.revision)]


def test_blocked_variant_is_refused_and_not_runnable(tmp_path):
    """No paper variant is `blocked` now; the key still refuses one (apply, CI's matrix)."""
    data = yaml.safe_load((PROFILES / "paper.yaml").read_text())
    data["variants"][FLAN]["blocked"] = "waiting for something"
    (tmp_path / "paper.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    with pytest.raises(ConfigError, match=f"variant {FLAN} cannot run yet: waiting for"):
        profile.build("paper", FLAN, BASE, tmp_path, TASKS)
    assert profile.runnable("paper", tmp_path) == [v for v in PAPER_RUNNABLE if v != FLAN]


def test_flan_t5_summarization_settings():
    from tunebench.running.params import predict_settings, run_model

    bertscore = profile.load_profile("paper", PROFILES)["variants"][FLAN]["params"]["score"]
    assert bertscore["bertscore"] == {"model": "roberta_large", "num_layers": 17}
    params = build("paper", FLAN)
    roberta = params["models"]["roberta_large"]
    assert (roberta["source"], roberta["id"]) == ("hub", "roberta-large")
    assert SHA.fullmatch(roberta["revision"])
    assert params["model"] == "flan_t5_base"
    assert {d: (e["run"], e["caps"]) for d, e in params["datasets"].items()} == {
        "xsum": ("xsum", {"train": 1000, "test": 50}),
        "dialogsum": ("dialogsum", {"train": 500, "test": 50})}
    assert {r: e["mixture"] for r, e in params["runs"].items()} == {
        "xsum": {"xsum": 1}, "dialogsum": {"dialogsum": 1}}
    assert params["baselines"]["lead"] == {"sentences": 1}
    for run, settings, launch in runs_settings(params):
        spec = run_model(params, run)
        assert (spec.id, spec.family, spec.lora_targets) == (
            "google/flan-t5-base", "seq2seq", ("q", "v"))
        assert SHA.fullmatch(spec.revision)
        assert spec.dtype in ("float32", "bfloat16")  # T5 overflows in fp16
        cfg = predict_settings(params, run)
        assert cfg["modes"] == ["generate"]
        assert min(cfg["max_new_tokens"].values()) >= 100
        assert settings["fp16"] is False and launch is None


@pytest.mark.parametrize("native_bf16", [True, False])
def test_t5_never_trains_in_fp16(monkeypatch, native_bf16):
    """On a bf16 GPU the T5 runs autocast to bf16; on an older GPU they stay fp32."""
    import torch

    from tunebench.models.loading import torch_dtype
    from tunebench.models.train_qlora import TrainConfig
    from tunebench.running.params import run_model

    params = build("paper", FLAN)
    fake_gpu(monkeypatch, native_bf16)
    for run, settings, _ in runs_settings(params):
        assert TrainConfig.from_params(settings).mixed_precision() == (native_bf16, False)
        assert torch_dtype(run_model(params, run)) == torch.float32


def test_distilbert_imdb_settings():
    from tunebench.running.params import model_spec, run_model

    params = build("paper", "distilbert-imdb")
    assert params["datasets"] == {
        "imdb": {"run": "imdb", "caps": {"train": 1000, "test": 500}, "max_words": None}}
    run = params["runs"]["imdb"]
    assert run["mixture"] == {"imdb": 1} and run["model"] == "distilbert"
    spec = run_model(params, "imdb")
    assert (spec.id, spec.family, spec.lora_targets, spec.source) == (
        "distilbert-base-uncased", "encoder_cls", ("q_lin",), "hub")
    assert SHA.fullmatch(spec.revision)
    # The published settings (issue 16): LoRA on q_lin, alpha 16, dropout 0.05, lr 1e-3, 10 epochs.
    assert {k: run["train_qlora"][k] for k in ("learning_rate", "epochs", "lora_alpha",
                                                 "lora_dropout")} == {
        "learning_rate": 0.001, "epochs": 10, "lora_alpha": 16, "lora_dropout": 0.05}
    assert run["zero_shot"] == {"model": "mistral7b", "modes": ["generate", "loglik"]}
    llm = model_spec(params, run["zero_shot"]["model"])
    assert (llm.id, llm.family) == ("mistralai/Mistral-7B-v0.1", "causal_lm")
    assert [(r.where, r.id) for r in profile.all_hub_repos(params, TASKS)] == [
        ("models.distilbert", "distilbert-base-uncased"),
        ("models.mistral7b", "mistralai/Mistral-7B-v0.1")]


def test_hub_check_reads_only_the_models_in_use():
    assert profile.all_hub_repos(BASE, TASKS) == []  # the CPU default reads nothing from the Hub
    # Classification never reads score.bertscore: the smoke profile's (minilm, absent from
    # its models) is not a model it uses.
    smoke = build("gpu-smoke", "default")
    assert smoke["score"]["bertscore"]["model"] not in smoke["models"]
    assert [k for _, k in profile.model_keys(smoke, TASKS)] == ["smollm2"]


@pytest.mark.parametrize(("variant", "repos"), [
    ("distilbert-imdb", ["distilbert-base-uncased", "mistralai/Mistral-7B-v0.1"]),
    (FLAN, ["google/flan-t5-base", "roberta-large"]),  # the BERTScore encoder too
])
def test_run_checks_every_hub_repo_before_dvc(tmp_path, monkeypatch, variant, repos):
    from tunebench.running import hub

    monkeypatch.chdir(REPO_ROOT)
    params_path = tmp_path / "params.yaml"
    shutil.copy(REPO_ROOT / "params.yaml", params_path)
    events = []
    monkeypatch.setattr(hub, "check_access",
                        lambda repo, token=None, api=None: events.append(repo.id) or "ok")
    monkeypatch.setattr(profile, "_dvc", lambda args: events.append(args))
    profile.run("paper", variant, False, params_path, PROFILES)
    assert events == [*repos, ["exp", "run", "-n", f"paper-{variant}"]]
    assert yaml.safe_load(params_path.read_text())["profile"]["variant"] == variant


def mutate(params, path, value):
    *parents, last = path.split(".")
    node = params
    for key in parents:
        node = node[key]
    if value is None:
        del node[last]
    else:
        node[last] = value


@pytest.mark.parametrize(("variant", "path", "value", "message"), [
    ("distilbert-imdb", "runs.imdb.zero_shot.model", "distilbert", r"is not a causal LM"),
    ("distilbert-imdb", "runs.imdb.zero_shot.modes", ["argmax"], r"unknown mode"),
    ("distilbert-imdb", "runs.imdb.zero_shot.temperature", 0.1, r"temperature"),
    ("distilbert-imdb", "runs.imdb.model", "nope", r"runs.imdb.model 'nope'"),
    ("distilbert-imdb", "runs.imdb.train_qlora.fp16", True, r"bf16 and fp16 are both true"),
    ("distilbert-imdb", "runs.imdb.predict", {"modes": []}, r"non-empty list"),
    (FLAN, "runs.xsum.model", "distilbert", r"encoder classifier and cannot summarize"),
    (FLAN, "runs.xsum.predict.modes", ["generate", "loglik"], r"only \[generate\]"),
    (FLAN, "runs.dialogsum.zero_shot", {"model": "mistral7b", "modes": ["loglik"]},
     r"only \[generate\]"),
    (FLAN, "score.bertscore.num_layers", 0, r"num_layers"),
    (FLAN, "score.bertscore", None, r"score.bertscore: expected"),
    (FLAN, "baselines.lead", None, r"baselines.lead"),
    (FLAN, "models.roberta_large.revision", "main", r"roberta_large.revision must be a 40-hex"),
    (FLAN, "score.bertscore.model", "nope", r"score.bertscore.model 'nope' is not a key"),
])
def test_validation_rejects_what_a_stage_would(variant, path, value, message):
    params = build("paper", variant)
    if path == "runs.imdb.train_qlora.fp16":
        params["runs"]["imdb"]["train_qlora"]["bf16"] = True
    mutate(params, path, value)
    with pytest.raises(ConfigError, match=message):
        profile.validate(params, REPO_ROOT / "tasks")


# --- mixed precision, dtype and device per machine (no GPU needed) ----------------------

CPU_NATIVE = "cpu-native"  # whatever train.resolve_bf16 finds in this CPU's flags


@pytest.mark.parametrize(("native_bf16", "bf16", "fp16", "expected"), [
    (True, "auto", "auto", (True, False)),
    (True, "auto", False, (True, False)),
    (True, "auto", True, (False, True)),
    (True, False, "auto", (False, False)),  # FinGPT's recipe: fp16 from the model's dtype
    (True, True, "auto", (True, False)),
    (False, "auto", "auto", (False, True)),  # older GPU: fp16 mixed precision, not emulated bf16
    (False, "auto", False, (False, False)),  # ... unless fp16 is off (T5): fp32
    (False, True, False, (True, False)),  # explicit bf16 is honoured
    (False, False, True, (False, True)),
    (None, "auto", "auto", (CPU_NATIVE, False)),  # CPU: never fp16
    (None, "auto", True, (CPU_NATIVE, False)),
    (None, False, True, (False, False)),
])
def test_mixed_precision_per_machine(monkeypatch, native_bf16, bf16, fp16, expected):
    from tunebench.models import train_qlora as train

    fake_gpu(monkeypatch, native_bf16)
    cfg = train.TrainConfig.from_params({"bf16": bf16, "fp16": fp16})
    if expected[0] == CPU_NATIVE:
        expected = (train.resolve_bf16("auto"), False)
    assert cfg.mixed_precision() == expected
    assert not all(cfg.mixed_precision())  # never both


@pytest.mark.parametrize(("native_bf16", "flags"), [
    (True, (True, False)), (False, (False, True)), (None, None)])
def test_training_args_get_the_resolved_flags(monkeypatch, native_bf16, flags):
    import transformers

    from tunebench.models import engine
    from tunebench.models import train_qlora as train

    fake_gpu(monkeypatch, native_bf16)
    monkeypatch.setattr(transformers, "TrainingArguments", lambda **kwargs: kwargs)
    args = engine.training_args(train.TrainConfig(), "unused")
    if flags is None:
        flags = (train.resolve_bf16("auto"), False)
    assert (args["bf16"], args["fp16"]) == flags
    assert args["use_cpu"] is (native_bf16 is None)


def test_bf16_and_fp16_both_true_is_refused():
    from tunebench.models.train_qlora import TrainConfig

    with pytest.raises(ValueError, match=r"runs.x: bf16 and fp16 are both true"):
        TrainConfig.from_params({"bf16": True, "fp16": True}, "runs.x")
    with pytest.raises(ValueError, match=r"runs.x.fp16 must be bool \| str"):
        TrainConfig.from_params({"fp16": "yes"}, "runs.x")


@pytest.mark.parametrize(("native_bf16", "dtype", "expected"), [
    (True, "auto", "bfloat16"), (False, "auto", "float16"), (None, "auto", "float32"),
    (False, "float32", "float32"), (True, "float16", "float16"), (None, "bfloat16", "bfloat16"),
])
def test_torch_dtype_per_machine(monkeypatch, native_bf16, dtype, expected):
    import torch

    from tunebench.models.loading import ModelSpec, torch_dtype

    fake_gpu(monkeypatch, native_bf16)
    spec = ModelSpec.from_params("m", {"source": "hub", "id": "org/m", "revision": FAKE_SHA,
                                       "dtype": dtype})
    assert torch_dtype(spec) == getattr(torch, expected)


@pytest.mark.parametrize(("native_bf16", "count", "local_rank", "expected"), [
    (None, 0, "1", "cpu"),  # CPU ignores the launcher
    (True, 1, None, "cuda"),
    (True, 4, "2", "cuda:2"),
    (False, 2, "0", "cuda:0"),
    (True, 2, "-1", "cuda"),  # "not distributed", as some launchers write it
    (True, 2, "2", ValueError),
    (True, 2, "gpu1", ValueError),
])
def test_default_device_respects_local_rank(monkeypatch, native_bf16, count, local_rank,
                                            expected):
    from tunebench.models.loading import default_device

    fake_gpu(monkeypatch, native_bf16, count)
    if local_rank is None:
        monkeypatch.delenv("LOCAL_RANK", raising=False)
    else:
        monkeypatch.setenv("LOCAL_RANK", local_rank)
    if expected is ValueError:
        with pytest.raises(ValueError, match="LOCAL_RANK"):
            default_device()
    else:
        assert default_device() == expected


def test_each_rank_loads_4bit_on_its_own_gpu(monkeypatch):
    """models.load_kwargs / models.load_causal_lm place the quantized model on
    default_device(): under accelerate launch, rank 1 on cuda:1, not every rank on cuda:0."""
    from tunebench.models.loading import ModelSpec, load_kwargs

    fake_gpu(monkeypatch, True, count=2)
    monkeypatch.setenv("LOCAL_RANK", "1")
    spec = ModelSpec.from_params("m", {"source": "hub", "id": "org/m", "revision": FAKE_SHA,
                                       "load_in_4bit": True, "dtype": "auto"})
    kwargs = load_kwargs(spec, "org/m", quantize=True)
    assert kwargs["device_map"] == {"": "cuda:1"} and kwargs["revision"] == FAKE_SHA
    assert str(kwargs["quantization_config"].bnb_4bit_compute_dtype) == "torch.bfloat16"


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
    """Every runnable paper variant is a valid DVC pipeline (dvc repro --dry, in a copy).
    flan-t5-summarization keeps its hub BERTScore encoder: nothing here downloads it (apply
    validates, a dry run executes no stage)."""
    from tests.project import make_project, project_env, run

    assert FLAN in PAPER_RUNNABLE
    for variant in PAPER_RUNNABLE:
        dest = make_project(tmp_path / variant, mirror_dir)
        shutil.copytree(REPO_ROOT / "configs", dest / "configs")  # make_project copies profiles
        env = project_env(mirror_dir)
        run([sys.executable, "-m", "tunebench.running.profile", "apply", "paper", variant], dest,
            env)
        placeholder_outputs(dest)
        out = run(["dvc", "repro", "--dry"], dest, env)
        params = yaml.safe_load((dest / "params.yaml").read_text())
        for run_name in params["runs"]:
            assert f"train-qlora@{run_name}" in out, out[-2000:]
        for dataset in params["datasets"]:
            for stage in ("predict-base", "predict-tuned", "baselines", "score"):
                assert f"{stage}@{dataset}" in out, (variant, stage, dataset)
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
        plan.plan("workflow_dispatch", "no-such-variant")


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
