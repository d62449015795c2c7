"""tunebench.running.hub (gated models, pinned revisions, external adapters; the Hub is mocked) and
tunebench.running.launch (accelerate relaunch decisions)."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from tunebench.config import ConfigError
from tunebench.running import hub, launch

SHA = "a2cb7a712bb6e5e736ca7f8cd98167f81a0b5bd8"
REPO = hub.HubRepo("models.llama", "meta-llama/Llama-2-13b-chat-hf", SHA)
SECRET = "hf_secret_value_never_printed"


@pytest.fixture(autouse=True)
def online(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    for name in hub.TOKEN_VARS:
        monkeypatch.delenv(name, raising=False)


class FakeApi:
    def __init__(self, gated=False, info_error=None, auth_error=None):
        self.gated, self.info_error, self.auth_error = gated, info_error, auth_error
        self.calls = []

    def model_info(self, repo_id, revision=None, token=None):
        self.calls.append(("model_info", repo_id, revision, token))
        if self.info_error:
            raise self.info_error
        return SimpleNamespace(gated=self.gated)

    def auth_check(self, repo_id, token=None):
        self.calls.append(("auth_check", repo_id, token))
        if self.auth_error:
            raise self.auth_error


def http_error(cls):
    """The hub error `cls` as huggingface_hub raises it (only headers/request are read)."""
    response = SimpleNamespace(headers={}, request=None, status_code=401)
    return cls("boom", response=response)


def test_public_repo_passes():
    api = FakeApi(gated=False)
    assert "public" in hub.check_access(REPO, None, api)
    assert api.calls == [("model_info", REPO.id, SHA, False)]  # metadata only


def test_gated_without_token_says_what_to_do(capsys):
    with pytest.raises(hub.HubAccessError) as err:
        hub.check_access(REPO, None, FakeApi(gated="manual"))
    message = str(err.value)
    assert "gated" in message and "HF_TOKEN" in message and "Nothing was downloaded" in message
    assert "https://huggingface.co/meta-llama/Llama-2-13b-chat-hf" in message


def test_gated_with_token_but_no_access(capsys):
    from huggingface_hub.errors import GatedRepoError

    api = FakeApi(gated="manual", auth_error=http_error(GatedRepoError))
    with pytest.raises(hub.HubAccessError, match="has no access yet") as err:
        hub.check_access(REPO, SECRET, api)
    assert SECRET not in str(err.value) and SECRET not in capsys.readouterr().out


def test_gated_with_access():
    api = FakeApi(gated="auto")
    assert "access granted" in hub.check_access(REPO, SECRET, api)
    assert api.calls[-1] == ("auth_check", REPO.id, SECRET)


def test_missing_revision_and_repo():
    from huggingface_hub.errors import RepositoryNotFoundError, RevisionNotFoundError

    with pytest.raises(hub.HubAccessError, match="has no revision"):
        hub.check_access(REPO, None, FakeApi(info_error=http_error(RevisionNotFoundError)))
    with pytest.raises(hub.HubAccessError, match="not found on the Hub"):
        hub.check_access(REPO, None, FakeApi(info_error=http_error(RepositoryNotFoundError)))


def test_offline_checks_nothing(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    api = FakeApi(gated="manual")
    assert "not checked" in hub.check_access(REPO, None, api) and api.calls == []


def test_token_from_environment(monkeypatch):
    assert hub.hub_token() is None
    monkeypatch.setenv("HF_TOKEN", SECRET)
    assert hub.hub_token() == SECRET


def test_hub_repos_of_params():
    params = {"model": "m", "models": {"m": {"source": "hub", "id": "a/b", "revision": SHA}},
              "runs": {"r": {"mixture": {}, "adapter": {"id": "c/d", "revision": SHA}},
                       "s": {"mixture": {}}}}
    assert [(r.where, r.id) for r in hub.hub_repos(params)] == [
        ("models.m", "a/b"), ("runs.r.adapter", "c/d")]
    params["runs"]["r"]["adapter"]["revision"] = "main"
    with pytest.raises(ConfigError, match="not a pinned 40-hex commit"):
        hub.hub_repos(params)
    with pytest.raises(ConfigError, match="unknown key"):
        hub.adapter_repo({"id": "c/d", "revision": SHA, "revison": 1}, "x")


def test_preflight_stops_at_the_gated_model(monkeypatch):
    params = {"model": "m", "models": {"m": {"source": "package"}},
              "runs": {"r": {"adapter": {"id": "c/d", "revision": SHA}}}}
    with pytest.raises(hub.HubAccessError, match="c/d is a gated model"):
        hub.preflight(params, api=FakeApi(gated="manual"))


def test_install_external_run_converts_bin(tmp_path, monkeypatch):
    import torch
    from safetensors.torch import load_file

    monkeypatch.setattr(hub, "check_access", lambda repo, token, api=None: "ok")
    monkeypatch.setattr(hub, "resolve_model_commit", lambda repo_id, revision, token: revision)
    snapshot = tmp_path / "snap"
    snapshot.mkdir()
    (snapshot / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 8}))
    torch.save({"w": torch.ones(2, 2)}, snapshot / "adapter_model.bin")
    seen = {}

    def download(repo_id, revision, patterns, token):
        seen.update(repo_id=repo_id, revision=revision, patterns=patterns)
        return str(snapshot)

    out, live = tmp_path / "models" / "r", tmp_path / "live"
    adapter = hub.install_external_run({"id": "c/d", "revision": SHA}, "runs.r.adapter", out,
                                       live, {"run": "r"}, download=download)
    assert seen["revision"] == SHA and "adapter_config.json" in seen["patterns"]
    assert sorted(p.name for p in out.iterdir()) == ["adapter_config.json",
                                                     "adapter_model.safetensors"]
    assert torch.equal(load_file(out / "adapter_model.safetensors")["w"], torch.ones(2, 2))
    assert json.loads((live / "metrics.json").read_text()) == {"external_adapter": 1, "steps": 0}
    assert (live / "plots" / "metrics" / "train" / "loss.tsv").is_file()
    provenance = json.loads((live / "provenance.json").read_text())
    assert provenance["external_adapter"]["revision"] == SHA == adapter["revision"]
    assert adapter["commit"] == SHA and provenance["unpinned"] is False


def test_unpinned_adapter_params():
    repo = hub.adapter_repo({"id": "c/d", "revision": "main", "pinned": False}, "runs.r.adapter")
    assert (repo.revision, repo.pinned) == ("main", False)
    with pytest.raises(ConfigError, match=r"not a pinned 40-hex commit.*pinned: false"):
        hub.adapter_repo({"id": "c/d", "revision": "main"}, "runs.r.adapter")
    with pytest.raises(ConfigError, match=r"is a commit, so the adapter is pinned; remove "
                                          r"runs.r.adapter.pinned"):
        hub.adapter_repo({"id": "c/d", "revision": SHA, "pinned": False}, "runs.r.adapter")
    with pytest.raises(ConfigError, match=r"runs.r.adapter.pinned must be true or false"):
        hub.adapter_repo({"id": "c/d", "revision": "main", "pinned": "no"}, "runs.r.adapter")
    with pytest.raises(ConfigError, match=r"needs a branch"):
        hub.adapter_repo({"id": "c/d", "revision": None, "pinned": False}, "runs.r.adapter")
    params = {"model": "m", "models": {"m": {"source": "package"}},
              "runs": {"r": {"adapter": {"id": "c/d", "revision": "main", "pinned": False}}}}
    assert [(r.id, r.pinned) for r in hub.hub_repos(params)] == [("c/d", False)]


def _adapter_snapshot(folder: Path) -> Path:
    import torch
    from safetensors.torch import save_file

    folder.mkdir(parents=True)
    (folder / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 8}))
    save_file({"w": torch.ones(1)}, str(folder / "adapter_model.safetensors"))
    return folder


def test_unpinned_adapter_is_read_at_its_resolved_commit_and_flagged(tmp_path, monkeypatch):
    resolved = "f" * 40
    monkeypatch.setattr(hub, "check_access", lambda repo, token, api=None: "ok")
    monkeypatch.setattr(hub, "resolve_model_commit",
                        lambda repo_id, revision, token: resolved if revision == "main" else None)
    snapshot, seen = _adapter_snapshot(tmp_path / "snap"), []

    def download(repo_id, revision, patterns, token):
        seen.append(revision)
        return str(snapshot)

    params = {"id": "c/d", "revision": "main", "pinned": False}
    live = tmp_path / "live"
    adapter = hub.install_external_run(params, "runs.r.adapter", tmp_path / "out", live,
                                       {"run": "r"}, download=download)
    assert seen == [resolved]  # downloaded at the commit main resolved to, as recorded
    assert (adapter["revision"], adapter["commit"], adapter["unpinned"]) == (
        "main", resolved, True)
    provenance = json.loads((live / "provenance.json").read_text())
    assert provenance["unpinned"] is True and provenance["external_adapter"]["commit"] == resolved

    # Offline nothing is resolved: the commit is the cache snapshot's folder name.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cached = _adapter_snapshot(tmp_path / "snapshots" / resolved)
    adapter = hub.install_adapter(params, "runs.r.adapter", tmp_path / "out2",
                                  download=lambda *a: str(cached))
    assert (adapter["commit"], adapter["unpinned"]) == (resolved, True)


def test_pinned_adapter_resolving_elsewhere_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(hub, "check_access", lambda repo, token, api=None: "ok")
    monkeypatch.setattr(hub, "resolve_model_commit", lambda repo_id, revision, token: "e" * 40)
    with pytest.raises(hub.HubAccessError, match=f"c/d pinned at {SHA}, but the Hub resolved "
                                                 f"that revision to {'e' * 40}"):
        hub.install_adapter({"id": "c/d", "revision": SHA}, "runs.r.adapter", tmp_path / "o",
                            download=lambda *a: pytest.fail("downloaded"))


# --- launch --------------------------------------------------------------------------------

DDP = Path(__file__).resolve().parents[1] / "configs" / "accelerate" / "ddp.yaml"


def test_launch_spec_validation():
    spec = launch.LaunchSpec.from_params({"config": str(DDP), "num_processes": None}, "w")
    assert launch.process_count(spec, 4) == 4 and launch.process_count(spec, 0) == 1
    for bad in ({"num_processes": 2}, {"config": "x", "num_processes": 0},
                {"config": "x", "num_processes": True}, {"config": "x", "procs": 2}):
        with pytest.raises(ConfigError):
            launch.LaunchSpec.from_params(bad, "runs.r.launch")


def test_accelerate_configs_are_valid():
    from accelerate.commands.config.config_args import load_config_from_file

    for path in sorted(DDP.parent.glob("*.yaml")):
        config = launch.load_accelerate_config(path, "w")
        assert load_config_from_file(str(path)).distributed_type.value == \
            config["distributed_type"]


def test_sharded_qlora_is_refused():
    for name in ("fsdp.yaml", "deepspeed-zero3.yaml"):
        config = launch.load_accelerate_config(DDP.parent / name, "w")
        with pytest.raises(ConfigError, match="not supported yet"):
            launch.check_compatible(config, True, "runs.r.launch")
        launch.check_compatible(config, False, "runs.r.launch")


def test_mixed_precision_in_config_is_refused(tmp_path):
    bad = tmp_path / "a.yaml"
    bad.write_text("distributed_type: MULTI_GPU\nmixed_precision: fp16\n")
    with pytest.raises(ConfigError, match="precision comes from params"):
        launch.load_accelerate_config(bad, "w")


def test_distributed_setup(monkeypatch):
    monkeypatch.delenv(launch.ENV_MARK, raising=False)
    params = {"config": str(DDP), "num_processes": None}
    assert launch.distributed_setup(None, "w", "m", True) is True
    monkeypatch.setattr(launch, "visible_gpus", lambda: 1)
    assert launch.distributed_setup(params, "w", "m", True) is True  # one process: in place
    execs = []
    monkeypatch.setattr(launch, "visible_gpus", lambda: 2)
    monkeypatch.setattr(launch.os, "execvpe", lambda *a: execs.append(a))
    monkeypatch.setattr(launch.sys, "argv", ["stage.py", "--run", "r"])
    monkeypatch.setattr(launch, "free_port", lambda: 29999)
    monkeypatch.setitem(__import__("sys").modules, "accelerate",
                        SimpleNamespace(PartialState=lambda: SimpleNamespace(
                            is_main_process=False)))
    assert launch.distributed_setup(params, "w", "stages.train_qlora", True) is False
    cmd, argv, env = execs[0]
    assert argv == ["accelerate", "launch", "--config_file", str(DDP), "--num_processes", "2",
                    "--main_process_port", "29999", "-m", "stages.train_qlora", "--run", "r"]
    assert env[launch.ENV_MARK] == "1"
