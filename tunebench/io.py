"""File I/O with atomic writes and errors that name the file, row and field.

Every output is written to a temporary file beside its target and renamed into place, so a
killed stage never leaves a file that DVC or the next stage would take as complete.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any


class DataError(ValueError):
    """Input data is unusable; the message names the file, and the row and field if known."""


class Interrupted(RuntimeError):
    """A stage stopped on a signal after saving what lets a rerun resume (message says where)."""

    def __init__(self, message: str, signum: int = 15) -> None:
        super().__init__(message)
        self.signum = signum


@contextlib.contextmanager
def atomic_path(target: Path) -> Iterator[Path]:
    """Yield a temporary path beside `target`; rename it onto `target` only on success."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_text(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path: Path, data: Any) -> None:
    """Pretty, key-sorted JSON (stable diffs; no timestamps go in tracked outputs)."""
    write_text(path, json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n")


def write_jsonl(path: Path, rows: Iterable[Mapping[str, Any]]) -> int:
    count = 0
    with atomic_path(path) as tmp, tmp.open("w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False, sort_keys=True) + "\n")
            count += 1
    return count


def read_json(path: Path) -> Any:
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: not valid JSON: {exc}") from None


def read_jsonl(path: Path, required: Iterable[str] = ()) -> list[dict[str, Any]]:
    """Read JSON Lines; a bad line or a row missing a required field names its line number."""
    path, required = Path(path), list(required)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    rows = []
    with path.open("rb") as fh:
        for lineno, raw in enumerate(fh, start=1):
            try:
                row = json.loads(raw.decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError) as exc:
                raise DataError(f"{path}:{lineno}: not a valid UTF-8 JSON line: {exc}") from None
            if not isinstance(row, dict):
                raise DataError(f"{path}:{lineno}: expected a JSON object")
            missing = [key for key in required if key not in row]
            if missing:
                raise DataError(f"{path}:{lineno}: missing field(s) {', '.join(missing)}")
            rows.append(row)
    return rows


def read_parquet(path: Path, columns: Iterable[str] | None = None):
    """Read a parquet file into pandas, naming the file (and missing columns) on failure."""
    import pandas as pd
    import pyarrow

    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        df = pd.read_parquet(path)
    except (pyarrow.ArrowException, OSError, ValueError) as exc:  # ValueError: bad UTF-8
        raise DataError(f"{path}: not a readable parquet file: {exc}") from None
    return _check_columns(path, df, columns)


def read_csv(path: Path, columns: Iterable[str] | None = None, sep: str = ","):
    """Read a CSV file (UTF-8, header row; `sep="\t"`: TSV) into pandas. Bad bytes, an
    unterminated quote or a row with another number of fields than the header is named by its
    line."""
    import csv
    import io

    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise DataError(f"{path}:{line}: not valid UTF-8 (byte {data[exc.start]:#04x})") from None
    reader = csv.reader(io.StringIO(text, newline=""), strict=True, delimiter=sep)
    try:
        header = next(reader, None)
        if not header:
            raise DataError(f"{path}: empty file (no header row)")
        for record in reader:
            if len(record) != len(header):
                raise DataError(f"{path}:{reader.line_num}: {len(record)} field(s), the header "
                                f"has {len(header)} (a truncated or corrupt row?)")
    except csv.Error as exc:
        raise DataError(f"{path}:{reader.line_num}: not valid CSV: {exc}") from None
    df = pd.read_csv(io.StringIO(text), sep=sep, keep_default_na=False, na_values=[""])
    return _check_columns(path, df, columns)


def read_table(path: Path, columns: Iterable[str] | None = None):
    """A parquet, CSV, TSV or JSON Lines file as a DataFrame, by extension, with named errors."""
    import pandas as pd

    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        return read_parquet(path, columns)
    if suffix in (".csv", ".tsv"):
        return read_csv(path, columns, sep="\t" if suffix == ".tsv" else ",")
    if suffix == ".jsonl":
        return _check_columns(path, pd.DataFrame(read_jsonl(path)), columns)
    raise DataError(f"{path}: unsupported file type {suffix!r} (parquet, csv, tsv or jsonl)")


def _check_columns(path: Path, df, columns: Iterable[str] | None):
    if columns is not None:
        missing = [c for c in columns if c not in df.columns]
        if missing:
            raise DataError(
                f"{path}: missing column(s) {', '.join(missing)}; has {', '.join(df.columns)}"
            )
    return df


def write_parquet(path: Path, df) -> None:
    with atomic_path(path) as tmp:
        df.to_parquet(tmp, index=False)


def check_unique_ids(ids: Iterable[Any], where: str) -> None:
    """Fail on a repeated example id, naming it and how often it occurs."""
    from collections import Counter

    repeated = [(i, n) for i, n in Counter(ids).items() if n > 1]
    if repeated:
        shown = ", ".join(f"{i!r} x{n}" for i, n in repeated[:5])
        raise DataError(f"{where}: {len(repeated)} duplicate id(s): {shown}")


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()
