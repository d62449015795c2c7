"""The tests' dataset mirror: TUNEBENCH_MIRROR when set, else ../shared/datasets."""

import os

import pytest

from tests.mirror import DEFAULT_MIRROR, REPO_ROOT, MirrorNotFound, find_mirror
from tunebench.data.fetch import MIRROR_ENV
from tunebench.running.params import load_params


def test_the_variable_wins_over_the_default(tmp_path):
    default = tmp_path / "default"
    default.mkdir()
    chosen = tmp_path / "chosen"
    chosen.mkdir()
    assert find_mirror({MIRROR_ENV: str(chosen)}, default) == chosen


def test_a_relative_variable_is_made_absolute_from_the_current_folder(tmp_path, monkeypatch):
    (tmp_path / "m").mkdir()
    monkeypatch.chdir(tmp_path)
    found = find_mirror({MIRROR_ENV: "m"}, tmp_path / "absent")
    assert found.is_absolute() and found == (tmp_path / "m").resolve()


def test_a_variable_naming_no_folder_fails_without_falling_back(tmp_path):
    with pytest.raises(MirrorNotFound, match=rf"{MIRROR_ENV}=.*nowhere is not a folder"):
        find_mirror({MIRROR_ENV: str(tmp_path / "nowhere")}, tmp_path)


def test_unset_or_empty_takes_the_default(tmp_path):
    assert find_mirror({}, tmp_path) == tmp_path.resolve()
    assert find_mirror({MIRROR_ENV: ""}, tmp_path) == tmp_path.resolve()


def test_neither_names_the_variable(tmp_path):
    with pytest.raises(MirrorNotFound, match=f"{MIRROR_ENV} is not set and the default .*absent"
                                             f" does not exist; set {MIRROR_ENV}="):
        find_mirror({}, tmp_path / "absent")


def test_the_default_is_the_pipelines_default_mirror():
    mirror = load_params(REPO_ROOT / "params.yaml")["fetch"]["mirror"]
    assert (REPO_ROOT / mirror).resolve() == DEFAULT_MIRROR.resolve()


def test_the_fixture_is_what_the_environment_says(mirror_dir):
    assert mirror_dir == find_mirror(os.environ)
