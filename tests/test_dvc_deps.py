"""Every stage of dvc.yaml lists exactly the .py files its command imports (transitively, in
tunebench/ and stages/), so an edit reruns the stages it can change and no others. Non-.py
deps (data folders, tasks/, configs) are not checked here."""

import re

import pytest
import yaml

from tests.importgraph import REPO_ROOT, closure, module_file

DVC = yaml.safe_load((REPO_ROOT / "dvc.yaml").read_text(encoding="utf-8"))["stages"]


def stage_module(stage: dict) -> str:
    found = re.findall(r"python -m ([\w.]+)", stage["cmd"])
    assert len(found) == 1, f"expected one `python -m <module>` in {stage['cmd']!r}"
    return found[0]


@pytest.mark.parametrize("name", sorted(DVC))
def test_stage_deps_are_its_imports(name):
    stage = DVC[name].get("do", DVC[name])  # foreach stages keep the stage under `do`
    module = stage_module(stage)
    listed = [d for d in stage.get("deps", []) if isinstance(d, str) and d.endswith(".py")]
    imported = {module_file(m) for m in closure(module)}
    missing = sorted(imported - set(listed))
    extra = sorted(set(listed) - imported)
    duplicated = sorted({d for d in listed if listed.count(d) > 1})
    problems = [f"dvc.yaml stage {name} ({module}): {what}: {', '.join(files)}"
                for what, files in (("imported but not in deps", missing),
                                    ("in deps but not imported", extra),
                                    ("listed twice", duplicated)) if files]
    assert not problems, "\n".join(problems)
