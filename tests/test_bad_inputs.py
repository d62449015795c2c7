"""Bad inputs get a one-line `error: ...` naming the file, row and field (exit 2), or an
explicit, counted quarantine; never a traceback and never silently fewer rows.

Each case runs a stage's CLI in-process on a throw-away task, mirror and params file. Model
outputs (empty, whitespace, other case, punctuation, two labels) are covered by
tests/test_parsing.py; task-file key/field/label-map errors by tests/test_tasks.py.
"""

import json
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from stages import _cli
from tunebench.io import read_jsonl

TASK = {
    "name": "toy", "version": 1, "labels": ["negative", "neutral", "positive"],
    "source": {"mirror": {"dir": "toy", "splits": {"train": {"file": "train.csv"},
                                                    "test": {"file": "test.csv"}}}},
    "text_field": "sentence", "label": {"field": "label", "map": {
        "neg": "negative", "neu": "neutral", "pos": "positive"}},
    "instruction": "Sentiment?", "template": "${instruction}\nInput: ${text}\nAnswer: ",
    "parser": "strict", "metrics": ["accuracy"],
}
TRAIN = "sentence,label\nShares rose,pos\nShares fell,neg\nResults in line,neu\nProfit up,pos\n"
TEST = "sentence,label\nSales fell,neg\nSales rose,pos\n"


class Toy:
    """A task file, a mirror and a params file in tmp_path; `run(stage, ...)` runs a CLI."""

    def __init__(self, root: Path, capsys):
        self.root, self.capsys = root, capsys
        self.mirror = root / "mirror" / "toy"
        self.mirror.mkdir(parents=True)
        (root / "tasks").mkdir()
        self.task(TASK)
        self.files(train=TRAIN, test=TEST)
        self.params()

    def task(self, data, name="toy"):
        (self.root / "tasks" / f"{name}.yaml").write_text(yaml.safe_dump(data))

    def files(self, **contents):
        for split, content in contents.items():
            data = content if isinstance(content, bytes) else content.encode()
            (self.mirror / f"{split}.csv").write_bytes(data)

    def params(self, **sections):
        params = {"fetch": {"mirror": str(self.root / "mirror")},
                  "label_transform": {"max_quarantine_share": 0.5, "max_leakage_share": 0.0},
                  "format_instructions": {"seed": 0, "caps": {}, "max_words": None},
                  "datasets": {"toy": {"run": "toy"}}}
        params.update(sections)
        (self.root / "params.yaml").write_text(yaml.safe_dump(params))

    def run(self, stage: str, *args: str) -> tuple[int, str]:
        module = __import__(f"stages.{stage}", fromlist=["main"])
        argv = [stage, "--params", str(self.root / "params.yaml"), *args]
        old, sys.argv = sys.argv, argv
        try:
            _cli.run(module.main)
            code = 0
        except SystemExit as exc:
            code = exc.code
        finally:
            sys.argv = old
        return code, self.capsys.readouterr().err

    def fetch(self):
        return self.run("fetch", "--dataset", "toy", "--tasks", str(self.root / "tasks"),
                        "--out", str(self.root / "raw"))

    def label(self):
        return self.run("label_transform", "--dataset", "toy", "--tasks",
                        str(self.root / "tasks"), "--raw", str(self.root / "raw"), "--out",
                        str(self.root / "labeled"))

    def summary(self):
        return json.loads((self.root / "labeled" / "summary.json").read_text())


@pytest.fixture
def toy(tmp_path, capsys):
    return Toy(tmp_path, capsys)


def one_line_error(code, err, *fragments):
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), err
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


def test_clean_input_passes_and_counts_reconcile(toy):
    assert toy.fetch()[0] == 0 and toy.label()[0] == 0
    summary = toy.summary()
    assert summary["rows_in"] == 6 and summary["quarantined"] == 0
    assert summary["test_texts_in_train"] == 0


# ---- dataset files ----------------------------------------------------------------------

def test_missing_column(toy):
    toy.files(train="text,label\nShares rose,pos\n")
    one_line_error(*toy.fetch(), "toy/train.csv: missing column(s) sentence", "has text, label")


@pytest.mark.parametrize(("row", "reason"), [
    ('"   ",pos', "empty text in 'sentence'"),
    (",pos", "empty text in 'sentence'"),
    ("Flat,", "missing label in 'label'"),
    ("Flat,NaN", "unknown label 'NaN' in 'label'"),  # CSV: only an empty cell is missing
    ("Flat,bullish", "unknown label 'bullish' in 'label'"),
])
def test_bad_rows_are_quarantined_and_counted(toy, row, reason):
    toy.files(train=TRAIN + row + "\n")
    assert toy.fetch()[0] == 0 and toy.label()[0] == 0
    summary = toy.summary()
    assert summary["splits"]["train"] == {**summary["splits"]["train"], "rows_in": 5,
                                          "kept": 4, "quarantined": 1}
    [bad] = [json.loads(x) for x in (toy.root / "labeled/quarantine.jsonl").read_text()
             .splitlines()]
    assert bad["id"] == "toy:train:4" and bad["reason"] == reason


def test_quarantine_above_threshold_fails_naming_the_row(toy):
    toy.files(train=TRAIN + "Flat,bullish\n")
    toy.params(label_transform={"max_quarantine_share": 0.01})
    assert toy.fetch()[0] == 0
    one_line_error(*toy.label(), "1 of 7 rows quarantined",
                   "toy:train:4: unknown label 'bullish' in 'label'")


def test_leakage_is_counted_and_fails_above_the_param(toy):
    toy.files(test=TEST + "shares   ROSE,pos\n")  # case and spacing do not hide a leak
    toy.params(label_transform={"max_quarantine_share": 0.0, "max_leakage_share": 0.5})
    assert toy.fetch()[0] == 0 and toy.label()[0] == 0
    summary = toy.summary()
    assert summary["test_texts_in_train"] == 1 and summary["test_texts_in_train_ids"] == [
        "toy:test:2"]
    toy.params(label_transform={"max_quarantine_share": 0.0, "max_leakage_share": 0.1})
    one_line_error(*toy.label(), "1 of 3 test texts also occur in train (33.33%)",
                   "max_leakage_share", "toy:test:2")


def test_duplicate_ids_fail(toy):
    assert toy.fetch()[0] == 0 and toy.label()[0] == 0
    path = toy.root / "labeled" / "train.parquet"
    df = pd.read_parquet(path)
    pd.concat([df, df.iloc[:1]]).to_parquet(path)
    code, err = toy.run("format_instructions", "--dataset", "toy", "--tasks",
                        str(toy.root / "tasks"), "--labeled", str(toy.root / "labeled"),
                        "--out", str(toy.root / "instr"))
    one_line_error(code, err, f"{path}: 1 duplicate id(s): 'toy:train:0' x2")


def format_instructions(toy):
    return toy.run("format_instructions", "--dataset", "toy", "--tasks",
                   str(toy.root / "tasks"), "--labeled", str(toy.root / "labeled"),
                   "--out", str(toy.root / "instr"))


def test_an_empty_split_fails_before_any_model_stage(toy):
    toy.files(test="sentence,label\n")
    assert toy.fetch()[0] == 0
    one_line_error(*toy.label(), "toy/test: no rows", "every split needs examples")


def test_a_split_whose_every_row_is_quarantined_fails(toy):
    toy.files(test="sentence,label\nSales fell,bearish\n")
    assert toy.fetch()[0] == 0
    one_line_error(*toy.label(), "toy/test: all 1 rows quarantined",
                   "toy:test:0: unknown label 'bearish'")


@pytest.mark.parametrize("text", ["\x00\x00", "\u200b\u200d", "\ufeff \u2028", "\x07\t"])
def test_invisible_texts_are_quarantined_as_empty(toy, text):
    path = toy.mirror / "train.parquet"
    pd.DataFrame({"sentence": ["Shares rose", text], "label": ["pos", "neg"]}).to_parquet(path)
    toy.task({**TASK, "source": {"mirror": {"dir": "toy", "splits": {
        "train": {"file": "train.parquet"}, "test": {"file": "test.csv"}}}}})
    assert toy.fetch()[0] == 0 and toy.label()[0] == 0
    [bad] = read_jsonl(toy.root / "labeled/quarantine.jsonl")  # U+2028 is not a line end
    assert bad["id"] == "toy:train:1" and bad["reason"].startswith("empty text in 'sentence'")
    assert toy.summary()["splits"]["train"]["quarantine_reasons"] == {"empty text": 1}


def test_a_quarantine_share_of_one_is_refused(toy):
    toy.params(label_transform={"max_quarantine_share": 1})
    assert toy.fetch()[0] == 0
    one_line_error(*toy.label(), "label_transform.max_quarantine_share: expected a share "
                   "below 1 (0.01 = 1%), got 1")


@pytest.mark.parametrize(("caps", "fragment"), [
    ({"datasets": {"toy": {"run": "toy", "caps": {"tset": 1}}}},
     "datasets.toy.caps.tset: toy has no split 'tset' (did you mean 'test'?); its splits: "
     "test, train"),
    ({"datasets": {"toy": {"run": "toy", "caps": {"validation": 1}}}},
     "datasets.toy.caps.validation: toy has no split 'validation'"),
    ({"format_instructions": {"seed": 0, "caps": {"trian": 2}, "max_words": None}},
     "format_instructions.caps.trian: toy has no split 'trian' (did you mean 'train'?)"),
])
def test_a_cap_on_a_split_that_does_not_exist_is_refused(toy, caps, fragment):
    assert toy.fetch()[0] == 0 and toy.label()[0] == 0
    toy.params(**caps)
    one_line_error(*format_instructions(toy), fragment)


def test_a_shared_cap_on_a_split_the_dataset_lacks_is_allowed(toy):
    toy.params(format_instructions={"seed": 0, "caps": {"validation": 1}, "max_words": None})
    assert toy.fetch()[0] == 0 and toy.label()[0] == 0
    assert format_instructions(toy)[0] == 0


@pytest.mark.parametrize("damage", ["extra split", "missing split", "row count", "no summary"])
def test_labeled_files_must_match_their_summary(toy, damage):
    """A half-replaced labeled folder (files of two runs) is refused, not formatted."""
    assert toy.fetch()[0] == 0 and toy.label()[0] == 0
    labeled = toy.root / "labeled"
    if damage == "extra split":
        (labeled / "validation.parquet").write_bytes((labeled / "test.parquet").read_bytes())
        fragment = "describes splits ['test', 'train'] but"
    elif damage == "missing split":
        (labeled / "test.parquet").unlink()
        fragment = "holds ['train']; rerun label-transform"
    elif damage == "row count":
        df = pd.read_parquet(labeled / "train.parquet")
        df.iloc[:2].to_parquet(labeled / "train.parquet")
        fragment = "train.parquet: 2 rows, "
    else:
        (labeled / "summary.json").unlink()
        fragment = "summary.json: file not found"
    one_line_error(*format_instructions(toy), fragment)


@pytest.mark.parametrize(("where", "name"), [
    ("task split", "../../../x"), ("task split", "a/b"), ("dataset key", "../x"),
    ("task name", "../toy"), ("run name", "../../../x"), ("mirror dir", "../.."),
    ("mirror file", "../../outside.csv"),
])
def test_names_that_become_paths_cannot_escape(toy, where, name):
    """A split, dataset, task, run or mirror name with '..' or '/' is refused before anything is
    read or written outside its folder."""
    mirror = {"dir": "toy", "splits": {"train": {"file": "train.csv"},
                                       "test": {"file": "test.csv"}}}
    dataset = "toy"
    if where == "task split":
        mirror["splits"][name] = {"file": "test.csv"}
    elif where == "mirror dir":
        mirror["dir"] = name
    elif where == "mirror file":
        mirror["splits"]["test"] = {"file": name}
    toy.task({**TASK, "source": {"mirror": mirror}})
    if where == "dataset key":
        dataset = name
        toy.params(datasets={name: {"run": "toy"}})
    elif where == "task name":
        toy.params(datasets={"toy": {"run": "toy", "task": name}})
    elif where == "run name":
        toy.params(datasets={"toy": {"run": name}})
    before = sorted(p for p in toy.root.parent.rglob("*") if "raw" not in p.parts)
    code, err = toy.run("fetch", "--dataset", dataset, "--tasks", str(toy.root / "tasks"),
                        "--out", str(toy.root / "raw"))
    line = one_line_error(code, err)
    assert name in line and ("cannot name a file" in line or "lies outside" in line), line
    assert not (toy.root / "raw").exists()
    assert sorted(p for p in toy.root.parent.rglob("*") if "raw" not in p.parts) == before


def test_split_names_in_provenance_cannot_escape(toy):
    assert toy.fetch()[0] == 0
    path = toy.root / "raw" / "provenance.json"
    provenance = json.loads(path.read_text())
    provenance["splits"]["../../escaped"] = provenance["splits"]["test"]
    path.write_text(json.dumps(provenance))
    one_line_error(*toy.label(), "provenance.json: split name: '../../escaped' cannot name")
    assert not list(toy.root.parent.rglob("escaped*"))


def test_non_utf8_csv_names_the_line(toy):
    toy.files(train=TRAIN.encode() + b"caf\xe9 sales,pos\n")
    one_line_error(*toy.fetch(), "train.csv:6: not valid UTF-8 (byte 0xe9)")


def test_non_utf8_bytes_in_parquet_are_quarantined(toy):
    import pyarrow as pa
    import pyarrow.parquet as pq

    toy.task({**TASK, "source": {"mirror": {"dir": "toy", "splits": {
        "train": {"file": "train.parquet"}, "test": {"file": "test.csv"}}}}})
    table = pa.table({"sentence": pa.array([b"Shares rose", b"caf\xe9", b"Shares fell"],
                                           pa.binary()), "label": ["pos", "pos", "neg"]})
    pq.write_table(table, toy.mirror / "train.parquet")
    assert toy.fetch()[0] == 0 and toy.label()[0] == 0
    quarantine = (toy.root / "labeled/quarantine.jsonl").read_text()
    assert "non-UTF-8 bytes in 'sentence' at byte 3" in quarantine
    assert toy.summary()["splits"]["train"]["kept"] == 2


@pytest.mark.parametrize(("content", "fragment"), [
    (TRAIN + "Shares fell", "train.csv:6: 1 field(s), the header has 2"),   # cut mid-row
    (TRAIN + '"Shares fell,neg\n', "train.csv:"),                            # open quote
    (TRAIN + "a,pos,extra\n", "train.csv:6: 3 field(s), the header has 2"),
    ("", "train.csv: empty file"),
])
def test_truncated_or_corrupt_csv(toy, content, fragment):
    toy.files(train=content)
    one_line_error(*toy.fetch(), fragment)


def test_truncated_jsonl_names_the_line(toy):
    toy.task({**TASK, "source": {"mirror": {"dir": "toy", "splits": {
        "train": {"file": "train.jsonl"}, "test": {"file": "test.csv"}}}}})
    (toy.mirror / "train.jsonl").write_text('{"sentence": "up", "label": "pos"}\n'
                                            '{"sentence": "do')
    one_line_error(*toy.fetch(), "train.jsonl:2: not a valid UTF-8 JSON line")


def test_truncated_parquet(toy):
    toy.task({**TASK, "source": {"mirror": {"dir": "toy", "splits": {
        "train": {"file": "train.parquet"}, "test": {"file": "test.csv"}}}}})
    pd.DataFrame({"sentence": ["up"] * 50, "label": ["pos"] * 50}).to_parquet(
        toy.mirror / "train.parquet")
    data = (toy.mirror / "train.parquet").read_bytes()
    (toy.mirror / "train.parquet").write_bytes(data[: len(data) // 2])
    one_line_error(*toy.fetch(), "train.parquet: not a readable parquet file")


def test_pinned_file_hash_mismatch(toy):
    toy.task({**TASK, "source": {"mirror": {"dir": "toy", "splits": {
        "train": {"file": "train.csv", "sha256": "0" * 64}, "test": {"file": "test.csv"}}}}})
    one_line_error(*toy.fetch(), "train.csv: sha256", "differs from the pinned")


def test_row_count_drift_between_stages_is_caught(toy):
    assert toy.fetch()[0] == 0
    path = toy.root / "raw" / "train.parquet"
    pd.read_parquet(path).iloc[:2].to_parquet(path)  # rows lost after fetch
    one_line_error(*toy.label(), "train.parquet: 2 rows, provenance.json says 4")


def test_filter_that_drops_rows_unseen_fails(toy):
    toy.files(all="sentence,label,part\nup,pos,train\ndown,neg,test\nflat,neu,tset\n")
    toy.task({**TASK, "source": {"mirror": {"dir": "toy", "splits": {
        "train": {"file": "all.csv", "where": {"part": "train"}},
        "test": {"file": "all.csv", "where": {"part": "test"}}}}}})
    one_line_error(*toy.fetch(), "keep 2 of its 3 rows; 1 match no split's 'where'")


# ---- task files and params ---------------------------------------------------------------

@pytest.mark.parametrize(("section", "fragment"), [
    ({"label_transform": {"max_quarantine_shar": 0.1}},
     "label_transform: unknown key 'max_quarantine_shar' (did you mean 'max_quarantine_share'"),
    ({"label_transform": {"max_quarantine_share": "1%"}},
     "label_transform.max_quarantine_share: expected a share in [0, 1], got '1%'"),
    ({"datasets": {"toy": {"caps": {"train": 5}}}}, "datasets.toy: missing required field(s) run"),
    ({"datasets": {"toy": {"run": "toy", "caps": {"train": "all"}}}},
     "datasets.toy.caps.train: expected a positive integer or null, got 'all'"),
    ({"datasets": {"tyo": {"run": "toy"}}}, "datasets has no 'toy'"),
    ({"fetch": {"mirror": 3}}, "fetch.mirror: expected a folder path or null, got 3"),
])
def test_bad_params_are_named(toy, section, fragment):
    toy.params(**section)
    code, err = toy.fetch()
    if code == 0:  # fetch does not read every section
        code, err = toy.label()
    one_line_error(code, err, fragment)


def test_invalid_params_yaml(toy):
    (toy.root / "params.yaml").write_text("fetch: {mirror: [\n")
    one_line_error(*toy.fetch(), "params.yaml: not valid YAML")


@pytest.mark.parametrize(("change", "fragment"), [
    ({"labels": "positive"}, "toy.yaml: labels: expected a list, got str 'positive'"),
    ({"version": "1"}, "toy.yaml: version: expected an integer, got '1'"),
    ({"text_field": 5}, "toy.yaml: text_field: expected a string, got 5"),
    ({"sentence": "x"}, "toy.yaml: unknown key 'sentence'"),
    ({"label": {"field": "label", "map": {"neg": "negative", "pos": "positive"}}},
     "no raw value maps to label(s) ['neutral']"),
])
def test_bad_task_files_are_named(toy, change, fragment):
    toy.task({**TASK, **change})
    one_line_error(*toy.fetch(), fragment)


def _train_stage(toy, models, train=None):
    instr = toy.root / "instr" / "toy"
    instr.mkdir(parents=True, exist_ok=True)
    (instr / "train.jsonl").write_text('{"id": "a", "prompt": "p", "completion": "positive"}\n')
    toy.params(model="m", models=models, train_qlora=train or {"epochs": 1},
               runs={"toy": {"mixture": {"toy": 1}}}, paths={"model_cache": str(toy.root / "c")})
    return toy.run("train_qlora", "--run", "toy", "--instructions", str(toy.root / "instr"),
                   "--out", str(toy.root / "adapter"), "--live", str(toy.root / "live"))


@pytest.mark.parametrize(("model", "fragment"), [
    ({"source": "local", "path": "/no/such/model"},
     "models.m.path: model folder not found: /no/such/model"),
    ({"source": "gguf", "path": "/no/such/model.gguf"},
     "models.m.path: GGUF file not found: /no/such/model.gguf"),
    ({"source": "local", "path": "/x", "trust_remote_code": "yes"},
     "models.m.trust_remote_code must be true or false"),
    ({"source": "hub", "id": "org/model", "revision": "main"},
     "models.m.revision must be a 40-hex commit hash"),
])
def test_missing_or_unpinned_models_are_named(toy, model, fragment):
    one_line_error(*_train_stage(toy, {"m": model}), fragment)


def test_wrong_training_setting_type(toy, tiny_model_dir):
    models = {"m": {"source": "local", "path": str(tiny_model_dir)}}
    one_line_error(*_train_stage(toy, models, {"batch_size": "4"}),
                   "train_qlora (+ runs.toy.train_qlora).batch_size must be int, got '4'")


def test_errors_name_the_params_file_given(toy):
    """The library's checks say `params.yaml: <key>`; run with another --params file, the
    stage names that file (and a path already in a message is left alone)."""
    other = toy.root / "other.yaml"
    other.write_text(yaml.safe_dump({"fetch": {"mirror": str(toy.root / "mirror")},
                                     "datasets": {"toy": {"run": "toy"}}}))
    code, err = toy.run("fetch", "--dataset", "toy", "--tasks", str(toy.root / "tasks"),
                        "--out", str(toy.root / "raw"), "--params", str(other))
    line = one_line_error(code, err, f"{other}: missing section 'format_instructions'")
    assert "params.yaml" not in line
    other.write_text("fetch: {mirror: [\n")
    code, err = toy.run("fetch", "--dataset", "toy", "--tasks", str(toy.root / "tasks"),
                        "--out", str(toy.root / "raw"), "--params", str(other))
    assert one_line_error(code, err).startswith(f"error: {other}: not valid YAML")


def test_an_overrides_typo_is_blamed_on_the_params_entry(toy):
    toy.params(datasets={"toy": {"run": "toy", "overrides": {"lable": {"field": "label"}}}})
    one_line_error(*toy.fetch(), "datasets.toy.overrides: unknown key 'lable'", "label")
    toy.params(datasets={"toy": {"run": "toy", "overrides": {"label": {"feild": "label"}}}})
    one_line_error(*toy.fetch(), "unknown key 'feild'",
                   "merged with", "params.yaml: datasets.toy.overrides")


def test_appended_duplicate_rows_are_counted_not_silent(toy):
    """Ten copies of one row (same text, same label) appended to train: ids are positional, so
    the id check cannot see them; label-transform counts them, and the report shows it."""
    toy.files(train=TRAIN + "Shares rose,pos\n" * 10 + "SHARES  rose,neg\n")
    assert toy.fetch()[0] == 0 and toy.label()[0] == 0
    train = toy.summary()["splits"]["train"]
    assert (train["duplicate_rows"], train["repeated_texts"]) == (10, 11)
    assert toy.summary()["splits"]["test"]["duplicate_rows"] == 0
