"""Print the sha256 pins of a task file's local data files, ready to paste.

A `source.files` task reads files of the repository, each pinned by its sha256 so that a
changed file stops fetch instead of silently changing the benchmark. This command reads the
task file as YAML (it need not load yet: the pins are what it lacks), hashes every file it
names, and prints the `source.files` block with the pins filled in. It changes nothing.

    python -m tunebench.data.pins tasks/mydata.yaml
    python -m tunebench.data.pins tasks/mydata.yaml --mirror ../shared/datasets   # mirror files
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

from tunebench.config import ConfigError
from tunebench.data.tasks import read_task_yaml
from tunebench.io import DataError, sha256_file


def pins(task_path: Path, repo: Path, mirror: Path | None = None) -> dict:
    """{"source": {kind: ...}} with `sha256` set on every file of source.files (files under
    `repo`) and, given a mirror root, of source.mirror."""
    data = read_task_yaml(task_path)
    source = data.get("source")
    if not isinstance(source, dict):
        raise ConfigError(f"{task_path}: source: expected a mapping")
    out = {}
    if isinstance(source.get("files"), dict):
        out["files"] = _pinned(source["files"], Path(repo), f"{task_path}: source.files")
    if mirror is not None and isinstance(source.get("mirror"), dict):
        m = source["mirror"]
        folder = Path(mirror) / str(m.get("dir", ""))
        out["mirror"] = {"dir": m.get("dir"), "splits": _pinned(
            m.get("splits") or {}, folder, f"{task_path}: source.mirror.splits")}
    if not out:
        raise ConfigError(f"{task_path}: no source.files"
                          + (" or source.mirror" if mirror is not None else "")
                          + " to pin (source.mirror needs --mirror)")
    return {"source": out}


def _pinned(splits: dict, folder: Path, where: str) -> dict:
    result = {}
    for name, entry in splits.items():
        if not isinstance(entry, dict) or not isinstance(entry.get("file"), str):
            raise ConfigError(f"{where}.{name}: expected a mapping with a `file`")
        path = folder / entry["file"]
        if not path.is_file():
            raise DataError(f"{where}.{name}.file: {path} not found")
        result[name] = {**entry, "sha256": sha256_file(path)}
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tunebench.data.pins", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("task", type=Path, help="the task file (tasks/<name>.yaml)")
    p.add_argument("--repo", type=Path, default=Path("."),
                   help="the folder source.files paths are relative to (default: here)")
    p.add_argument("--mirror", type=Path, default=None,
                   help="a mirror root: also pin the task's source.mirror files")
    args = p.parse_args(argv)
    try:
        block = pins(args.task, args.repo, args.mirror)
    except (ConfigError, DataError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"# sha256 pins for {args.task}: replace its `source` entries with these")
    print(yaml.safe_dump(block, sort_keys=False, allow_unicode=True), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
