"""Stage logic for `fetch`: read a task's raw splits from the Hub or from a local mirror.

Raw splits keep the source's original columns and labels, plus `source_row`: the row's
position in its source file or Hub split (before any filtering), from which stable
example ids are built later. Every source is pinned: a mirror file by its sha256, a Hub
dataset by its commit, which fetch checks online before reading (a source marked
`pinned: false` is read at its branch, and the commit it resolved is recorded with
`"unpinned": true`).
"""

from __future__ import annotations

import io
import os
import re
from pathlib import Path
from typing import Any

from tunebench.data.tasks import HubFile, MirrorSource, Task
from tunebench.io import DataError, read_table, sha256_file

MIRROR_ENV = "TUNEBENCH_MIRROR"
# Names that become file or folder names (dataset keys, task names, split names).
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


def check_name(name: object, where: str) -> str:
    """`name` if it can name a file inside its folder, else DataError naming `where`: letters,
    digits, '_', '-' and '.', starting with a letter or digit, no '..', at most 64 long."""
    if not isinstance(name, str) or not NAME.fullmatch(name) or ".." in name:
        raise DataError(f"{where}: {name!r} cannot name a file or folder: use letters, digits, "
                        "'_', '-' and '.' (starting with a letter or digit, no '..', at most "
                        "64 characters)")
    return name


def inside(path: Path, root: Path, where: str) -> Path:
    """`path` if it resolves under `root`, else DataError naming `where`."""
    if not Path(path).resolve().is_relative_to(Path(root).resolve()):
        raise DataError(f"{where}: {path} lies outside {root}")
    return path


def check_dataset_names(name: str, task: str, run: str, where: str) -> None:
    """The dataset key, its task name and its run name become stage folders and the task
    file's name (data/instructions/<run>/<dataset>, tasks/<task>.yaml)."""
    check_name(name, f"{where}: datasets key")
    check_name(task, f"{where}: datasets.{name}.task")
    check_name(run, f"{where}: datasets.{name}.run")


def resolve_mirror(param: str | None) -> Path | None:
    """The mirror root: the TUNEBENCH_MIRROR environment variable, else the param, else None."""
    value = os.environ.get(MIRROR_ENV) or param
    return Path(value) if value else None


def fetch(task: Task, mirror: Path | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """Return ({raw split name: DataFrame}, provenance): a task's local files (source.files,
    relative to the working directory, the repository) wherever they are, else the mirror if
    one is given, else the Hub."""
    if task.files is not None:
        return fetch_files(task, Path.cwd())
    if mirror is not None:
        return fetch_mirror(task, mirror)
    return fetch_hub(task)


def fetch_files(task: Task, repo: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """source.files: each file under the repository, at its pinned sha256."""
    frames, splits, files = _read_files(task, task.files, Path(repo), "source.files")
    return frames, {"source": "files", "file_sha256": files, "splits": splits}


def fetch_mirror(task: Task, root: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    if task.mirror is None:
        raise DataError(f"{task.path}: no 'source.mirror' entry, but a mirror ({root}) is set")
    folder = inside(Path(root) / task.mirror.dir, root, f"{task.path}: source.mirror.dir")
    if not folder.is_dir():
        raise DataError(
            f"mirror folder {folder} not found (task {task.path}, source.mirror.dir "
            f"'{task.mirror.dir}' under mirror root {root}; set fetch.mirror or {MIRROR_ENV})"
        )
    frames, splits, files = _read_files(task, task.mirror, folder, "source.mirror.splits")
    provenance = {"source": "mirror", "mirror_dir": task.mirror.dir, "file_sha256": files,
                  "splits": splits}
    return frames, provenance


def _read_files(task: Task, source: MirrorSource, folder: Path, key: str):
    """(frames, per-split provenance, file -> sha256) of a mirror's or the repository's files:
    each inside `folder`, at its pin when it has one, renamed, filtered by its `where`."""
    frames, splits, files = {}, {}, {}
    for name, spec in source.splits.items():
        check_name(name, f"{task.path}: {key}")
        path = inside(folder / spec.file, folder, f"{task.path}: {key}.{name}.file")
        digest = sha256_file(path) if path.is_file() else None
        if spec.sha256 is not None and digest is not None and digest != spec.sha256:
            raise DataError(f"{path}: sha256 {digest} differs from the pinned "
                            f"{key}.{name}.sha256 {spec.sha256} ({task.path}); if the file "
                            "changed on purpose, paste the new pin (`python -m "
                            f"tunebench.data.pins {task.path}`)")
        df = _renamed(task, name, read_table(path), str(path))
        if "source_row" in df.columns:
            raise DataError(f"{path}: has a 'source_row' column, which fetch adds itself")
        df.insert(0, "source_row", range(len(df)))
        in_file = len(df)
        for column, value in spec.where.items():
            if column not in df.columns:
                raise DataError(f"{path}: filter column '{column}' (task {task.path}) is missing")
            df = df[df[column] == value]
        frames[name] = df.reset_index(drop=True)
        files[spec.file] = digest
        # Rows in = rows kept + rows another split's filter takes (none dropped unseen).
        splits[name] = {"file": spec.file, "where": spec.where, "rows": len(df),
                        "rows_in_file": in_file, "filtered_out": in_file - len(df)}
    _check_filters_cover_files(task, splits)
    return frames, splits, files


def _check_filters_cover_files(task: Task, splits: dict[str, dict]) -> None:
    """Splits filtered out of one file must together keep every row of it: a row matching
    no split's filter (e.g. a typo'd value) would otherwise vanish without a count."""
    by_file: dict[str, list[dict]] = {}
    for info in splits.values():
        by_file.setdefault(info["file"], []).append(info)
    for file, infos in by_file.items():
        if not any(i["where"] for i in infos):
            continue
        kept, total = sum(i["rows"] for i in infos), infos[0]["rows_in_file"]
        if kept != total:
            raise DataError(f"{task.path}: the split filters on {file} keep {kept} of its "
                            f"{total} rows; {total - kept} match no split's 'where'")


def fetch_hub(task: Task) -> tuple[dict[str, Any], dict[str, Any]]:
    """Read the task's Hub splits at the commit `hub_commit` checks (a pinned source at its
    pin; an unpinned one at the commit its branch points at now, recorded as such)."""
    if task.hub is None:
        raise DataError(f"{task.path}: no 'source.hub' entry and no mirror configured")
    hub, frames, splits = task.hub, {}, {}
    commit, checked = hub_commit(task)
    at = commit or hub.revision
    for name, hub_splits in hub.splits.items():
        frames[name] = _load_hub_splits(task, name, hub_splits, at)
        splits[name] = {"hub_splits": hub_splits, "rows": len(frames[name])}
    for name, spec in hub.files.items():
        frames[name], splits[name] = _load_hub_file(task, name, spec, at)
    provenance = {"source": "hub", "id": hub.id, "config": hub.config,
                  "revision": hub.revision, "commit": commit, "commit_checked": checked,
                  "unpinned": not hub.pinned, "splits": splits}
    return frames, provenance


def hub_commit(task: Task) -> tuple[str | None, bool]:
    """(the commit fetch reads, whether the Hub confirmed it). Online the revision is resolved
    on the Hub: a pinned source must resolve to its pin, else fetch stops; an unpinned one
    reads (and records) whatever commit its branch points at. Offline nothing is asked: a
    pinned source reads its pin from the cache, an unpinned one an unknown commit (None)."""
    hub = task.hub
    if _offline():
        return (hub.revision if hub.pinned else None), False
    try:
        resolved = resolve_commit(hub.id, hub.revision)
    except Exception as exc:  # the hub client raises many types; all mean "unresolvable"
        raise DataError(f"{task.path}: could not resolve {hub.id} revision {hub.revision} on "
                        f"the Hugging Face Hub: {type(exc).__name__}: {exc}. Offline? Set "
                        f"fetch.mirror or {MIRROR_ENV} to a local mirror.") from None
    if hub.pinned and resolved != hub.revision:
        raise DataError(f"{task.path}: source.hub.revision pins {hub.id} at {hub.revision}, but "
                        f"the Hub resolved that revision to {resolved}; nothing was read. Check "
                        f"the pin at https://huggingface.co/datasets/{hub.id}/commits/main")
    return resolved, True


def _load_hub_splits(task: Task, name: str, hub_splits: list[str], revision: str):
    import datasets
    import pandas as pd

    hub, parts = task.hub, []
    for split in hub_splits:
        try:
            ds = datasets.load_dataset(hub.id, hub.config, split=split, revision=revision)
        except Exception as exc:  # the hub client raises many types; all mean "unreadable"
            raise DataError(
                f"could not read {hub.id} (config {hub.config}, split {split}, revision "
                f"{revision}) from the Hugging Face Hub for task {task.path}: {exc}. "
                f"Offline? Set fetch.mirror or {MIRROR_ENV} to a local mirror."
            ) from None
        parts.append(_to_pandas_with_label_names(ds))
    df = _renamed(task, name, pd.concat(parts, ignore_index=True),
                  f"{hub.id} ({hub.config}, {'+'.join(hub_splits)} at {revision})")
    df.insert(0, "source_row", range(len(df)))
    return df


def _load_hub_file(task: Task, name: str, spec: HubFile, revision: str):
    """One raw split from a file of the repo (HubFile), downloaded at `revision`."""
    hub = task.hub
    try:
        path = Path(download_file(hub.id, spec.file, revision))
    except Exception as exc:  # the hub client raises many types; all mean "unreadable"
        raise DataError(f"could not download {spec.file} of {hub.id} (revision {revision}) "
                        f"from the Hugging Face Hub for task {task.path}: {exc}. Offline? Set "
                        f"fetch.mirror or {MIRROR_ENV} to a local mirror.") from None
    digest = sha256_file(path)
    if spec.sha256 is not None and digest != spec.sha256:
        raise DataError(f"{hub.id}/{spec.file}@{revision}: sha256 {digest} differs from the "
                        f"pinned source.hub.splits.{name}.sha256 {spec.sha256} ({task.path})")
    df, info = read_line_table(path, spec)
    where = f"{hub.id}/{spec.file}{':' + info['member'] if spec.member else ''}"
    df = _renamed(task, name, df, f"{where} at {revision}")
    df.insert(0, "source_row", range(len(df)))
    return df, {"file": spec.file, "sha256": digest, **info, "rows": len(df)}


def read_line_table(path: Path, spec: HubFile):
    """A text file (or a member of the zip at `path`) as a table: one row per non-blank line,
    split at the last `sep`s into `spec.columns`, the last field stripped (as `datasets`'
    ClassLabel strips a label), as FPB's loading script reads Sentences_50Agree.txt."""
    import pandas as pd

    raw, member = _read_bytes(Path(path), spec.member)
    try:
        text = raw.decode(spec.encoding)
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}{':' + member if member else ''}: not {spec.encoding} "
                        f"text ({exc})") from None
    rows, blank, n = [], 0, len(spec.columns)
    # Lines as Python's text mode reads them (\n, \r\n or \r), as the loading script did:
    # str.splitlines would also split at latin-1's NEL (0x85) and other separators.
    for lineno, line in enumerate(io.StringIO(text, newline=None), start=1):
        line = line.removesuffix("\n")
        if not line.strip():
            blank += 1
            continue
        fields = line.rsplit(spec.sep, n - 1)
        if len(fields) != n:
            raise DataError(f"{path}{':' + member if member else ''}:{lineno}: expected "
                            f"{n} fields separated by {spec.sep!r}, got {line[:80]!r}")
        fields[-1] = fields[-1].strip()
        rows.append(fields)
    info = {"member": member, "blank_lines": blank} if member else {"blank_lines": blank}
    return pd.DataFrame(rows, columns=list(spec.columns)), info


def _read_bytes(path: Path, member: str | None) -> tuple[bytes, str | None]:
    """The file's bytes, or a zip member's: `member` exactly, else the one member with its
    file name (a zip may or may not wrap its files in a folder). Returns the member read."""
    import zipfile

    if member is None:
        return path.read_bytes(), None
    try:
        with zipfile.ZipFile(path) as archive:
            names = [n for n in archive.namelist() if not n.endswith("/")]
            if member not in names:
                same = [n for n in names if n.rsplit("/", 1)[-1] == member.rsplit("/", 1)[-1]]
                if len(same) != 1:
                    raise DataError(f"{path}: no member {member!r} in the zip (it has "
                                    f"{', '.join(names[:20])})")
                member = same[0]
            return archive.read(member), member
    except zipfile.BadZipFile:
        raise DataError(f"{path}: not a readable zip file") from None


def _renamed(task: Task, name: str, df, where: str):
    """The raw split with the task's `rename` applied, checked for the columns the task reads.
    A renamed column must exist and its new name must not (the two would be ambiguous)."""
    renames = task.renames(name)
    has = ", ".join(map(str, df.columns))
    for old, new in renames.items():
        if old not in df.columns:
            raise DataError(f"{where}: rename {old!r} -> {new!r} ({task.path}, split {name!r}): "
                            f"no column {old!r}; has {has}")
        if new in df.columns:
            raise DataError(f"{where}: rename {old!r} -> {new!r} ({task.path}, split {name!r}): "
                            f"a column {new!r} exists already")
    df = df.rename(columns=renames) if renames else df
    missing = [c for c in task.raw_columns(name) if c not in df.columns]
    if missing:
        raise DataError(f"{where}: missing column(s) {', '.join(missing)} required by "
                        f"{task.path}; has {', '.join(map(str, df.columns))}")
    return df


def _to_pandas_with_label_names(ds):
    """Hub ClassLabel columns arrive as integers; keep the dataset's own label names instead
    (-1, the Hub's "no label", becomes missing and is quarantined downstream)."""
    import datasets

    df = ds.to_pandas()
    for column, feature in ds.features.items():
        if isinstance(feature, datasets.ClassLabel):
            df[column] = [feature.names[i] if i >= 0 else None for i in df[column]]
    return df


def _offline() -> bool:
    """HF_HUB_OFFLINE as huggingface_hub reads it (hub.offline; not imported, so that fetch
    depends on no more of the package than it uses)."""
    return os.environ.get("HF_HUB_OFFLINE", "0").strip().lower() in ("1", "true", "yes", "on")


def resolve_commit(repo_id: str, revision: str) -> str:
    """The commit a revision (a pin, or a branch) of a Hub dataset points at (metadata only)."""
    from huggingface_hub import HfApi

    return HfApi().dataset_info(repo_id, revision=revision).sha


def download_file(repo_id: str, filename: str, revision: str) -> str:
    """Download (or find in the cache) one file of a Hub dataset repo at `revision`."""
    from huggingface_hub import hf_hub_download

    return hf_hub_download(repo_id, filename, repo_type="dataset", revision=revision)
