"""Hugging Face Hub access: check gated repos and pinned revisions before anything downloads,
and install a published LoRA adapter (an "external adapter" run) at its pinned revision, or,
for an adapter marked `pinned: false`, at the commit its branch resolves to (recorded, and
the run's provenance says `"unpinned": true`).

The token is read from the environment (HF_TOKEN, or the legacy HUGGING_FACE_HUB_TOKEN) and is
never printed, logged or written anywhere. huggingface_hub is imported inside functions.

    python -m tunebench.running.hub check [--params params.yaml]   # preflight of the active params
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tunebench.config import ConfigError, check_keys

TOKEN_VARS = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")
ADAPTER_KEYS = {"source", "id", "revision", "pinned", "files"}
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors", "adapter_model.bin")
SHA = re.compile(r"[0-9a-f]{40}")


class HubAccessError(ConfigError):
    """A hub repo cannot be read as configured (gated, missing, bad revision, offline)."""


@dataclass(frozen=True)
class HubRepo:
    """One hub repo the benchmark will read: where it is configured, id, pinned revision."""

    where: str  # the params key, for messages
    id: str
    revision: str
    pinned: bool = True  # false: a branch (`pinned: false` in params), read as it is now


def hub_token() -> str | None:
    """The token from the environment, or None. Callers pass it on; nobody prints it."""
    for name in TOKEN_VARS:
        value = os.environ.get(name, "").strip()
        if value:
            return value
    return None


def offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").strip().lower() in ("1", "true", "yes", "on")


def unpinned_message(where: str, repo_id: str, revision: Any) -> str:
    return (f"{where}.revision is {revision!r}, not a pinned 40-hex commit: look up the commit "
            f"at https://huggingface.co/{repo_id}/commits/main and write it into {where}.revision")


def adapter_repo(params: Any, where: str) -> HubRepo:
    """Validate a `runs.<run>.adapter` mapping: a published LoRA adapter on the Hub, pinned
    to a commit, or `pinned: false` with a branch when no commit of it is known."""
    check_keys(params, ADAPTER_KEYS, where, ("id", "revision"))
    if params.get("source", "hub") != "hub":
        raise ConfigError(f"{where}.source: only 'hub' adapters are supported")
    repo_id, revision, pinned = params["id"], params["revision"], params.get("pinned", True)
    if not isinstance(repo_id, str) or repo_id.count("/") != 1:
        raise ConfigError(f"{where}.id must be 'owner/name', got {repo_id!r}")
    if not isinstance(pinned, bool):
        raise ConfigError(f"{where}.pinned must be true or false, got {pinned!r}")
    if not pinned:
        if not isinstance(revision, str) or not revision.strip():
            raise ConfigError(f"{where}.revision: an unpinned adapter needs a branch, e.g. main")
        if SHA.fullmatch(revision):
            raise ConfigError(f"{where}.revision {revision} is a commit, so the adapter is "
                              f"pinned; remove {where}.pinned")
        return HubRepo(where, repo_id, revision, pinned=False)
    if not isinstance(revision, str) or not SHA.fullmatch(revision):
        raise ConfigError(unpinned_message(where, repo_id, revision)
                          + f" (or set {where}.pinned: false to read a branch, recorded)")
    return HubRepo(where, repo_id, revision)


def hub_repos(params: dict[str, Any]) -> list[HubRepo]:
    """Every hub repo the active params read: the benchmark model and external adapters."""
    name = params.get("model")
    model = (params.get("models") or {}).get(name) or {}
    repos = []
    if model.get("source") == "hub":
        where = f"models.{name}"
        revision = model.get("revision")
        if not isinstance(revision, str) or not SHA.fullmatch(revision):
            raise ConfigError(unpinned_message(where, model.get("id"), revision))
        repos.append(HubRepo(where, model["id"], revision))
    for run, entry in sorted((params.get("runs") or {}).items()):
        if (entry or {}).get("adapter") is not None:
            repos.append(adapter_repo(entry["adapter"], f"runs.{run}.adapter"))
    return repos


def check_access(repo: HubRepo, token: str | None = None, api=None) -> str:
    """Fail with a clear message unless `repo` at its revision can be downloaded.

    Metadata calls only (model_info, auth_check): nothing is downloaded. Returns a one-line
    status for logs. Offline (HF_HUB_OFFLINE=1) nothing is checked: the files must be cached.
    """
    if offline():
        return f"{repo.id}: not checked (HF_HUB_OFFLINE=1; files must already be cached)"
    from huggingface_hub import HfApi
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    api = api or HfApi()
    url = f"https://huggingface.co/{repo.id}"
    try:
        info = api.model_info(repo.id, revision=repo.revision, token=token or False)
    except GatedRepoError:
        info = None  # handled below with the gated message
    except RevisionNotFoundError:
        raise HubAccessError(f"{repo.where}: {repo.id} has no revision {repo.revision}; pin an "
                             f"existing commit from {url}/commits/main") from None
    except RepositoryNotFoundError:
        hint = "" if token else " (a private repo needs HF_TOKEN)"
        raise HubAccessError(f"{repo.where}: {repo.id} not found on the Hub{hint}") from None
    except HfHubHTTPError as exc:
        raise HubAccessError(f"{repo.where}: cannot reach {repo.id} on the Hub "
                             f"({type(exc).__name__}); check the network or set "
                             f"HF_HUB_OFFLINE=1 with the files cached") from None
    gated = True if info is None else bool(getattr(info, "gated", False))
    at = f"{repo.id}@{repo.revision[:12]}{'' if repo.pinned else ' (unpinned)'}"
    if not gated:
        return f"{at}: public"
    if token is None:
        raise HubAccessError(
            f"{repo.where}: {repo.id} is a gated model. Accept its license at {url} with your "
            f"Hugging Face account, then export HF_TOKEN=<a read token of that account> "
            f"(https://huggingface.co/settings/tokens). Nothing was downloaded.")
    try:
        api.auth_check(repo.id, token=token)
    except GatedRepoError:
        raise HubAccessError(
            f"{repo.where}: {repo.id} is gated and the account of HF_TOKEN has no access yet: "
            f"request it at {url} (approval can take a while). Nothing was downloaded."
        ) from None
    except RepositoryNotFoundError:
        raise HubAccessError(f"{repo.where}: HF_TOKEN cannot see {repo.id}; is the token "
                             f"valid and of the account that was granted access?") from None
    return f"{at}: gated, access granted"


def preflight(params: dict[str, Any], token: str | None = None, api=None) -> list[str]:
    """check_access for every hub repo of the params; the first failure raises."""
    token = hub_token() if token is None else token
    return [check_access(repo, token, api) for repo in hub_repos(params)]


def install_adapter(params: Any, where: str, out_dir: Path, download=None) -> dict[str, Any]:
    """Copy a published adapter (at its pinned revision) into out_dir as safetensors.

    `download(repo_id, revision, patterns, token) -> folder` defaults to snapshot_download;
    tests pass a fake. A pickled adapter_model.bin is converted (weights only) so the
    adapter folder looks exactly like a trained one. Returns provenance: id, revision, the
    commit read (an unpinned adapter's branch resolved online; offline, the cache snapshot's
    commit), `unpinned` and the files' sha256.
    """
    from tunebench.io import sha256_file

    repo = adapter_repo(params, where)
    token = hub_token()
    check_access(repo, token)
    commit = adapter_commit(repo, token)
    patterns = list(params.get("files") or ADAPTER_FILES)
    folder = Path((download or _snapshot)(repo.id, commit or repo.revision, patterns, token))
    if commit is None and SHA.fullmatch(folder.name):
        commit = folder.name  # offline: the cache's snapshots/<commit> folder
    if not (folder / "adapter_config.json").is_file():
        raise HubAccessError(f"{where}: {repo.id}@{repo.revision} has no adapter_config.json")
    out_dir = Path(out_dir)
    shutil.rmtree(out_dir, ignore_errors=True)
    out_dir.mkdir(parents=True)
    shutil.copyfile(folder / "adapter_config.json", out_dir / "adapter_config.json")
    target = out_dir / "adapter_model.safetensors"
    if (folder / target.name).is_file():
        shutil.copyfile(folder / target.name, target)
    elif (folder / "adapter_model.bin").is_file():
        _bin_to_safetensors(folder / "adapter_model.bin", target)
    else:
        raise HubAccessError(f"{where}: {repo.id}@{repo.revision} has no adapter weights")
    return {"id": repo.id, "revision": repo.revision, "commit": commit,
            "unpinned": not repo.pinned,
            "files": {p.name: sha256_file(p) for p in sorted(out_dir.iterdir())}}


def adapter_commit(repo: HubRepo, token: str | None = None) -> str | None:
    """The commit the adapter is read at: online, its revision resolved on the Hub (a pinned
    one must resolve to its pin); offline, the pin, or None for a branch."""
    if offline():
        return repo.revision if repo.pinned else None
    resolved = resolve_model_commit(repo.id, repo.revision, token)
    if repo.pinned and resolved != repo.revision:
        raise HubAccessError(f"{repo.where}: {repo.id} pinned at {repo.revision}, but the Hub "
                             f"resolved that revision to {resolved}; nothing was downloaded")
    return resolved


def resolve_model_commit(repo_id: str, revision: str, token: str | None = None) -> str:
    """The commit a revision of a Hub model repo points at (metadata only)."""
    from huggingface_hub import HfApi

    return HfApi().model_info(repo_id, revision=revision, token=token or False).sha


def install_external_run(params: Any, where: str, out_dir: Path, live_dir: Path,
                         provenance: dict[str, Any], download=None) -> dict[str, Any]:
    """train-qlora for a run with `adapter`: install it and write the outputs a trained run
    writes (metrics.json, an empty loss curve, provenance.json), marked as external."""
    from tunebench.io import write_json

    adapter = install_adapter(params, where, out_dir, download)
    live_dir = Path(live_dir)
    curve = live_dir / "plots" / "metrics" / "train" / "loss.tsv"
    curve.parent.mkdir(parents=True, exist_ok=True)
    curve.write_text("step\tloss\n", encoding="utf-8")  # nothing was trained
    write_json(live_dir / "metrics.json", {"external_adapter": 1, "steps": 0})
    # `unpinned` at the top as well, for the report to flag a run read at a moving branch.
    write_json(live_dir / "provenance.json", {**provenance, "external_adapter": adapter,
                                              "unpinned": adapter["unpinned"]})
    note = (f", UNPINNED: {adapter['revision']} resolved to {adapter['commit']}"
            if adapter["unpinned"] else "")
    print(f"train-qlora: installed {adapter['id']}@{adapter['revision'][:12]} -> {out_dir} "
          f"(published adapter, not trained here{note})")
    return adapter


def _snapshot(repo_id: str, revision: str, patterns: list[str], token: str | None) -> str:
    from huggingface_hub import snapshot_download

    return snapshot_download(repo_id, revision=revision, allow_patterns=patterns,
                             token=token or False)


def _bin_to_safetensors(source: Path, target: Path) -> None:
    import torch
    from safetensors.torch import save_file

    state = torch.load(source, map_location="cpu", weights_only=True)  # no pickled code runs
    save_file({k: v.contiguous() for k, v in state.items()}, str(target))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("command", choices=["check"])
    p.add_argument("--params", type=Path, default=Path("params.yaml"))
    args = p.parse_args(argv)
    from tunebench.running.params import load_params

    try:
        for line in preflight(load_params(args.params)):
            print(f"hub: {line}")
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
