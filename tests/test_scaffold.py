"""The scaffold command: a data file in, a task file that loads (and runs through fetch and
label-transform) out, with the guesses marked for review."""

import pytest

from tests.test_bad_inputs import Toy
from tunebench.data.scaffold import main, scaffold
from tunebench.data.tasks import load_task
from tunebench.io import DataError

ROWS = [(f"Company {i % 10} beats estimates", f"c{i % 3}",
         ["Positive", "Negative", "Neutral"][i % 3]) for i in range(30)]


def write_csv(path, rows=ROWS, header="headline,company,sentiment"):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(header + "\n" + "".join(",".join(r) + "\n" for r in rows))
    return path


def test_one_file_gives_a_grouped_resplit_task_that_runs(tmp_path, capsys, monkeypatch):
    toy = Toy(tmp_path, capsys)
    monkeypatch.chdir(tmp_path)
    data = write_csv(tmp_path / "data" / "mine" / "all.csv")
    assert main([str(data), "--name", "mine", "--tasks", str(tmp_path / "tasks")]) == 0
    out = capsys.readouterr().out
    assert "text_field: headline  # REVIEW" in out and "group: headline" in out
    assert "mine: {run: mine" in out and "mixture: {mine: 1}" in out
    task = load_task(tmp_path / "tasks" / "mine.yaml")
    assert task.text_field == "headline" and task.label.field == "sentiment"
    assert task.labels == ("negative", "neutral", "positive")
    assert task.files.splits["all"].file == "data/mine/all.csv"
    assert task.resplit.group == "headline"
    toy.params(datasets={"toy": {"run": "toy"}, "mine": {"run": "mine"}})
    code, err = toy.run("fetch", "--dataset", "mine", "--tasks", str(tmp_path / "tasks"),
                        "--out", str(tmp_path / "raw"))
    assert code == 0, err
    code, err = toy.run("label_transform", "--dataset", "mine", "--tasks",
                        str(tmp_path / "tasks"), "--raw", str(tmp_path / "raw"), "--out",
                        str(tmp_path / "labeled"))
    assert code == 0, err
    summary = toy.summary()
    assert summary["test_texts_in_train"] == 0 and summary["resplit"]["groups"]["test"] >= 2


def test_train_and_test_files_with_named_columns(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    train = write_csv(tmp_path / "d" / "train.csv", header="tweet,company,sentiment")
    test = tmp_path / "d" / "test.jsonl"
    test.write_text('{"tweet": "Shares fell", "company": "c1", "sentiment": "Negative"}\n')
    path, body, _ = scaffold("mine", train, test, "tweet", "sentiment", tmp_path / "tasks",
                             tmp_path)
    task = load_task(path)
    assert set(task.files.splits) == {"train", "test"} and task.resplit is None
    assert all(len(s.sha256) == 64 for s in task.files.splits.values())


def test_existing_task_files_and_bad_guesses_are_errors(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    data = write_csv(tmp_path / "all.csv")
    scaffold("mine", data, None, None, None, tmp_path / "tasks", tmp_path)
    with pytest.raises(DataError, match="exists; pass --force"):
        scaffold("mine", data, None, None, None, tmp_path / "tasks", tmp_path)
    scaffold("mine", data, None, None, None, tmp_path / "tasks", tmp_path, force=True)
    with pytest.raises(DataError, match="no column 'text'"):
        scaffold("other", data, None, "text", None, tmp_path / "tasks", tmp_path)
    unique = write_csv(tmp_path / "u.csv", [(f"t{i}", f"x{i}", f"l{i}") for i in range(30)])
    with pytest.raises(DataError, match="to serve as the label"):
        scaffold("u", unique, None, None, None, tmp_path / "tasks", tmp_path)
    assert main([str(tmp_path.parent / "elsewhere.csv"), "--name", "x", "--repo",
                 str(tmp_path)]) == 2
    assert "lies outside the repository" in capsys.readouterr().err
