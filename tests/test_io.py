"""Atomic writes: a write that dies half-way leaves neither the target nor a temp file."""

import pytest

from tunebench.io import DataError, check_unique_ids, read_jsonl, write_json, write_jsonl


def test_failed_write_leaves_nothing(tmp_path):
    def rows():
        yield {"id": 1}
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        write_jsonl(tmp_path / "out.jsonl", rows())
    assert list(tmp_path.iterdir()) == []


def test_failed_rewrite_keeps_the_previous_complete_file(tmp_path):
    write_json(tmp_path / "m.json", {"a": 1})

    def rows():
        raise RuntimeError("killed")
        yield {}

    write_jsonl(tmp_path / "p.jsonl", [{"id": 1}])
    with pytest.raises(RuntimeError):
        write_jsonl(tmp_path / "p.jsonl", rows())
    assert read_jsonl(tmp_path / "p.jsonl") == [{"id": 1}]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.json", "p.jsonl"]


def test_duplicate_ids_are_named():
    check_unique_ids(["a", "b"], "x")
    with pytest.raises(DataError, match=r"x: 1 duplicate id\(s\): 'a' x3"):
        check_unique_ids(["a", "b", "a", "a"], "x")
