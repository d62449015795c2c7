"""Every key a task file takes, section by section: type, default and meaning.

This is the data `python -m tunebench.data.taskdoc` turns into docs/tasks.md. The examples are
not written here but read from the shipped task files (tasks/*.yaml) at render time; `example`
below is only for a key no shipped file uses. tests/test_taskdoc.py holds this list against
the loader (tunebench.data.tasks): every key set the loader checks must be one closed section
here, with the same required keys, and every key listed here must be accepted where it is
listed; defaults are compared with the loader's dataclasses.

Paths are dotted; `<split>`-style segments stand for any key, `[]` for every item of a list.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

UNSET: Any = object()  # no default and not required: the key is simply optional
ALWAYS = ("*",)  # `required` value: required wherever its section appears


@dataclass(frozen=True)
class Key:
    name: str  # the key, or `<placeholder>` for a key the user names
    type: str
    meaning: str
    required: tuple[str, ...] = ()  # ALWAYS, or the task types that require it
    default: Any = UNSET  # the value the loader uses when the key is absent
    default_text: str = ""  # shown instead of `required`/`default` when they need words
    example: Any = UNSET  # {key: value} shown when no shipped task file has the key
    example_from: str = ""  # the shipped task file (stem) to take the example from


@dataclass(frozen=True)
class Section:
    path: str  # "" is the top level
    keys: tuple[Key, ...]
    note: str = ""
    closed: bool = True  # the loader rejects any key not listed


TOP = Section("", keys=(
    Key("include", "string (a file path)",
        "A shared base task file, relative to this one (e.g. the four financial-sentiment "
        "sets include `_fin_sentiment.yaml`). Mappings merge key by key, recursively; any "
        "other value in this file wins. Bases may include further bases. Task files only: "
        "params overrides cannot include.", example_from="fpb"),
    Key("name", "string", "The dataset's name: must equal the file name without `.yaml`. "
        "Files starting with `_` are bases, not datasets.", ALWAYS),
    Key("version", "integer", "The task's version, recorded in every score record. Bump it "
        "when the label rule, prompt or source changes meaning.", ALWAYS),
    Key("description", "string", "One line on what the data is (the instructions' "
        "task.json).", default=""),
    Key("license", "string", "The data's license, as known (the instructions' task.json).",
        default=""),
    Key("notes", "string", "Caveats a reader of the results needs (substitute data, proxy "
        "splits); shown in the report.", default=""),
    Key("type", "string", "`classification` (a label rule and label names) or "
        "`summarization` (reference columns, no labels).", default="classification"),
    Key("source", "mapping", "Where the raw splits come from: `hub`, `mirror` or both (see "
        "`source`).", ALWAYS),
    Key("resplit", "mapping", "Make train/test from one raw split, seeded (see `resplit`); "
        "used only when the source lacks train or test."),
    Key("text_field", "string (a column)", "The raw column holding the input: it becomes the "
        "`text` column of the labeled data and `${text}` in the prompt.", ALWAYS),
    Key("rename", "mapping raw split -> {source column: column}", "Renames columns as fetch "
        "reads each raw split, so splits whose files name a column differently (`tweet` in "
        "train, `text` in test) meet the one name the task uses (see `rename`).", default={},
        example={"rename": {"train": {"tweet": "text"}}}),
    Key("fields", "mapping variable -> column", "Extra raw columns carried beside the text, "
        "each a prompt variable (`${parent}`).", default={}, example_from="sarc"),
    Key("label", "mapping", "The rule that turns raw values into a label (see `label`).",
        ("classification",), default_text="required (classification)", example_from="tfns"),
    Key("labels", "list of strings", "The label names, in order: the rule must produce "
        "exactly these, the parser answers with one of them, tables list them in this order.",
        ("classification",), default_text="required (classification)"),
    Key("references", "list of columns, or mapping split -> list", "The reference-summary "
        "column(s); see `references`.", ("summarization",),
        default_text="required (summarization)", example_from="dialogsum"),
    Key("instruction", "string", "The instruction, rendered first (it may use the prompt "
        "variables) and placed in the template as `${instruction}`; may be empty.", ALWAYS),
    Key("template", "string", "The prompt: `${instruction}`, `${text}`, every `fields` and "
        "`prompt_vars` name, and `${examples}` (few-shot). `$$` is a literal `$`. A typo'd "
        "variable fails at load time.", ALWAYS),
    Key("prompt_vars", "mapping variable -> constant or {field, map}", "Prompt variables: "
        "a constant, or looked up per row from a raw column (see `prompt_vars.<name>`).",
        default={}),
    Key("few_shot", "mapping", "Worked examples for a few-shot prompt (see `few_shot`).",
        default={}),
    Key("base_prompt", "string", "`zero_shot` or `few_shot`: how the un-tuned model is asked. "
        "With `few_shot` it sees `${examples}` filled; the tuned model always gets the prompt "
        "without them.", default="zero_shot"),
    Key("truncate", "mapping", "Accepted and read by no stage; cut long inputs with params "
        "`datasets.<name>.max_words` instead.", default={}),
    Key("parser", "string", "How a generated answer becomes a label or `INVALID`: one of "
        "{parsers}. Summarization tasks get `summary` (the text itself).", ("classification",),
        default_text="required (classification); `summary` (summarization)"),
    Key("metrics", "list of strings", "The metric names of the task, recorded in the "
        "instructions' task.json; score computes its own fixed set (classification: accuracy, "
        "weighted/macro/micro F1; summarization: ROUGE-1/2/L, BERTScore F1).", ALWAYS),
    Key("published", "list of mappings", "Published figures shown beside ours in the report "
        "(see `published[]`).", default=[]),
))

SOURCE = (
    Section("source", note="`hub`, `mirror` or both, or `files` alone. Which is read: "
            "`files` always; else params `fetch.mirror` or the `TUNEBENCH_MIRROR` environment "
            "variable set means the mirror, else the Hub.",
            keys=(
                Key("hub", "mapping", "A Hugging Face dataset (see `source.hub`)."),
                Key("mirror", "mapping", "A folder of files in the local mirror (see "
                    "`source.mirror`)."),
                Key("files", "mapping raw split -> file", "Your own data: files of the "
                    "repository, each pinned by sha256 (see `source.files`).",
                    example={"files": {"train": {"file": "data/mine/train.csv",
                                                 "sha256": "64 hex digits"}}}),
            )),
    Section("source.hub", keys=(
        Key("id", "string", "The dataset id on the Hub.", ALWAYS),
        Key("config", "string", "The dataset config name.", default=None),
        Key("revision", "string", "A 40-hex commit (fetch checks it online), or a branch "
            "with `pinned: false`.", ALWAYS),
        Key("pinned", "boolean", "`false`: read the branch `revision` as it is now; the "
            "commit read is recorded with `\"unpinned\": true`.", default=True,
            example={"pinned": False}),
        Key("splits", "mapping raw split -> hub split(s) or file", "Raw splits by name; see "
            "`source.hub.splits`.", ALWAYS),
    )),
    Section("source.hub.splits", closed=False, note="Canonical splits are `train` and `test` "
            "(required, unless `resplit` makes them) and `validation` (optional: train-qlora "
            "keeps the adapter of the best epoch on it); any other name is a raw split for "
            "`resplit.from` (conventionally `all`).", keys=(
                Key("<split>", "string, list of strings, or mapping", "One hub split, several "
                    "concatenated in order, or a file of the repo "
                    "(`source.hub.splits.<split>`).", example_from="fiqa_sa"),
            )),
    Section("source.hub.splits.<split>", note="A split read from one text file of the repo "
            "(or a zip member), one row per line, for datasets that are loading scripts.",
            keys=(
                Key("file", "string", "Path inside the repo.", ALWAYS),
                Key("member", "string", "A member of the zip `file`; absent: `file` is the "
                    "text.", default=None),
                Key("encoding", "string", "The text encoding (a Python codec name).",
                    default="utf-8"),
                Key("sep", "string", "Each line splits at its last `sep`(s) into `columns`.",
                    ALWAYS),
                Key("columns", "list of strings", "Two or more distinct column names.",
                    ALWAYS),
                Key("sha256", "string (64 hex)", "Pins the downloaded file's content.",
                    default=None, example={"sha256": "<64 lowercase hex digits>"}),
            )),
    Section("source.files", closed=False, note="Local files: parquet, CSV, TSV or JSON Lines "
            "(by extension), paths relative to the repository (where `dvc repro` runs) and "
            "inside it. Each needs its `sha256`: `python -m tunebench.data.pins "
            "tasks/<name>.yaml` prints them to paste. Split names as in `source.hub.splits`; "
            "each entry has the keys of `source.mirror.splits.<split>`, `sha256` required.",
            keys=(
                Key("<split>", "mapping", "The file of this split: `file`, `sha256`, `where`."),
            )),
    Section("source.mirror", note="Files under `<mirror>/<dir>/`: parquet, CSV, TSV or JSON "
            "Lines (by extension).", keys=(
                Key("dir", "string", "The dataset's folder in the mirror.", ALWAYS),
                Key("splits", "mapping raw split -> file", "See `source.mirror.splits`.",
                    ALWAYS),
            )),
    Section("source.mirror.splits", closed=False, note="Split names as in "
            "`source.hub.splits`.", keys=(
                Key("<split>", "mapping", "The file of this split (below)."),
            )),
    Section("source.mirror.splits.<split>", keys=(
        Key("file", "string", "File name under the dataset's folder: `.parquet`, `.csv`, "
            "`.tsv` or `.jsonl`.", ALWAYS),
        Key("where", "mapping column -> value", "Keep only rows whose column equals the value "
            "(see *Several splits in one file*).", default={}),
        Key("sha256", "string (64 hex)", "The file's sha256; fetch refuses a file that "
            "differs. Unset: read unpinned.", default=None),
    )),
)

DATA = (
    Section("resplit", note="The split `datasets.Dataset.train_test_split(test_size, seed)` "
            "makes, row by row (or by `group`); see *One raw split*.", keys=(
                Key("from", "string", "The raw split to split (e.g. `all`).", ALWAYS),
                Key("test_size", "float in (0, 1)", "The test share; the test split gets "
                    "ceil(test_size * rows) rows.", ALWAYS),
                Key("seed", "integer", "The permutation seed.", ALWAYS),
                Key("group", "string (a column)", "Keep every row of a group on one side: "
                    "rows whose column values are equal once case and spaces are folded "
                    "(name the text column to keep repeated texts together). Groups are "
                    "drawn in seeded order until the test side holds ceil(test_size * rows) "
                    "rows; label-transform's summary.json counts groups and rows per side. "
                    "A row without a value is an error.", default=None,
                    example={"group": "headline"}),
            )),
    Section("label", note="Exactly one rule: `map` on a `field`, `bins` on a `field`, or "
            "`any_of` with a true/false `map`. Its labels must be exactly `labels`; a row "
            "whose value the rule does not cover is quarantined with its reason.", keys=(
                Key("field", "string (a column)", "The raw label column.",
                    default_text="required with `map` or `bins`"),
                Key("map", "mapping raw value -> label", "Raw values (as YAML reads them: "
                    "`0` is an integer) to labels; with `any_of`, keys `true` and `false`.",
                    example_from="tfns"),
                Key("bins", "mapping", "Right-open score bins on a numeric `field` (see "
                    "`label.bins`)."),
                Key("any_of", "list of columns", "Boolean columns: the row's label is "
                    "`map[true]` when any is true, else `map[false]`."),
            )),
    Section("label.bins", keys=(
        Key("edges", "list of numbers", "Sorted edges; label i covers "
            "edges[i-1] <= value < edges[i].", ALWAYS),
        Key("labels", "list of strings", "One more label than edges, lowest first.", ALWAYS),
    )),
    Section("rename", closed=False, note="Applied by fetch to the raw split as read, before "
            "any column is checked; `\"*\"` renames in every split, a split's own entry adds to "
            "it. The source column must exist and the new name must not.", keys=(
                Key("<split>", "mapping source column -> column", "The split's renames."),
            )),
    Section("references", closed=False, note="Summarization. A list applies to every split; "
            "a mapping names the columns per split (`\"*\"`: every split without its own "
            "entry). The first column is the training target; every prediction is scored "
            "against all of them, keeping the best per example and metric.", keys=(
                Key("<split>", "list of columns", "The split's reference columns."),
            )),
)

PROMPT = (
    Section("prompt_vars", closed=False, keys=(
        Key("<name>", "string or mapping", "A constant, or `{field, map}` "
            "(`prompt_vars.<name>`).", example_from="tfns"),
    )),
    Section("prompt_vars.<name>", note="The per-row form.", keys=(
        Key("field", "string (a column)", "The raw column to look up.", ALWAYS),
        Key("map", "mapping raw value -> string", "Its value per raw value; an unmapped value "
            "fails the row.", ALWAYS),
    )),
    Section("few_shot", note="Checked when `base_prompt: few_shot`.", keys=(
        Key("examples", "list of mappings", "The worked examples (`few_shot.examples[]`).",
            ALWAYS, default_text="required with `base_prompt: few_shot`"),
        Key("example_template", "string", "How one example renders into `${examples}`.",
            ALWAYS, default_text="required with `base_prompt: few_shot`"),
    )),
    Section("few_shot.examples[]", closed=False, keys=(
        Key("label", "string", "One of `labels`.", ALWAYS),
        Key("<variable>", "string", "Every other variable `example_template` uses.",
            example_from="sarc"),
    )),
    Section("published[]", closed=False, note="The report reads these keys; the loader "
            "checks none of them.", keys=(
                Key("system", "string", "The published system."),
                Key("kind", "string", "`base` or `tuned`: set beside our system of that kind; "
                    "`note` for a remark only."),
                Key("accuracy", "number", "Published accuracy.", example_from="sarc"),
                Key("f1_weighted", "number", "Published weighted F1."),
                Key("f1_binary", "number", "Published F1 of one class (`positive` names it), "
                    "as `evaluate`'s \"f1\" reports a two-class task; set beside our F1 of "
                    "that class.", example_from="imdb"),
                Key("positive", "string (a label)", "The class a published `f1_binary` is "
                    "the F1 of.", example_from="imdb"),
                Key("note", "string", "A remark shown in the table."),
            )),
)

SECTIONS: tuple[Section, ...] = (TOP, *SOURCE, *DATA, *PROMPT)

# params.yaml `datasets.<name>` (tunebench.running.params.DATASET_KEYS) and `runs.<run>` (RUN_KEYS).
DATASET_PARAMS = {
    "run": "required: the key of `runs` whose model trains on this dataset.",
    "task": "The task file stem (default: the dataset name), so one task file can serve "
            "two datasets with different overrides.",
    "caps": "Mapping split -> cap on rows (`null`: all), per split over "
            "`format_instructions.caps`: a seeded sample, stratified by label "
            "(summarization: uniform).",
    "max_words": "Cut each input to its first N words (counted in the summary and report); "
                 "default `format_instructions.max_words`.",
    "overrides": "A mapping merged into the task file (same keys and rules as the file, "
                 "mappings merge key by key), e.g. `overrides: {label: {any_of: [...]}}`.",
    "validation_share": "Hold out this share of the capped training rows as validation "
                        "(`null`: off); default `format_instructions.validation_share`.",
}
RUN_PARAMS = {
    "mixture": "required: mapping dataset -> replication factor (positive integer); its keys "
               "must be exactly the datasets whose `run` is this run.",
    "model": "A key of `models` (default: params `model`).",
    "train_qlora": "Overrides of the `train_qlora` section for this run.",
    "predict": "Overrides of the `predict` section for this run.",
    "zero_shot": "`{model, modes}`: also answer this run's test sets with that causal LM, "
                 "zero-shot (systems `zeroshot_llm*`; the IMDB encoder run).",
    "adapter": "A published LoRA adapter on the Hub, pinned, installed instead of training.",
    "launch": "`{config, num_processes}`: re-run train-qlora under `accelerate launch` "
              "(several GPUs).",
}
