"""What every result carries: package versions, the model it came from and the hardware it
ran on (no timestamps)."""

from __future__ import annotations

import platform
from importlib import metadata
from pathlib import Path
from typing import Any

PACKAGES = ("torch", "transformers", "peft", "bitsandbytes", "accelerate", "datasets",
            "scikit-learn", "numpy", "pandas", "dvc")


def package_versions() -> dict[str, str | None]:
    """Installed versions, read from package metadata (imports nothing heavy)."""
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def model_provenance(spec) -> dict[str, Any]:
    """The fields that identify a model: where it came from and which exact revision/file."""
    keys = ("name", "source", "id", "revision", "path", "package", "file", "sha256", "dtype",
            "load_in_4bit", "chat_template", "family", "system_prompt")
    record = {key: getattr(spec, key) for key in keys}
    record["prompt_format"] = {s: spec.format_for(s) for s in ("base", "tuned")}
    return record


def hardware() -> dict[str, Any]:
    """The machine a result was computed on. Numbers can differ between machines: on CPU,
    bf16 autocast (`bf16: auto`) and bitsandbytes' NF4 inference kernels are chosen by the
    AVX512-BF16/AMX flags recorded here."""
    import torch

    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
    except OSError:
        cpuinfo = ""
    names = [line.split(":", 1)[1].strip() for line in cpuinfo.splitlines()
             if line.startswith("model name")]
    flags = {flag for line in cpuinfo.splitlines() if line.startswith("flags")
             for flag in line.split(":", 1)[1].split()}
    return {"machine": platform.machine(), "cpu": names[0] if names else platform.processor(),
            "cpu_bf16_flags": sorted(flags & {"avx512_bf16", "amx_bf16"}),
            "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "torch_threads": torch.get_num_threads(),
            "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None}
