"""Editing a module reruns, in a real flow, the stages whose code imports it and those after
them, nothing before; checked for three modules in a temporary copy of the project, through
the CLI. (Every module is checked without a flow in tests/unit/tasks/test_codeversion.py.)"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest

from maskcls.stages import STAGE_NAMES
from tasks.codeversion import stage_modules
from tests.support import REPO

from .conftest import run_cli

pytestmark = pytest.mark.integration

# a library module, the stage module using it (maskcls/augment.py), a task module: three cuts.
EDITED = ("maskcls.store", "maskcls.augment", "tasks.evaluate")


def _run(copy: Path, source: Path) -> dict:
    started = time.perf_counter()
    out = run_cli(["train", "--profile", "smoke", "--source", str(source), "--json", "--max-images", "60"],
                  env={"PYTHONPATH": str(copy)}, cwd=copy)
    assert out.returncode == 0, out.stderr[-3000:]
    return {**json.loads(out.stdout[out.stdout.index("{"):]), "wall_s": time.perf_counter() - started}


def _first_user(module: str, copy: Path) -> str:
    """The first stage whose code version covers ``module``, per the registry's import walk."""
    return next(name for name in STAGE_NAMES if module in stage_modules(name, copy))


def test_editing_a_module_reruns_its_stages_and_what_follows(servers, fresh_subset, tmp_path):
    copy = tmp_path / "project"
    shutil.copytree(REPO, copy, ignore=shutil.ignore_patterns(".venv", ".git", "__pycache__", "tests", "*.egg-info"))
    baseline = _run(copy, fresh_subset)
    assert list(baseline["stages"]) == list(STAGE_NAMES)
    for module in EDITED:
        path = copy.joinpath(*module.split(".")).with_suffix(".py")
        original = path.read_text()
        path.write_text(original + f"\n\n# edited by the test: {module}\n")
        try:
            result = _run(copy, fresh_subset)
        finally:
            path.write_text(original)
        cut = STAGE_NAMES.index(_first_user(module, copy))
        expected = {s: ("Cached" if k < cut else "Completed") for k, s in enumerate(STAGE_NAMES)}
        assert result["stages"] == expected, (module, result["stages"])
    # with every module restored, everything is Cached again
    warm = _run(copy, fresh_subset)
    assert set(warm["stages"].values()) == {"Cached"}
    # ... and the run says where its seconds went (make bench's warm_run_breakdown)
    timings = warm["timings"]
    assert set(timings) == {"startup_s", "imports_s", "server_wait_s", "flow_s"}, timings
    assert all(v >= 0 for v in timings.values()) and timings["imports_s"] > 0 and timings["flow_s"] > 0, timings
    assert sum(timings.values()) < warm["wall_s"], (timings, warm["wall_s"])
