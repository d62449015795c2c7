"""Shared test set-up: offline Hugging Face, no telemetry, tiny assets built on demand."""

import os
from pathlib import Path

# Every hub call would otherwise retry for ~46 s before failing on these machines.
for _key, _value in {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "HF_UPDATE_DOWNLOAD_COUNTS": "0",
    "DVC_NO_ANALYTICS": "1",
    "TOKENIZERS_PARALLELISM": "false",
}.items():
    os.environ[_key] = _value

import pytest  # noqa: E402

from tests.mirror import MirrorNotFound, find_mirror  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def mirror_dir() -> Path:
    """The dataset mirror: TUNEBENCH_MIRROR, else ../shared/datasets. Missing, the tests that
    read it fail (naming the variable) rather than skip, so a lost mirror is never green."""
    try:
        return find_mirror(os.environ)
    except MirrorNotFound as exc:
        pytest.fail(str(exc))


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A tiny randomly initialised Llama with a locally trained tokenizer (seconds, offline)."""
    from tests.fixtures import build_tiny_llama

    return build_tiny_llama(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="session")
def tiny_t5_dir(tmp_path_factory) -> Path:
    """A tiny randomly initialised T5 (seq2seq) with a local tokenizer."""
    from tests.fixtures import build_tiny_t5

    return build_tiny_t5(tmp_path_factory.mktemp("tiny-t5"))


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory) -> Path:
    """A tiny randomly initialised BERT encoder (no head) with a local WordPiece tokenizer."""
    from tests.fixtures import build_tiny_bert

    return build_tiny_bert(tmp_path_factory.mktemp("tiny-bert"))
