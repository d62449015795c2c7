"""What every stage shares: argument parsing, offline defaults, one-line errors."""

from __future__ import annotations

import argparse
import os
import re
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
        print(f"error: {name_params_file(str(exc), params_argument(sys.argv[1:]))}",
              file=sys.stderr)
        sys.exit(2)
    except Interrupted as exc:
        print(f"interrupted: {exc}", file=sys.stderr)
        sys.exit(128 + exc.signum)  # what a shell reports for a command ended by the signal


def params_argument(argv: list[str]) -> str:
    """The --params value a stage was given (default params.yaml), read without failing."""
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--params", default="params.yaml")
    found, _ = p.parse_known_args(argv)
    return found.params


def name_params_file(message: str, params: str) -> str:
    """The library's params checks say `params.yaml: <key>` (they get the parsed mapping, not
    its path); a stage run with another --params file names that file instead."""
    if params == "params.yaml":
        return message
    return re.sub(r"(?<![\w/.-])params\.yaml: ", lambda _: f"{params}: ", message)
