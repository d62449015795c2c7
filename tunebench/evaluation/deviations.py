"""The deviations table: every compared run's settings beside the published recipe it follows.

A published recipe is a preset, data in `profiles/presets/<name>.yaml` (FinGPT's two recipes,
`fingpt-v3.3` and `fingpt-benchmark`, and the HR bias, sarcasm, summarization and IMDB
comparisons): one entry per row of the table, each with the published value (null when it was
not published), the setting in words, and either the params key(s) that express it here
(`how`) or why this project's code cannot run it yet (`missing`). The params key `recipes`
({run: preset}) names the preset each run is compared with; it may name runs a params file
lacks, so one mapping serves all of a profile's variants. No stage reads it.

For each run, each row says what the run does as its params and task files define it
(`deviation_rows`, a pure function of params, presets and tasks) and whether that matches:
yes, no, not expressible (the code cannot run the published setting), unknown (the setting
was not published) or n/a (the row does not apply, e.g. a parser for summaries). A run that
installs one of a preset's published adapters matches every training row by construction.

    python -m tunebench.evaluation.deviations              # docs/deviations.md from params.yaml
    python -m tunebench.evaluation.deviations --check      # fail when docs/deviations.md is stale
    python -m tunebench.evaluation.deviations --profile paper --variant mistral7b-fingpt --out -
"""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tunebench.config import ConfigError
from tunebench.data.tasks import Task
from tunebench.evaluation.presets import PRESETS_DIR, SETTINGS, load_presets
from tunebench.evaluation.score import reparse_applies
from tunebench.running.params import (
    DatasetEntry,
    dataset_entry,
    dataset_task,
    fetch_mirror_param,
    load_params,
    predict_settings,
    run_entry,
    run_model,
    section,
)

DOC = Path("docs/deviations.md")
RECIPES = "recipes"  # top-level params key: {run: preset name}

# Rows settled by the training itself: an installed published adapter matches them.
TRAINING = frozenset({"train_data", "epochs", "learning_rate", "warmup", "weight_decay",
                      "effective_batch", "lora_targets", "lora_r", "lora_alpha", "lora_dropout",
                      "max_seq_len", "prompt_loss", "validation", "over_length",
                      "label_targets"})
MATCHES = ("yes", "no", "not expressible", "unknown", "n/a")


@dataclass(frozen=True)
class Row:
    run: str
    preset: str
    setting: str  # a key of SETTINGS
    label: str
    published: str
    here: str
    match: str  # one of MATCHES
    how: str  # the params key(s) that express it, or "missing: <why>"


def recipes(params: dict[str, Any], presets: dict[str, dict]) -> dict[str, str]:
    """{run: preset} for the runs the params define, from params `recipes`."""
    mapping = params.get(RECIPES) or {}
    if not isinstance(mapping, dict):
        raise ConfigError(f"params.yaml: {RECIPES}: expected a mapping run -> preset name")
    for run, name in mapping.items():
        if name not in presets:
            raise ConfigError(f"params.yaml: {RECIPES}.{run}: no preset {name!r}; "
                              f"known: {', '.join(sorted(presets))}")
    runs = section(params, "runs")
    return {run: mapping[run] for run in runs if run in mapping}


# --- what a run does ------------------------------------------------------------------------

@dataclass(frozen=True)
class RunView:
    """One run as its stages will read it: model, training config, datasets and tasks."""

    run: str
    entry: dict[str, Any]
    spec: Any  # models.ModelSpec
    cfg: Any  # train.TrainConfig
    predict: dict[str, Any]
    datasets: dict[str, DatasetEntry]  # in mixture order
    tasks: dict[str, Task]
    mixture: dict[str, int]
    source: str  # "mirror" or "hub" (fetch.mirror set or not)
    processes: int | None  # None: one per visible GPU (launch.num_processes null)


def run_view(params: dict[str, Any], run: str, tasks_dir: Path) -> RunView:
    from tunebench.models.train_qlora import train_settings

    entry = run_entry(params, run)
    cfg = train_settings(params, run)
    mixture = dict(entry["mixture"])
    launch = entry.get("launch")
    return RunView(
        run=run, entry=entry, spec=run_model(params, run), cfg=cfg,
        predict=predict_settings(params, run),
        datasets={d: dataset_entry(params, d) for d in mixture},
        tasks={d: dataset_task(params, d, tasks_dir) for d in mixture}, mixture=mixture,
        source="mirror" if fetch_mirror_param(params) else "hub",
        processes=1 if launch is None else launch.get("num_processes"))


def _summarizes(v: RunView) -> bool:
    return any(t.type == "summarization" for t in v.tasks.values())


def _num(x: float) -> str:
    return f"{x:g}"


def _full(cap: int | None, rows: int) -> bool:
    """A cap keeps every published row (None, or at least as many)."""
    return cap is None or cap >= rows


def _datasets_match(v: RunView, published: dict, one_run: bool, split: str) -> bool:
    names = set(v.datasets)
    if (names != set(published)) if one_run else not names <= set(published):
        return False
    for d, spec in published.items():
        if d not in names:
            continue
        cap = v.datasets[d].caps.get(split)
        if v.source not in spec["same_rows"] or not _full(cap, spec["rows"]):
            return False
        if split == "train" and v.mixture[d] != spec["replicate"]:
            return False
    return True


# Each function: (view, published value, preset) -> (this run's setting in words, equal),
# equal None when the row does not apply to this run.

def _base_model(v, pub, preset):
    s = v.spec
    return f"{s.id or s.path} ({s.source})", pub is not None and s.id in pub


def _prompt_format(v, pub, preset):
    if v.spec.family == "encoder_cls":
        return "the text alone (encoder classifier)", pub == "text"
    base, tuned = v.spec.format_for("base"), v.spec.format_for("tuned")
    few_shot = sorted({t.base_prompt for t in v.tasks.values()}) == ["few_shot"]
    here = {"base": base, "tuned": tuned, "train_prompt": "same",
            "base_prompt": "few_shot" if few_shot else "zero_shot"}
    text = f"base {base}{', few-shot' if few_shot else ''}; tuned {tuned} (trained as asked)"
    if isinstance(pub, dict):
        return text, all(here.get(k) == val for k, val in pub.items())
    return text, False


def _parser(v, pub, preset):
    if _summarizes(v):
        return "none (summaries)", None
    if v.spec.family == "encoder_cls":
        return "none (argmax of the head)", None
    names = sorted({v.predict.get("parser") or t.parser for t in v.tasks.values()})
    if names != [pub] and all(reparse_applies(pub, t.labels) for t in v.tasks.values()):
        # score reads every generated answer again with the published parser (score.reparsed)
        return (f"{', '.join(names)}; the same answers also read by {pub} (published-figures "
                "table)"), True
    return ", ".join(names), names == [pub]


def _train_data(v, pub, preset):
    caps = [f"{d} {_cap(e.caps.get('train'))} ×{v.mixture[d]}" for d, e in v.datasets.items()]
    text = f"{', '.join(caps)} ({v.source})"
    return text, isinstance(pub, dict) and _datasets_match(v, pub, preset["one_run"], "train")


def _cap(cap: int | None) -> str:
    return "all" if cap is None else f"≤{cap:,}"


def _epochs(v, pub, preset):
    if v.cfg.max_steps > 0:
        return f"max_steps {v.cfg.max_steps}", False
    return _num(v.cfg.epochs), pub is not None and v.cfg.epochs == pub


def _close(a: float, b: Any) -> bool:
    return b is not None and math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)


def _learning_rate(v, pub, preset):
    optim = "" if v.cfg.optim == "adamw_torch" else f", {v.cfg.optim}"
    return f"{_num(v.cfg.learning_rate)}{optim}", _close(v.cfg.learning_rate, pub)


def _warmup(v, pub, preset):
    text = f"ratio {_num(v.cfg.warmup_ratio)}, {v.cfg.lr_scheduler} schedule"
    if not isinstance(pub, dict) or "ratio" not in pub:
        return text, False
    schedule = pub.get("schedule", v.cfg.lr_scheduler)
    return text, _close(v.cfg.warmup_ratio, pub["ratio"]) and schedule == v.cfg.lr_scheduler


def _weight_decay(v, pub, preset):
    return _num(v.cfg.weight_decay), _close(v.cfg.weight_decay, pub)


def _effective_batch(v, pub, preset):
    b, a, p = v.cfg.batch_size, v.cfg.grad_accum, v.processes
    if p is None:
        text = f"{b} × {a} per process, one process per GPU"
    else:
        text = f"{b} × {a}" + (f" × {p} processes" if p > 1 else "") + f" = {b * a * p}"
    if not isinstance(pub, dict):
        return text, False
    total = pub["batch_size"] * pub["grad_accum"] * pub["processes"]
    if p is None:  # DDP over whatever is visible: equal on the published number of GPUs
        n = pub["processes"]
        return f"{text} (= {b * a * n} on {n} GPU{'s' if n > 1 else ''})", b * a * n == total
    return text, b * a * p == total


def _lora_targets(v, pub, preset):
    targets = list(v.spec.lora_targets)
    return ", ".join(targets), pub is not None and set(targets) == set(pub)


def _lora_field(name):
    def here(v, pub, preset):
        value = getattr(v.cfg, name)
        return _num(value), _close(value, pub)
    return here


def _precision(v, pub, preset):
    if v.spec.load_in_4bit:
        value, text = "nf4", f"NF4 4-bit weights (QLoRA), {v.spec.dtype} compute"
    else:
        value, text = v.spec.dtype, f"{v.spec.dtype} weights, no quantization"
    return text, value == pub


def _max_seq_len(v, pub, preset):
    words = sorted({e.max_words for e in v.datasets.values() if e.max_words})
    cut = f"; inputs cut to {', '.join(map(str, words))} words first" if words else ""
    return f"{v.cfg.max_seq_len} tokens{cut}", v.cfg.max_seq_len == pub


def _prompt_loss(v, pub, preset):
    if v.spec.family == "seq2seq":
        return "n/a (the prompt is the encoder's input)", None
    if v.spec.family == "encoder_cls":
        return "n/a (a classifier)", None
    return "masked (labels -100): the completion only", pub == "masked"


def _validation(v, pub, preset):
    held = {d: _held_out(v, d) for d in v.datasets}
    select = "best" if v.cfg.select_best else "last"
    if not any(held.values()):
        return "none: every training row trained on, the last checkpoint kept", pub == "none"
    parts = [f"{d} {_held_text(h)}" for d, h in held.items() if h]
    kept = "best epoch by validation loss" if v.cfg.select_best else "last checkpoint"
    text = f"{', '.join(parts)}; {kept}"
    if not isinstance(pub, dict) or pub.get("select", select) != select:
        return text, False
    if "share" in pub:
        return text, all(h and h[0] == "share" and _close(h[1], pub["share"])
                         for h in held.values())
    return text, all(h == ("split", None) for h in held.values())


def _held_out(v: RunView, dataset: str) -> tuple[str, float | None] | None:
    """("share", s) for a seeded share of train held out, ("split", None) for the source's
    validation split, None for no validation data."""
    entry, task = v.datasets[dataset], v.tasks[dataset]
    if entry.validation_share is not None:
        return "share", entry.validation_share
    source = task.files or (task.mirror if v.source == "mirror" else task.hub)
    splits = set(getattr(source, "splits", {}) or {}) | set(getattr(source, "files", {}) or {})
    return ("split", None) if "validation" in splits else None


def _held_text(held: tuple[str, float | None]) -> str:
    return f"{held[1]:.0%} of train held out" if held[0] == "share" else "validation split"


def _over_length(v, pub, preset):
    if v.spec.family == "causal_lm":
        return "the prompt cut from the left (counted)", pub == "truncate_left"
    return "the input cut on the right (counted)", pub == "truncate_right"


def _label_targets(v, pub, preset):
    if _summarizes(v):
        return "n/a (summaries)", None
    here = {d: len(t.labels) for d, t in v.tasks.items()}
    text = ", ".join(f"{d} {n}" for d, n in here.items())
    return text, isinstance(pub, dict) and all(pub.get(d, n) == n for d, n in here.items())


def _test_split(v, pub, preset):
    parts = [f"{d}: {_split_text(v, d)}, {_cap(e.caps.get('test'))}"
             for d, e in v.datasets.items()]
    return "; ".join(parts), isinstance(pub, dict) and _datasets_match(
        v, pub, preset["one_run"], "test")


def _split_text(v: RunView, dataset: str) -> str:
    task = v.tasks[dataset]
    if task.files is not None and "test" in task.files.splits:
        return f"local file {task.files.splits['test'].file}"
    if v.source == "mirror" and task.mirror is not None and "test" in task.mirror.splits:
        split = task.mirror.splits["test"]
        where = "".join(f" where {k}={val}" for k, val in split.where.items())
        return f"mirror {task.mirror.dir}/{split.file}{where}"
    if task.resplit is not None:
        r = task.resplit
        grouped = f", grouped by {r.group}" if r.group else ""
        source = "local" if task.files is not None else v.source
        return (f"{source} {r.source} re-split (test_size {_num(r.test_size)}, seed {r.seed}"
                f"{grouped})")
    if task.hub is not None and "test" in task.hub.splits:
        return f"hub {'+'.join(task.hub.splits['test'])}"
    return "test"


def _metric(v, pub, preset):
    metrics = list(dict.fromkeys(m for t in v.tasks.values() for m in t.metrics))
    ok = pub is not None and all(m in t.metrics for t in v.tasks.values() for m in pub)
    return ", ".join(metrics), ok


HERE = {
    "base_model": _base_model, "prompt_format": _prompt_format, "parser": _parser,
    "train_data": _train_data, "epochs": _epochs, "learning_rate": _learning_rate,
    "warmup": _warmup, "weight_decay": _weight_decay, "effective_batch": _effective_batch,
    "lora_targets": _lora_targets, "lora_r": _lora_field("lora_r"),
    "lora_alpha": _lora_field("lora_alpha"), "lora_dropout": _lora_field("lora_dropout"),
    "precision": _precision, "max_seq_len": _max_seq_len, "prompt_loss": _prompt_loss,
    "validation": _validation, "over_length": _over_length, "label_targets": _label_targets,
    "test_split": _test_split, "metric": _metric,
}


# --- the table ------------------------------------------------------------------------------

def match(entry: dict[str, Any], equal: bool | None) -> str:
    if equal is None:
        return "n/a"
    if entry["value"] is None:
        return "unknown"
    if "missing" in entry:
        return "not expressible"
    return "yes" if equal else "no"


def run_rows(view: RunView, preset: dict[str, Any]) -> list[Row]:
    adapter = (view.entry.get("adapter") or {}).get("id")
    rows = []
    for key, label in SETTINGS:
        entry = preset["settings"][key]
        published = entry["text"] + (f"; {entry['note']}" if entry.get("note") else "")
        how = entry.get("how") or f"missing: {entry['missing']}"
        if adapter is not None and key in TRAINING:
            here, result = f"trained by FinGPT: adapter {adapter}", (
                "yes" if adapter in preset["adapters"] else "no")
        else:
            here, equal = HERE[key](view, entry["value"], preset)
            result = match(entry, equal)
        rows.append(Row(view.run, preset["name"], key, label, published, here, result, how))
    return rows


def deviation_rows(params: dict[str, Any], presets: dict[str, dict],
                   tasks_dir: Path = Path("tasks")) -> list[Row]:
    """Every row of every run that `recipes` compares with a preset, in run order."""
    rows = []
    for run, name in recipes(params, presets).items():
        rows += run_rows(run_view(params, run, tasks_dir), presets[name])
    return rows


def _cell(text: str) -> str:
    """One table cell: one line, pipes escaped, angle brackets as entities (not HTML)."""
    text = " ".join(str(text).split()).replace("|", "\\|")
    return text.replace("<", "&lt;").replace(">", "&gt;")


def render_markdown(rows: list[Row]) -> str:
    """One table per compared run: setting, published, this run, match, how to express it."""
    out = []
    for run in dict.fromkeys(r.run for r in rows):
        mine = [r for r in rows if r.run == run]
        counts = ", ".join(f"{sum(r.match == m for r in mine)} {m}" for m in MATCHES
                           if any(r.match == m for r in mine))
        out += [f"### run `{run}` vs preset `{mine[0].preset}`", "", f"Rows: {counts}.", "",
                "| setting | published | this run | match | params key (or what is missing) |",
                "| --- | --- | --- | --- | --- |"]
        out += [f"| {r.label} | {_cell(r.published)} | {_cell(r.here)} | **{r.match}** | "
                f"{_cell(r.how)} |" for r in mine]
        out.append("")
    return "\n".join(out)


PREAMBLE = """\
# Deviations from the published recipes

<!-- generated by `python -m tunebench.evaluation.deviations` from {source}, tasks/ and
profiles/presets/; do not edit by hand (`--check` fails when it is stale) -->

Each run of {what} is compared, row by row, with the published recipe named in params
`recipes` (presets in `profiles/presets/`). *match* is **yes** or **no**; **not
expressible** where this project's code cannot run the published setting yet; **unknown**
where the setting was not published; **n/a** where the row does not apply. The params key
column says how to change a row, or what the code lacks.

The CPU default departs from FinGPT's benchmark recipe on purpose (a 135M model, capped data,
one epoch on 2 CPU cores); the paper profile's `mistral7b-fingpt` variant follows v3.3 where
the code can (`python -m tunebench.evaluation.deviations --profile paper --variant mistral7b-fingpt
--out -`).

Not fixed in code yet (issue 16; each needs stage changes, planned for the next session):

- **NWGI's 7 levels**: FinGPT trains NWGI on its seven levels with a 7-option instruction and
  maps answers to 3 classes when scoring; label-transform collapses them to 3 before training.
- **Over-length examples**: FinGPT drops examples of 512 tokens or more; train-qlora always
  cuts the prompt from the left (and counts it). A param to drop or cut is not built.
- **Prompt-token loss**: FinGPT labels prompt positions with the pad id, so they stay in its
  loss; train-qlora masks them with -100 (kept: it is the correct objective).
- **8-bit base weights, warmup in steps and v3.3's base model**: models load in 4-bit or a
  float dtype; warmup is a ratio of the steps; a hub model must be pinned and no commit of
  NousResearch/Llama-2-13b-hf is known, so the paper's `fingpt-v33` variant keeps its adapter
  on the pinned Llama-2-13b-chat-hf.
- **FiQA-SA's re-split**: the task file re-splits the Hub source as FinGPT does (test 275),
  but the mirror has only the FLARE test set (258); the report's data checks name the files
  or Hub splits each dataset was read from.

"""


def document(params: dict[str, Any], presets: dict[str, dict], tasks_dir: Path,
             source: str) -> str:
    marker = params.get("profile")
    what = (f"profile {marker['name']} variant {marker['variant']}" if marker
            else "the CPU default")
    rows = deviation_rows(params, presets, tasks_dir)
    missing = [r for r in section(params, "runs") if r not in {row.run for row in rows}]
    tail = (f"Runs without a published recipe to compare: {', '.join(missing)}.\n"
            if missing else "")
    return PREAMBLE.format(source=source, what=what) + render_markdown(rows) + tail


def report_section(params: dict[str, Any], presets: dict[str, dict],
                   tasks_dir: Path = Path("tasks")) -> str:
    """The report's deviations section: every compared run's rows, generated from the same
    params and task files as the run, so a params change updates it."""
    rows = deviation_rows(params, presets, tasks_dir)
    if not rows:
        return ("## Deviations from the published recipes\n\nNo run names a published recipe "
                "in params `recipes`.")
    counts = ", ".join(f"{sum(r.match == m for r in rows)} {m}" for m in MATCHES
                       if any(r.match == m for r in rows))
    return "\n".join([
        "## Deviations from the published recipes", "",
        "Each fine-tuning run against the published recipe named in params `recipes` "
        "(presets in `profiles/presets/`), row by row, from this run's params and task files "
        f"({counts}). Known gaps the code cannot express yet are listed in "
        "`docs/deviations.md`.", "", render_markdown(rows).rstrip()])


def compose_profile(base: dict[str, Any], name: str, variant: str | None,
                    profiles_dir: Path) -> dict[str, Any]:
    """A profile variant's params, composed as `profile apply` composes them."""
    from tunebench.running.profile import compose, load_profile, variant_name

    profile = load_profile(name, profiles_dir)
    return compose(base, profile, name, variant_name(profile, name, variant))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--params", type=Path, default=Path("params.yaml"))
    p.add_argument("--profile", help="compare a profile's variant (composed over --params)")
    p.add_argument("--variant", help="the profile's variant (needed when it has several)")
    p.add_argument("--out", default=str(DOC), help="the file to write, or - for stdout")
    p.add_argument("--check", action="store_true",
                   help="write nothing; exit 1 when --out differs from the generated text")
    p.add_argument("--tasks-dir", type=Path, default=Path("tasks"))
    p.add_argument("--presets-dir", type=Path, default=PRESETS_DIR)
    p.add_argument("--profiles-dir", type=Path, default=Path("profiles"))
    args = p.parse_args(argv)
    try:
        params = load_params(args.params)
        source = str(args.params)
        if args.profile:
            params = compose_profile(params, args.profile, args.variant, args.profiles_dir)
            source = f"{args.params} + profiles/{args.profile}.yaml"
        text = document(params, load_presets(args.presets_dir), args.tasks_dir, source)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return _emit(text, args.out, args.check)


def _emit(text: str, out: str, check: bool) -> int:
    if out == "-":
        print(text, end="")
        return 0
    path = Path(out)
    if check:
        current = path.read_text(encoding="utf-8") if path.is_file() else None
        if current != text:
            print(f"{path} is stale: run `python -m tunebench.evaluation.deviations --out {path}`",
                  file=sys.stderr)
            return 1
        return 0
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    print(f"{path}: deviations of {text.count('### run')} run(s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
