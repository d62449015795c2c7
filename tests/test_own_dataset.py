"""A user's own data: splits whose files name a column differently (`rename`) and texts that
repeat across rows (`resplit.group`), through the fetch and label-transform CLIs."""

import pytest
import yaml

from tests.test_bad_inputs import TASK, TEST, Toy, one_line_error
from tunebench.config import ConfigError
from tunebench.data.label_transform import grouped_resplit_indices
from tunebench.data.tasks import load_task
from tunebench.io import DataError, read_parquet

TRAIN_TWEETS = "tweet,label\nShares rose,pos\nShares fell,neg\nResults in line,neu\n"
HEADLINES = [f"Company {i} reports results" for i in range(12)]


@pytest.fixture
def toy(tmp_path, capsys):
    return Toy(tmp_path, capsys)


def one_split(toy, group=None, copies=3):
    """One raw split `all`: every headline `copies` times (other case and spacing too), each
    copy scored for another company, as in a news-sentiment set."""
    labels = ["pos", "neg", "neu"]
    rows = ["sentence,company,label"]
    for i, headline in enumerate(HEADLINES):
        variants = [headline, headline.upper(), headline.replace(" ", "  ")]
        rows += [f"{variants[c % 3]},c{c},{labels[(i + c) % 3]}" for c in range(copies)]
    (toy.mirror / "all.csv").write_text("\n".join(rows) + "\n")
    resplit = {"from": "all", "test_size": 0.25, "seed": 42}
    if group:
        resplit["group"] = group
    toy.task({**TASK, "source": {"mirror": {"dir": "toy", "splits": {"all": {"file": "all.csv"}}}},
              "resplit": resplit})


def test_rename_gives_one_column_name_to_splits_that_differ(toy):
    toy.files(train=TRAIN_TWEETS)
    toy.task({**TASK, "rename": {"train": {"tweet": "sentence"}}})
    assert toy.fetch()[0] == 0 and toy.label()[0] == 0
    train = read_parquet(toy.root / "labeled" / "train.parquet")
    assert train["text"].tolist() == ["Shares rose", "Shares fell", "Results in line"]
    assert toy.summary()["splits"]["test"]["kept"] == len(TEST.splitlines()) - 1


def test_without_the_rename_the_missing_column_is_named(toy):
    toy.files(train=TRAIN_TWEETS)
    one_line_error(*toy.fetch(), "train.csv: missing column(s) sentence", "has tweet, label")


@pytest.mark.parametrize(("rename", "fragment"), [
    ({"train": {"tweet": "sentence"}}, "rename 'tweet' -> 'sentence'"),  # train has no tweet
    ({"*": {"label": "sentence"}}, "a column 'sentence' exists already"),
])
def test_a_rename_that_cannot_apply_is_an_error(toy, rename, fragment):
    toy.task({**TASK, "rename": rename})
    line = one_line_error(*toy.fetch(), fragment)
    assert any(f"{s}.csv: rename" in line and f"split '{s}'" in line for s in ("train", "test"))


@pytest.mark.parametrize("rename", [["tweet"], {"train": {"tweet": 3}}, {"train": {}},
                                    {"train": {"a": "x", "b": "x"}}])
def test_bad_rename_entries_are_refused(tmp_path, rename):
    path = tmp_path / "toy.yaml"
    path.write_text(yaml.safe_dump({**TASK, "rename": rename}))
    with pytest.raises(ConfigError, match="rename"):
        load_task(path)


def test_row_by_row_resplit_leaks_repeated_headlines(toy):
    """The issue's finding: the same headline on several rows lands on both sides."""
    one_split(toy)
    assert toy.fetch()[0] == 0
    one_line_error(*toy.label(), "test texts also occur in train",
                   "label_transform.max_leakage_share")


def test_grouped_resplit_keeps_every_group_on_one_side(toy):
    one_split(toy, group="sentence")
    assert toy.fetch()[0] == 0 and toy.label()[0] == 0
    summary = toy.summary()
    assert summary["test_texts_in_train"] == 0
    resplit = summary["resplit"]
    assert resplit["group"] == "sentence" and sum(resplit["groups"].values()) == len(HEADLINES)
    assert resplit["rows"] == {"train": summary["splits"]["train"]["rows_in"],
                               "test": summary["splits"]["test"]["rows_in"]}
    assert resplit["rows"]["test"] >= 0.25 * 3 * len(HEADLINES)
    folded = {s: {" ".join(t.lower().split()) for t in
                  read_parquet(toy.root / "labeled" / f"{s}.parquet")["text"]}
              for s in ("train", "test")}
    assert folded["train"].isdisjoint(folded["test"])
    first = (toy.root / "labeled" / "test.parquet").read_bytes()
    assert toy.label()[0] == 0  # seeded and stable
    assert (toy.root / "labeled" / "test.parquet").read_bytes() == first


def test_grouped_resplit_by_another_column(toy):
    one_split(toy, group="company")  # c0, c1, c2: three groups
    assert toy.fetch()[0] == 0
    # Grouping by company does not keep the headlines together: the leakage check still runs.
    one_line_error(*toy.label(), "test texts also occur in train")


def test_grouped_split_positions():
    keys = ["a", "a", "b", "c", "c", "c", "d"]
    train, test = grouped_resplit_indices(keys, 0.3, seed=0)
    assert sorted(train + test) == list(range(len(keys)))
    assert {keys[i] for i in train}.isdisjoint({keys[i] for i in test})
    assert len(test) >= 3 and (train, test) == grouped_resplit_indices(keys, 0.3, seed=0)
    assert train == sorted(train) and test == sorted(test)
    with pytest.raises(DataError, match="cannot make both a train and a test side"):
        grouped_resplit_indices(["a", "a"], 0.5, seed=0)


def test_a_row_without_a_group_value_is_named(toy):
    one_split(toy, group="company")
    path = toy.mirror / "all.csv"
    path.write_text(path.read_text() + "Company 99 reports results,,pos\n")
    assert toy.fetch()[0] == 0
    one_line_error(*toy.label(), "resplit.group", "row 36 has no 'company' value")


def test_group_must_name_a_column(tmp_path):
    path = tmp_path / "toy.yaml"
    resplit = {"from": "all", "test_size": 0.2, "seed": 1, "group": ["sentence"]}
    path.write_text(yaml.safe_dump({**TASK, "resplit": resplit}))
    with pytest.raises(ConfigError, match=r"resplit\.group: expected a column name"):
        load_task(path)


# ---- source.files: local data, pinned --------------------------------------------------

def local_files(toy, monkeypatch, pin=True):
    """train.tsv (with `tweet`) and test.jsonl under the repository (tmp_path as the cwd)."""
    monkeypatch.chdir(toy.root)
    folder = toy.root / "data" / "mine"
    folder.mkdir(parents=True)
    (folder / "train.tsv").write_text(TRAIN_TWEETS.replace(",", "\t"))
    (folder / "test.jsonl").write_text('{"sentence": "Sales fell", "label": "neg"}\n'
                                       '{"sentence": "Sales rose", "label": "pos"}\n')
    files = {"train": {"file": "data/mine/train.tsv"}, "test": {"file": "data/mine/test.jsonl"}}
    task = {**TASK, "source": {"files": files}, "rename": {"train": {"tweet": "sentence"}}}
    toy.task(task)
    if pin:
        from tunebench.data.pins import pins

        task["source"] = pins(toy.root / "tasks" / "toy.yaml", toy.root)["source"]
        toy.task(task)
    return folder


def test_local_csv_tsv_jsonl_files_are_a_source(toy, monkeypatch):
    local_files(toy, monkeypatch)
    assert toy.fetch()[0] == 0 and toy.label()[0] == 0
    summary = toy.summary()
    assert summary["source"]["source"] == "files"
    assert set(summary["source"]["file_sha256"]) == {"data/mine/train.tsv",
                                                      "data/mine/test.jsonl"}
    assert (summary["splits"]["train"]["kept"], summary["splits"]["test"]["kept"]) == (3, 2)


def test_a_local_file_without_its_pin_says_how_to_get_it(toy, monkeypatch):
    local_files(toy, monkeypatch, pin=False)
    one_line_error(*toy.fetch(), "source.files.", "needs its sha256 pin",
                   "python -m tunebench.data.pins")


def test_a_changed_local_file_is_refused(toy, monkeypatch):
    folder = local_files(toy, monkeypatch)
    (folder / "test.jsonl").write_text('{"sentence": "Sales flat", "label": "neu"}\n')
    one_line_error(*toy.fetch(), "test.jsonl: sha256", "differs from the pinned",
                   "source.files.test.sha256")


def test_a_local_file_outside_the_repository_is_refused(toy, monkeypatch):
    local_files(toy, monkeypatch)
    (toy.root.parent / "outside.csv").write_text(TEST)
    task = yaml.safe_load((toy.root / "tasks" / "toy.yaml").read_text())
    task["source"]["files"]["test"] = {"file": "../outside.csv", "sha256": "0" * 64}
    toy.task(task)
    one_line_error(*toy.fetch(), "source.files.test.file", "lies outside")


def test_files_is_the_only_source_of_its_task(tmp_path):
    path = tmp_path / "toy.yaml"
    source = {**TASK["source"], "files": {"test": {"file": "t.csv", "sha256": "0" * 64}}}
    path.write_text(yaml.safe_dump({**TASK, "source": source}))
    with pytest.raises(ConfigError, match="'files' .* is the only source"):
        load_task(path)


def test_pins_command_prints_a_block_that_loads(toy, monkeypatch, capsys):
    from tunebench.data.pins import main

    local_files(toy, monkeypatch, pin=False)
    assert main([str(toy.root / "tasks" / "toy.yaml")]) == 0
    block = yaml.safe_load(capsys.readouterr().out)
    assert all(len(entry["sha256"]) == 64 for entry in block["source"]["files"].values())
    assert main([str(toy.root / "tasks" / "missing.yaml")]) == 2
    assert "task file not found" in capsys.readouterr().err
