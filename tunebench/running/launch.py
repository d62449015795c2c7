"""Multi-GPU training: `runs.<run>.launch` re-executes train-qlora under `accelerate launch`.

    runs:
      fingpt:
        launch: {config: configs/accelerate/ddp.yaml, num_processes: null}

`config` is an accelerate config file (DDP, FSDP or DeepSpeed; see configs/accelerate/);
`num_processes` null = one process per visible GPU (CUDA_VISIBLE_DEVICES). With one process
(one GPU, or none) the stage simply runs in place: `accelerate launch` would add nothing.
Each process trains on its shard of the data, so the effective batch is
batch_size x grad_accum x processes; only the main process writes outputs.
"""

from __future__ import annotations

import os
import socket
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tunebench.config import ConfigError, check_keys

LAUNCH_KEYS = {"config", "num_processes"}
DISTRIBUTED_TYPES = ("NO", "MULTI_GPU", "FSDP", "DEEPSPEED")
SHARDED = ("FSDP", "DEEPSPEED")
ENV_MARK = "TUNEBENCH_LAUNCHED"  # set in the relaunched processes, so they do not relaunch


@dataclass(frozen=True)
class LaunchSpec:
    config: Path
    num_processes: int | None = None

    @classmethod
    def from_params(cls, params: Any, where: str) -> LaunchSpec:
        check_keys(params, LAUNCH_KEYS, where, ("config",))
        n = params.get("num_processes")
        if n is not None and (not isinstance(n, int) or isinstance(n, bool) or n < 1):
            raise ConfigError(f"{where}.num_processes: expected a positive integer or null, "
                              f"got {n!r}")
        return cls(Path(params["config"]), n)


def load_accelerate_config(path: Path, where: str) -> dict[str, Any]:
    """The accelerate config file, checked for the fields this project relies on."""
    if not Path(path).is_file():
        raise ConfigError(f"{where}.config: accelerate config not found: {path}")
    config = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    kind = config.get("distributed_type")
    if kind not in DISTRIBUTED_TYPES:
        raise ConfigError(f"{path}: distributed_type must be one of {DISTRIBUTED_TYPES}, "
                          f"got {kind!r}")
    if config.get("mixed_precision", "no") != "no":
        # Precision is a training param (train_qlora.bf16, models.<m>.dtype), recorded by DVC;
        # a second source in this file could silently disagree with it.
        raise ConfigError(f"{path}: set mixed_precision: 'no'; precision comes from params")
    return config


def check_compatible(config: dict[str, Any], load_in_4bit: bool, where: str) -> None:
    """QLoRA under FSDP/ZeRO-3 needs loading support tunebench.models.loading does not have yet."""
    if load_in_4bit and config["distributed_type"] in SHARDED:
        raise ConfigError(
            f"{where}: {config['distributed_type']} with a 4-bit (QLoRA) model is not supported "
            f"yet (the model would need bnb_4bit_quant_storage and no device_map); use the DDP "
            f"config, or load_in_4bit: false for sharded training")


def visible_gpus() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def process_count(spec: LaunchSpec, gpus: int) -> int:
    return spec.num_processes or max(gpus, 1)


def free_port() -> int:
    """A free TCP port, so parallel DVC queue workers do not collide on 29500."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def accelerate_command(spec: LaunchSpec, processes: int, module: str, argv: list[str],
                       port: int) -> list[str]:
    return ["accelerate", "launch", "--config_file", str(spec.config),
            "--num_processes", str(processes), "--main_process_port", str(port),
            "-m", module, *argv]


def distributed_setup(params: Any, where: str, module: str, load_in_4bit: bool) -> bool:
    """Call early in a training stage. Returns True in the process that writes outputs.

    Without `launch` params, or with one process, nothing happens (True). Otherwise the
    first call replaces this process with `accelerate launch ... -m <module> <same args>`
    (it does not return); in the launched processes it pins each one to its GPU (before
    any model is placed on "cuda") and returns whether this is the main process.
    """
    if params is None:
        return True
    spec = LaunchSpec.from_params(params, where)
    config = load_accelerate_config(spec.config, where)
    check_compatible(config, load_in_4bit, where)
    if os.environ.get(ENV_MARK) != "1":
        processes = process_count(spec, visible_gpus())
        if processes == 1:
            return True
        cmd = accelerate_command(spec, processes, module, sys.argv[1:], free_port())
        print("launch: " + " ".join(cmd), flush=True)
        os.execvpe(cmd[0], cmd, {**os.environ, ENV_MARK: "1"})
    from accelerate import PartialState

    return PartialState().is_main_process  # also calls torch.cuda.set_device(local rank)


def scratch_outputs() -> tuple[Path, Path]:
    """(adapter folder, DVCLive folder) for a non-main process: same work, throw-away files."""
    import tempfile

    scratch = Path(tempfile.mkdtemp(prefix="tunebench-rank-"))
    return scratch / "adapter", scratch / "live"
