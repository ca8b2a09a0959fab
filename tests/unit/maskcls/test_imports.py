"""The library never imports prefect or mlflow (orchestration and tracking live outside maskcls).

Every module under maskcls/ is imported in a fresh interpreter; none is exempt, and the list
of modules is read from the files, so a new module is checked the day it is added.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import maskcls

PACKAGE = Path(maskcls.__file__).resolve().parent

PROBE = r"""
import importlib, json, pkgutil, sys
import maskcls
names = sorted(m.name for m in pkgutil.walk_packages(maskcls.__path__, "maskcls."))
failed = {}
for name in names:
    try:
        importlib.import_module(name)
    except Exception as exc:
        failed[name] = repr(exc)
loaded = sorted(m for m in sys.modules if m.split(".")[0] in {"prefect", "mlflow"})
print(json.dumps({"modules": names, "forbidden": loaded, "failed": failed}))
"""


def module_files() -> set[str]:
    """The dotted name of every .py file below maskcls/ (a package's __init__ is the package)."""
    names = set()
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        names.add(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names - {"maskcls"}


def _start_probe() -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", PROBE],
        cwd=PACKAGE.parent,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


# Started when this file is collected: the probe's TensorFlow import (10+ s) then overlaps the
# rest of the session instead of adding to it. The test below waits for it.
_PROBE = _start_probe()


def test_importing_every_maskcls_module_loads_neither_prefect_nor_mlflow() -> None:
    try:
        stdout, stderr = _PROBE.communicate(timeout=300)
    finally:
        if _PROBE.poll() is None:
            _PROBE.kill()
    assert _PROBE.returncode == 0, stderr[-3000:]
    report = json.loads(stdout.strip().splitlines()[-1])
    # Every file is a module the probe found (a folder of .py files without __init__.py would not be).
    assert set(report["modules"]) == module_files()
    assert report["failed"] == {}, report["failed"]
    assert report["forbidden"] == [], report["forbidden"]
