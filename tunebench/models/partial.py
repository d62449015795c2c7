"""Resumable row output: finished batches are appended to a partial file beside the output.

The partial file is a hidden file that the caller names beside its output (predict: beside
the output folder, `.<folder>-<file>.partial`), never a DVC out. Its first line is
a header (settings + a hash of every prompt); a rerun whose header matches keeps the rows
already there and computes only the rest, so a killed run finishes with every example
exactly once. A torn last line (killed mid-write) is ignored; a header that does not match
(other prompts, model or settings) discards the file.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any


def make_header(settings: Mapping[str, Any], ids: Sequence[str], prompt_hashes: Sequence[str],
                ) -> dict[str, Any]:
    digest = hashlib.sha256()
    for rid, h in zip(ids, prompt_hashes, strict=True):
        digest.update(f"{rid}\t{h}\n".encode())
    return {"settings": json.loads(json.dumps(settings, sort_keys=True)),
            "prompts_sha256": digest.hexdigest(), "n": len(ids)}


def load_partial(path: Path, header: Mapping[str, Any], ids: Sequence[str]) -> dict[str, dict]:
    """Rows already finished under the same header, by id; {} when none or stale."""
    path = Path(path)
    if not path.is_file():
        return {}
    lines = path.read_bytes().split(b"\n")
    try:
        if json.loads(lines[0]) != {"header": dict(header)}:
            return {}
    except (json.JSONDecodeError, UnicodeDecodeError):
        return {}
    known, done = set(ids), {}
    for raw in lines[1:]:
        try:
            row = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError):
            break  # the torn tail of a killed write; everything after it is lost too
        if isinstance(row, dict) and row.get("id") in known:
            done[row["id"]] = row
    return done


class PartialWriter:
    """Appends rows batch by batch, each batch flushed and fsynced before the next starts."""

    def __init__(self, path: Path, header: Mapping[str, Any], kept: Mapping[str, dict]):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # Rewrite from the kept rows: drops a torn tail and any stale content.
        tmp = self.path.with_name(self.path.name + ".tmp")
        with tmp.open("w", encoding="utf-8") as fh:
            fh.write(json.dumps({"header": dict(header)}, sort_keys=True) + "\n")
            for row in kept.values():
                fh.write(json.dumps(row, sort_keys=True, ensure_ascii=False) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.path)
        self.fh = self.path.open("a", encoding="utf-8")

    def write(self, rows: Sequence[Mapping[str, Any]]) -> None:
        self.fh.write("".join(json.dumps(r, sort_keys=True, ensure_ascii=False) + "\n"
                              for r in rows))
        self.fh.flush()
        os.fsync(self.fh.fileno())

    def close(self, remove: bool) -> None:
        self.fh.close()
        if remove:
            self.path.unlink(missing_ok=True)
