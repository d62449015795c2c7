"""The error contract of tunebench's own commands (crosscheck, lm-eval export and ingest,
trade-off): a user error is one line on stderr and exit status 2, never a traceback."""

from __future__ import annotations

import sys
from collections.abc import Callable

from tunebench.config import ConfigError
from tunebench.io import DataError

USER_ERRORS = (ConfigError, DataError, FileNotFoundError)


def run_command(body: Callable[[], None]) -> int:
    """Run ``body``; 0 when it returns, 2 (and ``error: <message>``) on a user error."""
    try:
        body()
    except USER_ERRORS as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0
