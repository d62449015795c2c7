"""Type fuzzing of params: every field, set to a value of every other type, through the data
stages. Each case ends in success (the value happens to be valid) or in exit 2 with one
`error: ...` line; never a traceback. (The same fuzz over the task file's fields still finds
tracebacks in the task loader: source.mirror.dir, label.field and label.map values of the
wrong type, and `metrics: null`; fixing tunebench/data/tasks.py reruns the whole DAG, so it
waits for the next full run, and its cases join this file then.)"""

import copy

import pytest

from tests.test_bad_inputs import Toy

WRONG = (None, 7, 2.5, True, "x", [], ["a"], {}, {"k": "v"})
PARAMS = {"label_transform": {"max_quarantine_share": 0.5, "max_leakage_share": 0.0},
          "format_instructions": {"seed": 0, "caps": {"train": 3}, "max_words": None},
          "datasets": {"toy": {"run": "toy", "caps": {"test": 2}, "max_words": 10}}}


def paths(value, prefix=()):
    """Every key path of nested mappings (the mapping itself included, below the top)."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield (*prefix, key)
            yield from paths(item, (*prefix, key))


def replaced(data: dict, path: tuple, new) -> dict:
    out = copy.deepcopy(data)
    target = out
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = new
    return out


def run_data_stages(toy) -> list[tuple[int, str]]:
    """fetch, label-transform, format-instructions; stops at the first that fails."""
    results = [toy.fetch()]
    if results[-1][0] == 0:
        results.append(toy.label())
    if results[-1][0] == 0:
        results.append(toy.run("format_instructions", "--dataset", "toy", "--tasks",
                               str(toy.root / "tasks"), "--labeled", str(toy.root / "labeled"),
                               "--out", str(toy.root / "inst")))
    return results


def check(results, case):
    for code, err in results:
        if code == 0:
            continue
        lines = [line for line in err.splitlines() if line.strip()]
        assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), (case, err)


def cases(data):
    return [(path, value) for path in paths(data) for value in WRONG
            if type(value) is not type(_get(data, path)) or value in ({}, [])]


def _get(data, path):
    for key in path:
        data = data[key]
    return data


@pytest.mark.parametrize(("path", "value"), cases(PARAMS),
                         ids=lambda x: ".".join(x) if isinstance(x, tuple) else repr(x))
def test_a_params_field_of_the_wrong_type_is_one_error_line(tmp_path, capsys, path, value):
    toy = Toy(tmp_path, capsys)
    toy.params(**replaced(PARAMS, path, value))
    check(run_data_stages(toy), (path, value))
