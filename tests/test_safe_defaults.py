"""Safe defaults: no remote code unless a model sets it, safetensors only, no credentials in
the repository or in stage output, every model source pinned."""

import re
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.test_bad_inputs import Toy
from tunebench.models.loading import ModelSpec, _hub_kwargs, load_causal_lm

REPO = Path(__file__).resolve().parents[1]


def test_trust_remote_code_is_off_unless_set(tiny_model_dir):
    spec = ModelSpec.from_params("m", {"source": "local", "path": str(tiny_model_dir)})
    assert spec.trust_remote_code is False
    assert _hub_kwargs(spec, str(tiny_model_dir))["trust_remote_code"] is False
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    for name, model in params["models"].items():
        assert model.get("trust_remote_code", False) is False, name


def test_pickled_weights_are_refused(tiny_model_dir, tmp_path):
    import shutil

    import torch
    from safetensors.torch import load_file

    (tmp_path / "bin").mkdir()  # the same model, its weights as a pickle only
    shutil.copy(tiny_model_dir / "config.json", tmp_path / "bin")
    torch.save(load_file(tiny_model_dir / "model.safetensors"),
               tmp_path / "bin" / "pytorch_model.bin")
    spec = ModelSpec.from_params("m", {"source": "local", "path": str(tmp_path / "bin")})
    with pytest.raises(OSError, match="safetensors"):
        load_causal_lm(spec, str(tmp_path / "bin"), quantize=False)
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text("{}")
    (adapter / "adapter_model.bin").write_bytes(b"pickle")
    spec = ModelSpec.from_params("m", {"source": "local", "path": str(tiny_model_dir)})
    with pytest.raises(FileNotFoundError, match="adapter_model.safetensors"):
        load_causal_lm(spec, str(tiny_model_dir), quantize=False, adapter_dir=adapter)


def test_every_benchmark_model_is_pinned():
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    for name, model in params["models"].items():
        spec = ModelSpec.from_params(name, model)  # hub: a 40-hex commit, or it fails
        if spec.source in ("gguf", "package"):
            assert spec.sha256 and re.fullmatch(r"[0-9a-f]{64}", spec.sha256), name


def test_no_credentials_in_tracked_files():
    files = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True,
                           check=True).stdout.split()
    pattern = re.compile(r"\bhf_[A-Za-z0-9]{30,}\b|\b(?:HF_TOKEN|HUGGING_FACE_HUB_TOKEN)\s*[=:]"
                         r"\s*['\"]?[A-Za-z0-9_]{8,}")
    leaks = []
    for name in files:
        path = REPO / name
        if path.is_file() and path.stat().st_size < 2_000_000:
            text = path.read_text(encoding="utf-8", errors="ignore")
            leaks += [f"{name}: {m.group(0)[:12]}..." for m in pattern.finditer(text)]
    assert not leaks


def test_hub_token_is_never_printed_or_written(tmp_path, capsys, monkeypatch):
    secret = "hf_" + "Zq7" * 12
    monkeypatch.setenv("HF_TOKEN", secret)
    toy = Toy(tmp_path, capsys)
    code, err = toy.fetch()
    code2, err2 = toy.label()
    out = capsys.readouterr()
    assert code == code2 == 0
    assert secret not in err + err2 + out.out + out.err
    for path in tmp_path.rglob("*"):
        if path.is_file() and path.suffix in (".json", ".jsonl", ".parquet"):
            assert secret.encode() not in path.read_bytes(), path


def test_bertscore_encoder_with_pickled_weights_only_is_refused(tmp_path, monkeypatch):
    """score's BERTScore encoder: a hub snapshot is fetched without pickles (allow_patterns),
    and a folder holding only pickled weights is refused before bert-score unpickles them."""
    import huggingface_hub

    from tunebench.evaluation.score import (
        SAFE_SNAPSHOT_FILES,
        bertscore_settings,
        check_safetensors,
    )
    from tunebench.io import DataError

    folder = tmp_path / "enc"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    (folder / "pytorch_model.bin").write_bytes(b"pickle")
    with pytest.raises(DataError, match=r"only pickled weights \(pytorch_model.bin\)"):
        check_safetensors(folder, "where")
    (folder / "model.safetensors").write_bytes(b"")
    check_safetensors(folder, "where")  # safetensors present: transformers loads those
    seen = {}

    def fake_snapshot(repo_id, revision, allow_patterns):
        seen["patterns"] = allow_patterns
        return str(folder)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot)
    params = {"score": {"bertscore": {"model": "enc", "num_layers": 2}},
              "models": {"enc": {"source": "hub", "id": "org/enc", "revision": "a" * 40,
                                 "family": "encoder_cls"}},
              "paths": {"model_cache": str(tmp_path / "cache")}}
    assert bertscore_settings(params)["model_dir"] == str(folder)
    assert seen["patterns"] == SAFE_SNAPSHOT_FILES
    assert not any("bin" in pattern for pattern in seen["patterns"])
