"""flows/train.py calls the stages of the registry, each once, in the registry's order."""

from __future__ import annotations

import ast

from maskcls.stages import STAGE_NAMES, STAGES
from tasks.codeversion import PROJECT_ROOT


def test_the_flow_calls_every_stage_in_registry_order() -> None:
    tree = ast.parse((PROJECT_ROOT / "flows" / "train.py").read_text())
    stage_of_module = {s.module: s.name for s in STAGES}
    # the name bound by `from tasks.<stage module> import <task>` -> that stage
    stage_of_name = {alias.asname or alias.name: stage_of_module[node.module]
                     for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module in stage_of_module
                     for alias in node.names}
    # every call that hands a stage's task to the stage runner, in source order
    calls = sorted(
        (node.lineno, stage_of_name[node.args[0].id]) for node in ast.walk(tree)
        if isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Name)
        and node.args[0].id in stage_of_name
    )
    assert [name for _, name in calls] == list(STAGE_NAMES)
