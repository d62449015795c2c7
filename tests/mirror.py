"""Where the tests find the dataset mirror: the TUNEBENCH_MIRROR environment variable (as
fetch reads it), else ../shared/datasets beside the repository."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from tunebench.data.fetch import MIRROR_ENV

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_MIRROR = REPO_ROOT.parent / "shared" / "datasets"


class MirrorNotFound(Exception):
    """No mirror folder where the environment or the default says; the message says how."""


def find_mirror(environ: Mapping[str, str], default: Path = DEFAULT_MIRROR) -> Path:
    """The mirror folder as an absolute path (stage subprocesses run in other folders).

    A relative TUNEBENCH_MIRROR is taken from the current folder, as fetch takes it. A set
    variable that names no folder is an error, not a silent fall back to the default."""
    value = environ.get(MIRROR_ENV)
    if value:
        path = Path(value).resolve()
        if not path.is_dir():
            raise MirrorNotFound(f"{MIRROR_ENV}={value} is not a folder ({path}); point it at "
                                 f"the dataset mirror (<mirror>/<dir>/<file>.parquet)")
        return path
    if not Path(default).is_dir():
        raise MirrorNotFound(f"dataset mirror not found: {MIRROR_ENV} is not set and the "
                             f"default {default} does not exist; set {MIRROR_ENV}=<folder>")
    return Path(default).resolve()
