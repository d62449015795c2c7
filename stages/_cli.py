"""What every stage shares: argument parsing, offline defaults, one-line errors."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable

from tunebench.config import ConfigError
from tunebench.io import DataError, Interrupted

# Telemetry is never wanted; progress bars stay on.
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def parser(doc: str) -> argparse.ArgumentParser:
    """An argument parser whose --help is the stage module's docstring."""
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    return p


def run(main: Callable[[], None]) -> None:
    """Run a stage; bad input or configuration ends in one line naming the cause, exit 2."""
    try:
        main()
    except (ConfigError, DataError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    except Interrupted as exc:
        print(f"interrupted: {exc}", file=sys.stderr)
        sys.exit(128 + exc.signum)  # what a shell reports for a command ended by the signal
