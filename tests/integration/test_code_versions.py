"""Editing a maskcls module reruns the stages that use it and what follows, nothing
before: checked module by module in a temporary copy of the project, through the CLI."""

from __future__ import annotations

import json
import shutil

import pytest

from tests.support import REPO

from .conftest import run_cli

pytestmark = pytest.mark.integration

STAGES = ["download", "validate", "split", "preprocess", "augment", "train", "evaluate", "register"]

# module -> the first stage that uses it
FIRST_USER = {
    "source": "download",
    "data": "validate",
    "preprocess": "validate",
    "augment": "augment",
    "model": "train",
    "train": "train",
    "evaluate": "augment",  # augment draws its preview grid with maskcls.evaluate
    "inference": "register",
}


def _run(copy, source) -> dict:
    out = run_cli(["train", "--profile", "smoke", "--source", str(source), "--json", "--max-images", "60"],
                  env={"PYTHONPATH": str(copy)}, cwd=copy)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout[out.stdout.index("{"):])


def test_editing_each_module_reruns_its_stage_and_what_follows(servers, fresh_subset, tmp_path):
    copy = tmp_path / "project"
    shutil.copytree(REPO, copy, ignore=shutil.ignore_patterns(".venv", ".git", "__pycache__", "tests", "*.egg-info"))
    baseline = _run(copy, fresh_subset)
    assert set(baseline["stages"]) == set(STAGES)
    for module, first in FIRST_USER.items():
        path = copy / "maskcls" / f"{module}.py"
        original = path.read_text()
        path.write_text(original + f"\n\n# edited by the test: {module}\n")
        try:
            result = _run(copy, fresh_subset)
        finally:
            path.write_text(original)
        cut = STAGES.index(first)
        expected = {s: ("Cached" if k < cut else "Completed") for k, s in enumerate(STAGES)}
        assert result["stages"] == expected, (module, result["stages"])
    # with every module restored, everything is Cached again
    assert set(_run(copy, fresh_subset)["stages"].values()) == {"Cached"}
