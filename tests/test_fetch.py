"""fetch: mirror reading, filters, provenance and fast, clear failures."""

import time
from pathlib import Path

import pytest

from tunebench.fetch import MIRROR_ENV, fetch, fetch_hub, resolve_mirror
from tunebench.io import DataError
from tunebench.tasks import load_task

TASKS = Path(__file__).resolve().parents[1] / "tasks"


def test_mirror_filter_and_provenance(mirror_dir):
    frames, prov = fetch(load_task(TASKS / "nwgi.yaml"), mirror_dir)
    assert {k: len(v) for k, v in frames.items()} == {"train": 3034, "test": 1013}
    assert set(frames["train"]["proxy_split"]) == {"train"}
    # source_row counts rows of the file before filtering, so ids stay unique across splits
    assert set(frames["train"]["source_row"]).isdisjoint(frames["test"]["source_row"])
    assert prov["source"] == "mirror" and len(prov["file_sha256"]["test.parquet"]) == 64


def test_missing_mirror_folder_is_named_fast(tmp_path):
    start = time.monotonic()
    with pytest.raises(DataError, match=f"mirror folder {tmp_path}/fpb not found"):
        fetch(load_task(TASKS / "fpb.yaml"), tmp_path)
    assert time.monotonic() - start < 1.0


def test_missing_mirror_file_is_named(tmp_path):
    (tmp_path / "fpb").mkdir()
    with pytest.raises(DataError, match=f"{tmp_path}/fpb/train.parquet: file not found"):
        fetch(load_task(TASKS / "fpb.yaml"), tmp_path)


def test_corrupt_parquet_is_named(tmp_path):
    (tmp_path / "fpb").mkdir()
    (tmp_path / "fpb" / "train.parquet").write_bytes(b"PAR1 not really")
    unpinned = {"source": {"mirror": {"splits": {"train": {"sha256": None},
                                                 "test": {"sha256": None}}}}}
    with pytest.raises(DataError, match="train.parquet: not a readable parquet file"):
        fetch(load_task(TASKS / "fpb.yaml", unpinned), tmp_path)


def test_file_differing_from_its_pin_is_refused(tmp_path):
    (tmp_path / "fpb").mkdir()
    (tmp_path / "fpb" / "train.parquet").write_bytes(b"PAR1 not really")
    with pytest.raises(DataError, match=r"train.parquet: sha256 \w+ differs from the pinned "
                                        r"source.mirror.splits.train.sha256"):
        fetch(load_task(TASKS / "fpb.yaml"), tmp_path)


def test_env_var_overrides_param(monkeypatch, tmp_path):
    monkeypatch.setenv(MIRROR_ENV, str(tmp_path))
    assert resolve_mirror("../elsewhere") == tmp_path
    monkeypatch.delenv(MIRROR_ENV)
    assert resolve_mirror("../elsewhere") == Path("../elsewhere")
    assert resolve_mirror(None) is None


def test_offline_hub_fails_fast_naming_the_dataset():
    start = time.monotonic()
    with pytest.raises(DataError, match="could not read zeroshot/twitter-financial-news-sentiment"):
        fetch_hub(load_task(TASKS / "tfns.yaml"))
    assert time.monotonic() - start < 10.0  # offline mode: no 46 s of retries
