"""Code versions come from the code: editing any project module a stage imports (lazily too)
changes the code version of exactly that stage and those after it, nothing before.

Checked in a temporary copy of the project, without running a flow. The expected stages
come from the standard library's ``modulefinder`` (which reads the compiled bytecode of
every function), an implementation independent of the walker under test.
"""

from __future__ import annotations

import ast
import modulefinder
import shutil
from pathlib import Path

import pytest

from maskcls.stages import STAGE_NAMES, STAGES
from tasks.codeversion import (
    PROJECT_PACKAGES,
    PROJECT_ROOT,
    closure,
    module_file,
    stage_code_version,
)
from tests.support.data import write_files


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """A copy of the project's packages (what the code versions read)."""
    root = tmp_path_factory.mktemp("project")
    for package in PROJECT_PACKAGES:
        shutil.copytree(PROJECT_ROOT / package, root / package, ignore=shutil.ignore_patterns("__pycache__"))
    return root


def _versions(root: Path) -> dict[str, str]:
    return {name: stage_code_version(name, root) for name in STAGE_NAMES}


def _found_by_modulefinder(root: Path, module: str) -> set[str]:
    """The project modules ``module`` imports, transitively, as modulefinder sees them."""
    finder = modulefinder.ModuleFinder(path=[str(root)])  # third-party and stdlib imports stay unresolved
    finder.import_hook(module)
    return {name for name in finder.modules if name.split(".")[0] in PROJECT_PACKAGES}


@pytest.fixture(scope="module")
def users(project) -> dict[str, str]:
    """Project module -> the first stage whose code uses it (imported, or loaded by path)."""
    first: dict[str, str] = {}
    for stage in STAGES:
        for module in (stage.module, *stage.loaded_by_path):
            for name in _found_by_modulefinder(project, module):
                first.setdefault(name, stage.name)
    return first


def test_every_module_a_stage_needs_is_covered(users) -> None:
    # The modules the hand-kept table used to miss, and every task module.
    assert {"maskcls.store", "maskcls.config", "tasks.records", "tasks.caching"} <= set(users)
    assert {stage.module for stage in STAGES} <= set(users)
    # the download stage writes its files through the store's atomic write
    assert users["maskcls.store"] == "download"
    assert users["tasks.pyfunc_model"] == users["tasks.scanner_model"] == "register"


def test_editing_each_module_changes_its_stages_and_those_after(project, users) -> None:
    baseline = _versions(project)
    assert len(set(baseline.values())) == len(STAGES), "every stage has a version of its own"
    for module, first in sorted(users.items()):
        path = module_file(module, project)
        original = path.read_bytes()
        path.write_bytes(original + b"\n# edited by the test\n")
        try:
            edited = _versions(project)
        finally:
            path.write_bytes(original)
        changed = [name for name in STAGE_NAMES if edited[name] != baseline[name]]
        assert changed == list(STAGE_NAMES[STAGE_NAMES.index(first):]), (module, changed)
    assert _versions(project) == baseline


def test_a_module_no_stage_imports_changes_nothing(project) -> None:
    baseline = _versions(project)
    path = project / "flows" / "deploy.py"  # a flow module: no stage imports it
    original = path.read_bytes()
    path.write_bytes(original + b"\n# edited by the test\n")
    try:
        assert _versions(project) == baseline
    finally:
        path.write_bytes(original)


def test_the_copy_has_the_same_versions_as_the_project(project) -> None:
    # Module names, not paths, go into the hash: a checkout anywhere gives the same versions.
    assert _versions(project) == _versions(PROJECT_ROOT)


def _tree(root: Path, files: dict[str, str]) -> Path:
    return write_files(root, {rel: text.encode() for rel, text in files.items()})


def test_the_walk_reads_lazy_relative_and_submodule_imports(tmp_path) -> None:
    root = _tree(tmp_path, {
        "maskcls/__init__.py": "",
        "maskcls/a.py": "def f():\n    from . import b\n    import numpy\n",
        "maskcls/b.py": "from .sub.c import thing\n",
        "maskcls/sub/__init__.py": "",
        "maskcls/sub/c.py": "from .. import d\nthing = 1\n",
        "maskcls/d.py": "class K:\n    def m(self):\n        import maskcls.e\n",
        "maskcls/e.py": "from maskcls.config import Settings\n",
        "maskcls/config.py": "Settings = object\n",
        "maskcls/unused.py": "",
        "tasks/__init__.py": "",
        "tasks/t.py": "from maskcls import a\n",
    })
    assert closure(["tasks.t"], root) == {
        "tasks", "tasks.t", "maskcls", "maskcls.a", "maskcls.b", "maskcls.sub", "maskcls.sub.c",
        "maskcls.d", "maskcls.e", "maskcls.config",
    }


def test_an_import_of_a_missing_project_module_is_an_error(tmp_path) -> None:
    root = _tree(tmp_path, {"tasks/__init__.py": "", "tasks/t.py": "def f():\n    import maskcls.gone\n"})
    with pytest.raises(ImportError, match="maskcls.gone"):
        closure(["tasks.t"], root)


_DYNAMIC = {"import_module", "__import__", "find_spec", "run_module", "spec_from_file_location"}


def test_project_code_never_imports_a_project_module_by_name_at_run_time() -> None:
    """The walk sees only import statements: a module loaded through importlib would be missed."""
    calls = []
    for package in PROJECT_PACKAGES:
        for path in sorted((PROJECT_ROOT / package).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
                if isinstance(node, ast.Call):
                    func = node.func
                    name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
                    if name in _DYNAMIC:
                        arg = node.args[0] if node.args else None
                        literal = isinstance(arg, ast.Constant) and isinstance(arg.value, str)
                        if not literal or arg.value.split(".")[0] in PROJECT_PACKAGES:
                            calls.append(f"{path.relative_to(PROJECT_ROOT)}:{node.lineno}")
    assert calls == []
