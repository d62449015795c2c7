"""fetch: mirror reading, filters, provenance and fast, clear failures."""

import time
from pathlib import Path

import pytest

from tunebench.data.fetch import MIRROR_ENV, fetch, fetch_hub, resolve_mirror
from tunebench.data.tasks import load_task
from tunebench.io import DataError

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


# --- Hub pins (the Hub is faked: resolve_commit, download_file, datasets.load_dataset) ------

FPB_PIN = "8d3fe0c36d5feec6b3cc5e455b0fcb4820fb9964"
TFNS_PIN = "ccbe24de388e287beb92dd393a335c376b350ac3"
OTHER = "0123456789abcdef0123456789abcdef01234567"
FPB_LINES = ("Operating profit rose to EUR 13.1 mn .@positive\r\n"
             "M\xe4kel\xe4 said sales fell @ 5 % .@negative\r\n"
             "\r\n"
             "The company is based in Espoo .@neutral \r\n")


def fpb_zip(path: Path, member: str = "FinancialPhraseBank-v1.0/Sentences_50Agree.txt") -> Path:
    """A small stand-in for data/FinancialPhraseBank-v1.0.zip: latin-1, CRLF, sentence@label."""
    import zipfile

    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("FinancialPhraseBank-v1.0/README.txt", "readme")
        archive.writestr(member, FPB_LINES.encode("latin-1"))
    return path


@pytest.fixture
def online_hub(monkeypatch, tmp_path):
    """HF_HUB_OFFLINE=0 with a fake Hub: `calls` records every resolve and download."""
    import tunebench.data.fetch as fetch_module

    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    hub = {"resolved": FPB_PIN, "calls": [], "zip": fpb_zip(tmp_path / "fpb.zip")}

    def resolve(repo_id, revision):
        hub["calls"].append(("resolve", repo_id, revision))
        return hub["resolved"]

    def download(repo_id, filename, revision):
        hub["calls"].append(("download", repo_id, filename, revision))
        return str(hub["zip"])

    monkeypatch.setattr(fetch_module, "resolve_commit", resolve)
    monkeypatch.setattr(fetch_module, "download_file", download)
    return hub


def test_pinned_hub_source_matching_its_pin_reads_the_zip_member(online_hub):
    frames, prov = fetch_hub(load_task(TASKS / "fpb.yaml"))
    assert online_hub["calls"] == [
        ("resolve", "takala/financial_phrasebank", FPB_PIN),
        ("download", "takala/financial_phrasebank", "data/FinancialPhraseBank-v1.0.zip",
         FPB_PIN)]
    df = frames["all"]
    assert list(df.columns) == ["source_row", "sentence", "label"]
    assert df["sentence"].tolist() == ["Operating profit rose to EUR 13.1 mn .",
                                       "M\xe4kel\xe4 said sales fell @ 5 % .",  # last '@' splits
                                       "The company is based in Espoo ."]
    assert df["label"].tolist() == ["positive", "negative", "neutral"]  # stripped, as ClassLabel
    assert df["source_row"].tolist() == [0, 1, 2]
    assert prov["commit"] == prov["revision"] == FPB_PIN and prov["commit_checked"] is True
    assert prov["unpinned"] is False
    info = prov["splits"]["all"]
    assert info["member"] == "FinancialPhraseBank-v1.0/Sentences_50Agree.txt"
    assert info["rows"] == 3 and info["blank_lines"] == 1 and len(info["sha256"]) == 64


def test_pinned_hub_source_resolving_elsewhere_is_refused(online_hub):
    online_hub["resolved"] = OTHER
    with pytest.raises(DataError) as err:
        fetch_hub(load_task(TASKS / "fpb.yaml"))
    message = str(err.value)
    for part in ("fpb.yaml", "takala/financial_phrasebank", FPB_PIN, OTHER):
        assert part in message
    assert [c[0] for c in online_hub["calls"]] == ["resolve"]  # nothing was downloaded


def test_unresolvable_revision_is_named(online_hub, monkeypatch):
    import tunebench.data.fetch as fetch_module

    def fail(repo_id, revision):
        raise OSError("connection refused")

    monkeypatch.setattr(fetch_module, "resolve_commit", fail)
    with pytest.raises(DataError, match=f"could not resolve takala/financial_phrasebank "
                                        f"revision {FPB_PIN}.*connection refused"):
        fetch_hub(load_task(TASKS / "fpb.yaml"))


def test_hub_datasets_are_read_at_the_checked_commit(online_hub, monkeypatch):
    """A pinned `datasets` source is loaded at its pin; an unpinned one (pinned: false) at
    the commit its branch resolved to, recorded with unpinned: true."""
    import datasets

    loads = []

    def load_dataset(repo_id, config, split, revision):
        loads.append((repo_id, split, revision))
        return datasets.Dataset.from_dict({"text": [f"{split} tweet"], "label": [1]})

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    online_hub["resolved"] = TFNS_PIN
    frames, prov = fetch_hub(load_task(TASKS / "tfns.yaml"))
    assert loads == [("zeroshot/twitter-financial-news-sentiment", "train", TFNS_PIN),
                     ("zeroshot/twitter-financial-news-sentiment", "validation", TFNS_PIN)]
    assert frames["test"]["text"].tolist() == ["validation tweet"]
    assert prov["commit"] == TFNS_PIN and prov["unpinned"] is False

    loads.clear()
    online_hub["resolved"] = OTHER
    branch = {"source": {"hub": {"revision": "main", "pinned": False}}}
    _, prov = fetch_hub(load_task(TASKS / "tfns.yaml", branch))
    assert {revision for _, _, revision in loads} == {OTHER}
    assert online_hub["calls"][-1] == ("resolve", "zeroshot/twitter-financial-news-sentiment",
                                       "main")
    assert (prov["revision"], prov["commit"], prov["unpinned"]) == ("main", OTHER, True)


def test_offline_pinned_source_reads_its_pin_unchecked(online_hub, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    _, prov = fetch_hub(load_task(TASKS / "fpb.yaml"))
    assert online_hub["calls"][0][0] == "download" and online_hub["calls"][0][-1] == FPB_PIN
    assert prov["commit"] == FPB_PIN and prov["commit_checked"] is False


def test_zip_member_found_by_file_name_and_bad_zips_named(online_hub, tmp_path):
    from tunebench.data.fetch import read_line_table

    spec = load_task(TASKS / "fpb.yaml").hub.files["all"]
    flat = fpb_zip(tmp_path / "flat.zip", member="Sentences_50Agree.txt")  # no folder
    df, info = read_line_table(flat, spec)
    assert len(df) == 3 and info["member"] == "Sentences_50Agree.txt"
    other = fpb_zip(tmp_path / "other.zip", member="x/Sentences_AllAgree.txt")
    with pytest.raises(DataError, match="no member 'FinancialPhraseBank-v1.0/Sentences_50Agr"):
        read_line_table(other, spec)
    (tmp_path / "bad.zip").write_bytes(b"not a zip")
    with pytest.raises(DataError, match="bad.zip: not a readable zip file"):
        read_line_table(tmp_path / "bad.zip", spec)


def test_line_without_separator_is_named(tmp_path):
    import zipfile

    from tunebench.data.fetch import read_line_table

    spec = load_task(TASKS / "fpb.yaml").hub.files["all"]
    with zipfile.ZipFile(tmp_path / "z.zip", "w") as archive:
        archive.writestr(spec.member, b"good .@neutral\nno label here\n")
    with pytest.raises(DataError, match=r"Sentences_50Agree.txt:2: expected 2 fields"):
        read_line_table(tmp_path / "z.zip", spec)


def test_hub_file_sha256_pin_is_checked(online_hub):
    pinned = {"source": {"hub": {"splits": {"all": {"sha256": "0" * 64}}}}}
    with pytest.raises(DataError, match="differs from the pinned source.hub.splits.all.sha256"):
        fetch_hub(load_task(TASKS / "fpb.yaml", pinned))
