"""Build a throw-away copy of the project in a temporary git repo, for `dvc repro` tests."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]
COPIED = ("dvc.yaml", "params.yaml", "tasks", "profiles", "stages", "tunebench")


def make_project(dest: Path, mirror: Path, params: dict[str, Any] | None = None) -> Path:
    """Copy the pipeline into `dest`, apply `params` (replacing top-level sections), and
    commit it in a fresh git + DVC repo. Returns `dest`."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in COPIED:
        src = REPO_ROOT / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(src, dest / name)
    if params:
        merged = yaml.safe_load((dest / "params.yaml").read_text())
        merged.update(params)
        (dest / "params.yaml").write_text(yaml.safe_dump(merged, sort_keys=False))
    env = project_env(mirror)
    for cmd in (["git", "init", "-q"], ["git", "config", "user.email", "t@example.com"],
                ["git", "config", "user.name", "test"], ["dvc", "init", "-q"],
                ["dvc", "config", "core.analytics", "false"],
                ["git", "add", "-A"], ["git", "commit", "-qm", "init"]):
        run(cmd, dest, env)
    return dest


def project_env(mirror: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["TUNEBENCH_MIRROR"] = str(mirror)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    env["PYTHONPATH"] = ""  # stages import the copied `tunebench`, found from the cwd
    return env


def run(cmd: list[str], cwd: Path, env: dict[str, str], stdout_only: bool = False) -> str:
    """Run a command; fail with its output. Returns stdout + stderr (or stdout alone, for
    machine-readable output that DVC's warnings on stderr must not pollute)."""
    result = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({result.returncode}):\n"
                             f"{result.stdout[-4000:]}\n{result.stderr[-4000:]}")
    return result.stdout if stdout_only else result.stdout + result.stderr
