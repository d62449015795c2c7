"""Small helpers for validating YAML-shaped configuration with errors that name the field."""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from dataclasses import fields
from typing import Any


class ConfigError(ValueError):
    """A configuration file or section is invalid; the message names the file and field."""


def closest(name: str, known: Iterable[str]) -> str:
    """' (did you mean 'x'?)' for the closest known name, or '' when nothing is close."""
    match = difflib.get_close_matches(name, list(known), n=1, cutoff=0.6)
    return f" (did you mean '{match[0]}'?)" if match else ""


def check_keys(
    section: Mapping[str, Any],
    allowed: Iterable[str],
    where: str,
    required: Iterable[str] = (),
) -> None:
    """Reject unknown keys (suggesting the closest) and report missing required keys."""
    allowed = list(allowed)
    if not isinstance(section, Mapping):
        raise ConfigError(f"{where}: expected a mapping, got {type(section).__name__}")
    for key in section:
        if key not in allowed:
            raise ConfigError(f"{where}: unknown key '{key}'{closest(str(key), allowed)}")
    missing = [key for key in required if key not in section]
    if missing:
        raise ConfigError(f"{where}: missing required field(s) {', '.join(missing)}")


def dataclass_from_params(cls, params: Mapping[str, Any] | None, where: str):
    """Build a dataclass from a params mapping, rejecting unknown keys and wrong scalar types."""
    params = dict(params or {})
    known = {f.name: f for f in fields(cls)}
    check_keys(params, known, where)
    defaults = cls()
    for key, value in params.items():
        expected = type(getattr(defaults, key))
        if not _type_ok(value, expected):
            raise ConfigError(
                f"{where}.{key}: expected {expected.__name__}, got {type(value).__name__} {value!r}"
            )
    return cls(**params)


def _type_ok(value: Any, expected: type) -> bool:
    if expected is type(None):
        return True
    if expected is bool:
        # A YAML "False" string or 0 must not pass as a bool (the argparse(type=bool) trap).
        return isinstance(value, bool)
    if expected is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if expected is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, expected)


def deep_merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """Recursive dict merge: mappings merge key by key, anything else in `override` wins."""
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged
