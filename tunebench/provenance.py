"""What every result carries: package versions and the model it came from (no timestamps)."""

from __future__ import annotations

import platform
from importlib import metadata
from typing import Any

PACKAGES = ("torch", "transformers", "peft", "trl", "bitsandbytes", "accelerate", "datasets",
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
            "load_in_4bit", "chat_template", "family")
    return {key: getattr(spec, key) for key in keys}
