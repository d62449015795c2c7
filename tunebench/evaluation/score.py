"""Score one dataset's prediction files: metrics, bootstrap intervals, paired tests.

Pure functions over values already read (rows, meta dicts, the task record); the stage
``stages/score.py`` does the file I/O. Every system is scored on exactly the test ids of
the instructions split, aligned by id (never by row order), so paired comparisons and the
bootstrap resamples line up example for example across systems.
"""

from __future__ import annotations

import importlib.metadata
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from tunebench.evaluation.metrics import (
    CI_METHODS,
    bootstrap_ci,
    classification_metrics,
    classification_table,
    mcnemar,
    paired_bootstrap_diff,
)
from tunebench.evaluation.parsing import INVALID, get_parser
from tunebench.io import DataError
from tunebench.running.provenance import package_versions as _shared_versions

PRED_FIELDS = ("id", "prompt_sha256", "raw", "parsed", "target")
META_FIELDS = ("system", "kind", "model", "seconds", "examples_per_s", "n")
KINDS = ("base", "tuned", "baseline")
REFERENCE = "tuned"  # the system every other one is compared with
CI_METRICS = ("accuracy", "f1_weighted")
SIGNIFICANT = 6  # digits kept in floats, so `dvc metrics diff` shows meaningful changes
# BCa by default: on the committed predictions it moves endpoints by 0.002 (median), at most
# 0.02, and corrects the skew of a bounded statistic (docs/bootstrap.md).
CI_METHOD = "bca"


def check_id(rid: Any, at: str) -> None:
    """Example ids are strings (or integers): a list or mapping is a broken file."""
    if isinstance(rid, bool) or not isinstance(rid, str | int):
        raise DataError(f"{at}: field 'id' must be a string, got {type(rid).__name__} {rid!r}")


def split_targets(rows: Sequence[Mapping], labels: Sequence[str], where: str) -> dict[str, str]:
    """Map test id -> canonical label from instruction rows, in file order."""
    targets: dict[str, str] = {}
    for lineno, row in enumerate(rows, start=1):
        rid, label = row["id"], row["completion"]
        check_id(rid, f"{where}:{lineno}")
        if rid in targets:
            raise DataError(f"{where}:{lineno}: duplicate id {rid!r}")
        if label not in labels:
            raise DataError(f"{where}:{lineno}: completion {label!r} is not one of {list(labels)}")
        targets[rid] = label
    if not targets:
        raise DataError(f"{where}: no test examples")
    return targets


def _index_by_id(rows: Sequence[Mapping], targets: Mapping[str, str], where: str,
                 check_row: Callable[[Mapping, str], None]) -> dict[str, Mapping]:
    """Rows keyed by id, checked to cover exactly the test ids (no duplicate, extra or missing
    id); `check_row(row, at)` raises on a row whose own values are wrong."""
    by_id: dict[str, Mapping] = {}
    for lineno, row in enumerate(rows, start=1):
        rid, at = row["id"], f"{where}:{lineno}"
        check_id(rid, at)
        if rid in by_id:
            raise DataError(f"{at}: duplicate id {rid!r}")
        if rid not in targets:
            raise DataError(f"{at}: extra id {rid!r} is not in the test split")
        check_row(row, at)
        by_id[rid] = row
    missing = [rid for rid in targets if rid not in by_id]
    if missing:
        raise DataError(f"{where}: missing {len(missing)} test id(s), e.g. {missing[0]!r}")
    return by_id


def index_predictions(
    rows: Sequence[Mapping], targets: Mapping[str, str], labels: Sequence[str], where: str
) -> dict[str, Mapping]:
    """Prediction rows keyed by id, checked to cover exactly the test ids with valid values."""
    allowed = set(labels) | {INVALID}

    def check_row(row: Mapping, at: str) -> None:
        rid, target, parsed = row["id"], row["target"], row["parsed"]
        if target not in labels:
            raise DataError(f"{at}: id {rid!r}: target {target!r} is not one of {list(labels)}")
        if target != targets[rid]:
            raise DataError(f"{at}: id {rid!r}: target {target!r} but the test split says "
                            f"{targets[rid]!r}")
        if not isinstance(parsed, str) or parsed not in allowed:
            raise DataError(f"{at}: id {rid!r}: parsed {parsed!r} is neither a label nor "
                            f"{INVALID!r}")

    return _index_by_id(rows, targets, where, check_row)


def check_meta(meta: Mapping, system: str, n: int, dataset: str, where: str,
               test_sha256: str | None = None) -> None:
    """A sidecar must describe this system, dataset and row count (catches stale or
    misplaced sidecars); with `test_sha256` (the score stage passes the hash of the current
    test.jsonl) it must also have been made from exactly that test split."""
    missing = [key for key in META_FIELDS if key not in meta]
    if missing:
        raise DataError(f"{where}: missing field(s) {', '.join(missing)}")
    if meta["system"] != system:
        raise DataError(f"{where}: system {meta['system']!r} but the file is for {system!r}")
    if meta["kind"] not in KINDS:
        raise DataError(f"{where}: kind {meta['kind']!r} is not one of {list(KINDS)}")
    if meta.get("dataset", dataset) != dataset:
        raise DataError(f"{where}: dataset {meta['dataset']!r} but scoring {dataset!r}")
    if meta["n"] != n:
        raise DataError(f"{where}: n is {meta['n']} but the predictions have {n} rows")
    if test_sha256 is not None and meta.get("test_sha256") != test_sha256:
        found = meta.get("test_sha256")
        raise DataError(f"{where}: test_sha256 {found if found is None else found[:12]!r} but "
                        f"the test split now hashes to {test_sha256[:12]!r}: these predictions "
                        "were made from other test rows (stale; rerun predict / baselines)")


def score_system(
    by_id: Mapping[str, Mapping], ids: Sequence[str], labels: Sequence[str],
    n_boot: int, seed: int, ci_method: str = CI_METHOD,
) -> dict:
    """Point metrics plus bootstrap 95% intervals (``ci_method``: bca or percentile) for one
    system.

    The same seed for every system means the same resampled ids, so intervals of two
    systems come from the same bootstrap samples.
    """
    y_true = [by_id[i]["target"] for i in ids]
    y_pred = [by_id[i]["parsed"] for i in ids]
    result = classification_metrics(y_true, y_pred, labels)
    # The published per-class form, with a row for unparseable answers (see metrics.py).
    result["table"] = classification_table(y_true, y_pred, labels)
    result["ci95"] = {}
    for metric in CI_METRICS:
        low, high = bootstrap_ci(y_true, y_pred, labels, metric=metric, n_boot=n_boot, seed=seed,
                                 method=ci_method)
        result["ci95"][metric] = {"low": low, "high": high}
    return result


def compare_with(
    predictions: Mapping[str, Mapping[str, Mapping]], ids: Sequence[str],
    reference: str = REFERENCE, labels: Sequence[str] | None = None, n_boot: int = 1000,
    seed: int = 0, ci_method: str = CI_METHOD,
) -> dict[str, dict]:
    """McNemar of ``reference`` against every other system, on the same ids in one order.
    With ``labels``, also the weighted-F1 difference reference - other with its paired
    bootstrap 95% interval (``f1_weighted_diff``, ``f1_weighted_diff_ci``: both systems scored
    on each resample's ids, the resamples of score_system with the same seed)."""
    if reference not in predictions:
        return {}

    def correct(by_id: Mapping[str, Mapping]) -> list[bool]:
        return [by_id[i]["parsed"] == by_id[i]["target"] for i in ids]

    ref = correct(predictions[reference])
    out = {}
    for other in sorted(predictions):
        if other == reference:
            continue
        test = mcnemar(ref, correct(predictions[other]))
        # Positive when the reference system is more accurate on these examples.
        test["accuracy_diff"] = (test["a_only"] - test["b_only"]) / test["n"]
        if labels is not None:
            diff = paired_bootstrap_diff(
                [predictions[reference][i]["target"] for i in ids],
                [predictions[reference][i]["parsed"] for i in ids],
                [predictions[other][i]["parsed"] for i in ids], labels, "f1_weighted",
                n_boot=n_boot, seed=seed, method=ci_method)
            test["f1_weighted_diff"] = diff["diff"]
            test["f1_weighted_diff_ci"] = {"low": diff["low"], "high": diff["high"]}
        out[f"{reference}_vs_{other}"] = {"a": reference, "b": other, **test}
    return out


def package_versions() -> dict[str, str | None]:
    """The project's shared provenance list plus scipy, whose binomtest gives the p-values.
    Read from package metadata, so torch & co. are never imported."""
    versions = _shared_versions()
    try:
        versions["scipy"] = importlib.metadata.version("scipy")
    except importlib.metadata.PackageNotFoundError:
        versions["scipy"] = None
    return versions


def round_floats(value: Any, digits: int = SIGNIFICANT) -> Any:
    """Floats to ``digits`` significant digits (p-values keep their magnitude); NaN/inf ->
    None, since strict JSON readers (DVC among them) reject them."""
    if isinstance(value, float):
        return float(f"{value:.{digits}g}") if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {key: round_floats(item, digits) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [round_floats(item, digits) for item in value]
    return value


# Published comparisons were parsed by their authors' rule; each generated answer is parsed
# again from its stored raw text by these too (no new generation), to compare like with like.
REPARSE = ("fingpt",)


def reparse_applies(parser: str, labels: Sequence[str]) -> bool:
    """Whether score re-reads answers with `parser` (one of REPARSE) for these labels: FinGPT's
    rule knows only negative/neutral/positive and refuses others."""
    if parser not in REPARSE:
        return False
    try:
        get_parser(parser)("", labels)
    except ValueError:
        return False
    return True


def reparsed(indexed: Mapping[str, Mapping[str, Mapping]], metas: Mapping[str, Mapping],
             ids: Sequence[str], labels: Sequence[str], n_boot: int, seed: int,
             ci_method: str = CI_METHOD) -> dict[str, dict]:
    """{parser: {system: metrics}} for every generated system (mode generate, parsed by
    another parser) re-parsed from its stored `raw` by each REPARSE parser that accepts these
    labels (FinGPT's rule knows only negative/neutral/positive). Kept apart from `systems`, so
    the paired tests and their Holm family stay those of the answers as parsed."""
    out: dict[str, dict] = {}
    for parser in REPARSE:
        if not reparse_applies(parser, labels):
            continue
        parse = get_parser(parser)
        for name in sorted(indexed):
            meta = metas[name]
            if meta.get("mode") != "generate" or meta.get("parser") == parser:
                continue
            by_id = {i: {**row, "parsed": parse(str(row["raw"]), labels)}
                     for i, row in indexed[name].items()}
            scored = score_system(by_id, ids, labels, n_boot, seed, ci_method)
            scored.pop("table")
            out.setdefault(parser, {})[name] = {
                "kind": meta["kind"], "parsed_by": meta.get("parser") or "task parser",
                "answers_changed": sum(by_id[i]["parsed"] != indexed[name][i]["parsed"]
                                       for i in ids), **scored}
    return out


def confusion_rows(by_id: Mapping[str, Mapping], ids: Sequence[str]) -> list[dict[str, str]]:
    """DVC's confusion template format: one {"actual", "predicted"} row per example."""
    return [{"actual": by_id[i]["target"], "predicted": by_id[i]["parsed"]} for i in ids]


def score_dataset(
    task: Mapping, test_rows: Sequence[Mapping], systems: Mapping[str, tuple],
    n_boot: int, seed: int, sample: Mapping | None = None, test_where: str = "test.jsonl",
    ci_method: str = CI_METHOD, test_sha256: str | None = None,
) -> tuple[dict, dict[str, list]]:
    """Score every system of one dataset.

    ``systems`` maps a system name to ``(rows, meta, rows_where, meta_where)``; the
    ``*_where`` strings (and ``test_where``) name the files in error messages. Returns
    the metrics record (floats rounded; no timestamps, so equal inputs give byte-equal
    files) and the confusion rows per system.
    """
    if not systems:
        raise DataError("no prediction files (<system>.jsonl) to score")
    labels = list(task["labels"])
    targets = split_targets(test_rows, labels, test_where)
    ids = list(targets)
    indexed, scored = {}, {}
    for name in sorted(systems):
        rows, meta, rows_where, meta_where = systems[name]
        indexed[name] = index_predictions(rows, targets, labels, rows_where)
        check_meta(meta, name, len(rows), task["dataset"], meta_where, test_sha256)
        scored[name] = {"kind": meta["kind"], **score_system(indexed[name], ids, labels, n_boot,
                                                             seed, ci_method), "meta": dict(meta)}
    record = {
        "dataset": task["dataset"], "task": task["task"], "version": task["version"],
        "type": "classification", "run": task.get("run"), "labels": labels, "n": len(ids),
        "seed": seed, "n_boot": n_boot, "ci_method": ci_method, "packages": package_versions(),
        "systems": scored, "comparisons": compare_with(indexed, ids, labels=labels,
                                                       n_boot=n_boot, seed=seed,
                                                       ci_method=ci_method),
        "notes": task.get("notes", ""),
        "published": list(task.get("published") or []), "sample": dict(sample or {}),
    }
    other_parsers = reparsed(indexed, {n: systems[n][1] for n in systems}, ids, labels, n_boot,
                             seed, ci_method)
    if other_parsers:
        record["reparsed"] = other_parsers
    confusion = {name: confusion_rows(indexed[name], ids) for name in indexed}
    return round_floats(record), confusion


def index_summaries(rows: Sequence[Mapping], targets: Mapping[str, str], where: str,
                    ) -> dict[str, Mapping]:
    """Summary rows keyed by id: exactly the test ids, the test split's target, text answers."""

    def check_row(row: Mapping, at: str) -> None:
        rid = row["id"]
        if row["target"] != targets[rid]:
            raise DataError(f"{at}: id {rid!r}: target differs from the test split's first "
                            "reference")
        if not isinstance(row["parsed"], str):
            raise DataError(f"{at}: id {rid!r}: parsed must be the summary text, got "
                            f"{row['parsed']!r}")

    return _index_by_id(rows, targets, where, check_row)


def score_summaries(
    task: Mapping, test_rows: Sequence[Mapping], systems: Mapping[str, tuple], n_boot: int,
    seed: int, bertscore: Mapping, sample: Mapping | None = None,
    test_where: str = "test.jsonl", test_sha256: str | None = None,
) -> tuple[dict, list[dict]]:
    """Score every system of a summarization dataset: ROUGE-1/2/L and BERTScore F1 per example
    (best of the references), mean/median/bootstrap CI per metric, paired differences of
    "tuned" against the others. `bertscore` = {"model_dir", "num_layers", "label"}. Returns
    the metrics record (rounded) and per-example rows {id, system, metric...}."""
    from tunebench.evaluation.summarization import (
        METRICS,
        REFERENCE_COMBINATION,
        compare_systems,
        summarization_metrics,
    )

    if not systems:
        raise DataError("no prediction files (<system>.jsonl) to score")
    references, targets = {}, {}
    for lineno, row in enumerate(test_rows, start=1):
        refs = row.get("references")
        if not isinstance(refs, list) or not refs or not all(
                isinstance(r, str) and r.strip() for r in refs):
            raise DataError(f"{test_where}:{lineno}: 'references' must be a non-empty list of "
                            f"non-empty strings, got {refs!r}")
        if row["id"] in targets:
            raise DataError(f"{test_where}:{lineno}: duplicate id {row['id']!r}")
        references[row["id"]], targets[row["id"]] = refs, row["completion"]
    if not targets:
        raise DataError(f"{test_where}: no test examples")
    ids = list(targets)
    scored, per_example, examples = {}, {}, []
    for name in sorted(systems):
        rows, meta, rows_where, meta_where = systems[name]
        by_id = index_summaries(rows, targets, rows_where)
        check_meta(meta, name, len(rows), task["dataset"], meta_where, test_sha256)
        result = summarization_metrics([by_id[i]["parsed"] for i in ids],
                                       [references[i] for i in ids], bertscore["model_dir"],
                                       bertscore["num_layers"], n_boot, seed)
        per_example[name] = result["per_example"]
        scored[name] = {"kind": meta["kind"], "n": result["n"], "n_empty": result["n_empty"],
                        "stats": result["stats"], "meta": dict(meta)}
        examples += [{"id": i, "system": name, **row}
                     for i, row in zip(ids, result["per_example"], strict=True)]
    counts = [len(references[i]) for i in ids]
    record = {
        "dataset": task["dataset"], "task": task["task"], "version": task["version"],
        "type": "summarization", "run": task.get("run"), "n": len(ids), "seed": seed,
        "n_boot": n_boot, "packages": package_versions(), "metrics": list(METRICS),
        "reference_combination": REFERENCE_COMBINATION,
        "n_references": {"min": min(counts), "max": max(counts)},
        "rouge": {"package": "rouge-score", "use_stemmer": True, "measure": "F"},
        "bertscore": {"model": bertscore["label"], "num_layers": bertscore["num_layers"],
                      "idf": False, "rescale_with_baseline": False},
        "systems": scored, "comparisons": compare_systems(per_example, n_boot, seed),
        "notes": task.get("notes", ""), "published": list(task.get("published") or []),
        "sample": dict(sample or {}),
    }
    return round_floats(record), round_floats(examples)


# params `score`, checked as the score stage (and tunebench.running.profile, before a run)
# reads them.
SCORE_KEYS = ("n_boot", "seed")
OPTIONAL_SCORE_KEYS = ("bertscore", "ci_method")


def score_params(params: dict) -> tuple[int, int]:
    from tunebench.config import ConfigError, check_keys
    from tunebench.running.params import section

    cfg = section(params, "score")
    check_keys(cfg, (*SCORE_KEYS, *OPTIONAL_SCORE_KEYS), "params.yaml: score", SCORE_KEYS)
    n_boot, seed = cfg["n_boot"], cfg["seed"]
    if not isinstance(n_boot, int) or isinstance(n_boot, bool) or n_boot < 1:
        raise ConfigError(f"params.yaml: score.n_boot: expected an int >= 1, got {n_boot!r}")
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise ConfigError(f"params.yaml: score.seed: expected an int, got {seed!r}")
    return n_boot, seed


def ci_method_param(params: dict) -> str:
    """`score.ci_method`: bca or percentile (CI_METHOD when absent, e.g. in older profiles)."""
    from tunebench.config import ConfigError
    from tunebench.running.params import section

    method = section(params, "score").get("ci_method", CI_METHOD)
    if method not in CI_METHODS:
        raise ConfigError(f"params.yaml: score.ci_method: expected one of {list(CI_METHODS)}, "
                          f"got {method!r}")
    return method


# Timing fields of a system's meta (wall clock, throughput, memory): they change run to run
# with identical answers, so the stage writes them to a file of their own (metrics/timings).
def is_timing(key: str) -> bool:
    return (key in ("seconds", "wall_time_s") or key.endswith(("_seconds", "_per_s"))
            or "peak_mem" in key or key.startswith("wall_"))


def split_timings(record: Mapping) -> tuple[dict, dict]:
    """(record without timings, {"dataset", "systems": {name: timing fields}}): every top-level
    timing field of each system's meta (see is_timing) moves to the second."""
    systems, timings = {}, {}
    for name, system in record["systems"].items():
        meta = dict(system.get("meta") or {})
        timings[name] = {key: meta.pop(key) for key in sorted(meta) if is_timing(key)}
        systems[name] = {**system, "meta": meta}
    return {**record, "systems": systems}, {"dataset": record["dataset"], "systems": timings}


def bertscore_params(params: dict):
    """(ModelSpec, num_layers) of `score.bertscore`: {model: a key of models, num_layers}."""
    from tunebench.config import ConfigError, check_keys
    from tunebench.running.params import model_spec, section

    cfg = section(params, "score").get("bertscore")
    where = "params.yaml: score.bertscore"
    if not isinstance(cfg, dict):
        raise ConfigError(f"{where}: expected {{model: <key of models>, num_layers: N}}")
    check_keys(cfg, ("model", "num_layers"), where, ("model", "num_layers"))
    layers = cfg["num_layers"]
    if isinstance(layers, bool) or not isinstance(layers, int) or layers < 1:
        raise ConfigError(f"{where}.num_layers: expected an int >= 1, got {layers!r}")
    return model_spec(params, cfg["model"], "score.bertscore.model"), layers


SAFE_SNAPSHOT_FILES = ["*.json", "*.safetensors", "*.txt", "*.model", "*.tiktoken"]
PICKLED = ("*.bin", "*.pt", "*.pth", "*.ckpt", "*.pkl")


def check_safetensors(model_dir: Path, where: str) -> None:
    """The BERTScore encoder must load from safetensors: a folder whose weights are pickled
    only (.bin, .pt, ...) is refused before bert-score would unpickle them."""
    folder = Path(model_dir)
    if any(folder.rglob("*.safetensors")):
        return  # transformers loads these and never the pickles beside them
    pickled = sorted(p.name for pattern in PICKLED for p in folder.rglob(pattern))
    what = f"only pickled weights ({', '.join(pickled)})" if pickled else "no weights"
    raise DataError(f"{where}: {folder} has {what}; models load from safetensors only (convert "
                    "the checkpoint, e.g. with transformers' save_pretrained(safe_serialization"
                    "=True))")


def bertscore_settings(params: dict) -> dict:
    """{"model_dir", "num_layers", "label"} from `score.bertscore` (model: a key of models)."""
    from tunebench.models.loading import resolve_model_dir
    from tunebench.running.params import section

    spec, layers = bertscore_params(params)
    if spec.source == "hub":
        # bert-score loads by name without a revision: fetch the pinned snapshot, pass its path.
        # Configs, tokenizer files and safetensors weights only: never a pickled checkpoint.
        from huggingface_hub import snapshot_download

        model_dir = snapshot_download(spec.id, revision=spec.revision,
                                      allow_patterns=SAFE_SNAPSHOT_FILES)
    else:
        model_dir = resolve_model_dir(spec, Path(section(params, "paths")["model_cache"]))
    check_safetensors(Path(model_dir), f"params.yaml: score.bertscore.model {spec.name!r}")
    label = spec.id or spec.name
    if spec.source == "package":
        label = f"{label} (package {spec.package}/{spec.file})"
    return {"model_dir": model_dir, "num_layers": layers, "label": label}
