"""Code versions of the stages, computed from the code rather than listed by hand.

A stage's code version is a hash of the project modules (under ``maskcls/``, ``tasks/``
and ``flows/``) in the transitive closure of its task module's imports, the task module
included, together with those of every stage before it. The imports are read from each
module's syntax tree, every ``import`` anywhere in it (inside function bodies too, so lazy
imports count), relative imports resolved; nothing is imported. Project code never
imports a project module by a computed name, so the walk cannot miss one.

Plain standard library: no Prefect, so tests can walk a copied tree without a flow.
"""

from __future__ import annotations

import ast
import hashlib
from collections.abc import Iterable
from functools import lru_cache
from pathlib import Path

from maskcls.stages import upto

#: The folder holding the project's packages.
PROJECT_ROOT = Path(__file__).resolve().parents[1]
#: The top-level packages whose modules make up code versions (everything else is a dependency).
PROJECT_PACKAGES = ("maskcls", "tasks", "flows")


def module_file(name: str, root: Path = PROJECT_ROOT) -> Path | None:
    """The file of project module ``name`` under ``root``; None if it is not a project module."""
    if name.split(".")[0] not in PROJECT_PACKAGES:
        return None
    base = root.joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _with_parents(name: str) -> list[str]:
    """``a.b.c`` -> ``a``, ``a.b``, ``a.b.c``: importing a module imports its packages first."""
    parts = name.split(".")
    return [".".join(parts[: i + 1]) for i in range(len(parts))]


def _absolute(module: str | None, level: int, package: str) -> str:
    """The absolute name of ``from <level dots><module> import ...`` inside ``package``."""
    if level == 0:
        return module or ""
    parts = package.split(".")
    if level - 1 >= len(parts):
        raise ImportError(f"relative import beyond the top-level package in {package}")
    base = ".".join(parts[: len(parts) - (level - 1)])
    return f"{base}.{module}" if module else base


@lru_cache(maxsize=512)
def _import_statements(source: bytes, package: str) -> tuple[tuple[tuple[str, ...], tuple[str, ...]], ...]:
    """Per import statement anywhere in ``source``: (modules imported, ``module.name`` candidates).

    Cached by content: a flow computes every stage's key from the same few files.
    """
    statements = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            statements.append((tuple(alias.name for alias in node.names), ()))
        elif isinstance(node, ast.ImportFrom):
            base = _absolute(node.module, node.level, package)
            # `from pkg import x`: x is a submodule or a name defined in pkg.
            statements.append(((base,), tuple(f"{base}.{alias.name}" for alias in node.names if alias.name != "*")))
    return tuple(statements)


def imports_of(name: str, root: Path = PROJECT_ROOT) -> set[str]:
    """The project modules that module ``name``'s source imports, anywhere in its syntax tree."""
    path = module_file(name, root)
    if path is None:
        raise ImportError(f"{name} is not a project module under {root}")
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for modules, names in _import_statements(path.read_bytes(), package):
        for module in modules:
            for parent in _with_parents(module):
                if parent.split(".")[0] not in PROJECT_PACKAGES:
                    break
                if module_file(parent, root) is None:
                    raise ImportError(f"{path}: imports {module}, which is not under {root}")
                found.add(parent)
        found.update(n for n in names if module_file(n, root) is not None)
    return found


def closure(modules: Iterable[str], root: Path = PROJECT_ROOT) -> set[str]:
    """``modules``, their packages and every project module they import, transitively."""
    todo = [parent for name in modules for parent in _with_parents(name)]
    seen: set[str] = set()
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo.extend(imports_of(name, root) - seen)
    return seen


def stage_modules(name: str, root: Path = PROJECT_ROOT) -> tuple[str, ...]:
    """The project modules making up stage ``name``'s code version: its own and every earlier stage's."""
    roots = [module for s in upto(name) for module in (s.module, *s.loaded_by_path)]
    return tuple(sorted(closure(roots, root)))


def code_version(modules: Iterable[str], root: Path = PROJECT_ROOT) -> str:
    """Hash of the names and source bytes of the project modules ``modules``."""
    h = hashlib.sha256()
    for name in sorted(set(modules)):
        path = module_file(name, root)
        if path is None:
            raise ImportError(f"{name} is not a project module under {root}")
        h.update(name.encode())
        h.update(path.read_bytes())
    return h.hexdigest()[:16]


def stage_code_version(name: str, root: Path = PROJECT_ROOT) -> str:
    """The code version of stage ``name`` (cumulative over the stages before it)."""
    return code_version(stage_modules(name, root), root)

