"""Part 2: bad input dataset-wide. Each case is a real `maskcls train` process that must stop
with a non-zero exit code and one clear paragraph naming the source (file, folder or URL)
and the problem, with nothing registered. URLs are served by a local HTTP server on
127.0.0.1 that misbehaves on purpose; the cases run a few at a time to save wall time.
(A refused connection is left to tests/unit/maskcls/test_source.py: same code path as HTTP 500.)"""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from maskcls.config import DEFAULT_PIN, REGISTERED_MODEL_NAME
from tests.faults import crafting
from tests.support.data import PAST_COPIES, copy_subset, shared_files
from tests.support.servers import Servers
from tests.support.zips import zip_of_folder

from .conftest import Cli, CliRun, Misbehaving, assert_clear_error


@dataclass
class Case:
    make: Callable[[Path, Misbehaving], tuple[str, dict[str, str]]]  # -> (source, extra env)
    words: Callable[[str], list[str]]  # source -> words the message must contain


def _file(name: str, data: bytes) -> Callable[[Path, Misbehaving], tuple[str, dict[str, str]]]:
    def make(tmp: Path, _: Misbehaving) -> tuple[str, dict[str, str]]:
        path = tmp / name
        path.write_bytes(data)
        return str(path), {}
    return make


def _served(path: str, data: bytes | None = None, **env: str):
    def make(tmp: Path, server: Misbehaving) -> tuple[str, dict[str, str]]:
        if data is not None:
            server.files[path] = data
        return server.url(path), dict(env)
    return make


def _folder(build: Callable[[Path], None]):
    def make(tmp: Path, _: Misbehaving) -> tuple[str, dict[str, str]]:
        root = tmp / "data"
        root.mkdir()
        build(root)
        return str(root), {}
    return make


def _no_class_folders(root: Path) -> None:
    for k, f in enumerate(shared_files("with_mask")[PAST_COPIES:PAST_COPIES + 6]):
        shutil.copy2(f, root / f"img{k}.jpg")


def _one_class(root: Path) -> None:
    copy_subset(root, 6, offset=PAST_COPIES)
    shutil.rmtree(root / "without_mask")
    (root / "without_mask").mkdir()
    (root / "without_mask" / "a.jpg").write_bytes(b"<html>not a photo</html>")
    (root / "without_mask" / "b.jpg").write_bytes(b"")


def _class_too_small(root: Path) -> None:
    copy_subset(root, 8, offset=PAST_COPIES)
    for extra in sorted((root / "without_mask").iterdir())[2:]:
        extra.unlink()


def _symlink_outside(root: Path) -> None:
    copy_subset(root, 6, offset=PAST_COPIES)
    outside = root.parent / "outside.jpg"
    shutil.copy2(shared_files("without_mask")[0], outside)
    (root / "with_mask" / "linked.jpg").symlink_to(outside)


def _dataset_zip() -> bytes:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        return zip_of_folder(copy_subset(Path(tmp), 6, offset=PAST_COPIES))


# The cases that wait (timeouts, retries with backoff) come first, so the others run meanwhile.
CASES: dict[str, Case] = {
    "url-times-out": Case(_served("/hang/data.zip", MASKCLS_DOWNLOAD_TIMEOUT_S="1"), lambda s: [s, "timed out"]),
    "url-fails": Case(_served("/error/data.zip"), lambda s: [s, "HTTP 500"]),
    "missing-path": Case(lambda tmp, _: (str(tmp / "no-such-folder"), {}),
                         lambda s: [s, "does not exist"]),
    "url-returns-html": Case(_served("/html/data.zip"), lambda s: [s, "returned HTML"]),
    "zip-corrupt": Case(_file("corrupt.zip", crafting.corrupt_zip()), lambda s: [s, "corrupt"]),
    "zip-encrypted": Case(_file("encrypted.zip", crafting.encrypted_zip()), lambda s: [s, "encrypted"]),
    "zip-empty": Case(_file("empty.zip", crafting.empty_zip()), lambda s: [s, "empty zip"]),
    "zip-slip": Case(_file("slip.zip", crafting.slip_zip()), lambda s: [s, "'..'", "escaped.png"]),
    "zip-symlink": Case(_file("symlink.zip", crafting.symlink_zip()), lambda s: [s, "symbolic link"]),
    "zip-oversize": Case(_file("oversize.zip", crafting.oversize_zip()), lambda s: [s, "bytes allowed"]),
    "pin-mismatch": Case(None, lambda s: ["does not match the pin", DEFAULT_PIN.name, "missing"]),  # type: ignore[arg-type]
    "no-class-folders": Case(_folder(_no_class_folders), lambda s: [s, "no class folders"]),
    "one-class": Case(_folder(_one_class), lambda s: [s, "at least two class", "without_mask (0)"]),
    "class-too-small": Case(_folder(_class_too_small), lambda s: [s, "without_mask", "too few to split"]),
    "symlink-outside": Case(_folder(_symlink_outside), lambda s: [s, "symbolic link", "points outside"]),
}


def _pin_mismatch(tmp: Path, server: Misbehaving) -> tuple[str, dict[str, str]]:
    # A mirror of the pinned default archive that serves something else: the pin applies to it
    # through MASKCLS_PINS, exactly as it does to the default URL.
    server.files["/mirror/face-mask.zip"] = _dataset_zip()
    url = server.url("/mirror/face-mask.zip")
    return url, {"MASKCLS_PINS": f"{url}={DEFAULT_PIN}"}


CASES["pin-mismatch"].make = _pin_mismatch


@dataclass
class Outcome:
    source: str
    run: CliRun
    home: Path


@pytest.fixture(scope="module")
def outcomes(servers: Servers, mlflow_client, tmp_path_factory) -> dict[str, Outcome]:
    server = Misbehaving()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    base = tmp_path_factory.mktemp("bad-datasets")
    cli = Cli(base / "logs")
    versions_before = len(mlflow_client.search_model_versions(f"name='{REGISTERED_MODEL_NAME}'"))
    try:
        prepared: dict[str, tuple[str, dict[str, str], Path]] = {}
        for name, case in CASES.items():
            tmp = base / name
            tmp.mkdir()
            source, extra = case.make(tmp, server)
            prepared[name] = (source, extra, tmp / "home")

        def one(name: str) -> Outcome:
            source, extra, home = prepared[name]
            env = servers.env(home, **extra)
            run = cli.run(["train", "--profile", "smoke", "--source", source], env, timeout=300)
            return Outcome(source, run, home)

        with ThreadPoolExecutor(max_workers=4) as pool:
            results = dict(zip(prepared, pool.map(one, prepared)))
    finally:
        cli.close()
        server.stop_hanging.set()
        server.shutdown()
        server.server_close()
    versions_after = len(mlflow_client.search_model_versions(f"name='{REGISTERED_MODEL_NAME}'"))
    assert versions_after == versions_before, "a failed run registered a model version"
    return results


@pytest.mark.parametrize("name", list(CASES))
def test_stops_with_a_clear_error(name: str, outcomes, mlflow_client):
    out = outcomes[name]
    message = assert_clear_error(out.run, *CASES[name].words(out.source))
    # without --debug the paragraph stands alone: the tracebacks went to the log file it names
    assert "Traceback" not in out.run.stderr(), out.run.log()
    log_file = out.home / "logs" / "maskcls.log"
    assert str(log_file) in message and "Traceback" in log_file.read_text(), message
    # nothing half-done is left where a later run would trust it: no partial extraction, and a
    # refused zip extracted nothing at all (a pin mismatch comes after a complete, faithful extraction)
    extracted = out.home / "downloads" / "extracted"
    leftovers = sorted(extracted.iterdir()) if extracted.exists() else []
    assert not [p for p in leftovers if p.name.startswith(".tmp-")], (message, leftovers)
    if name != "pin-mismatch":
        assert leftovers == [], (message, leftovers)
    assert not (out.home / "store").exists() or not any((out.home / "store").rglob("*.npy"))
    # the MLflow run of the failed flow run is FAILED, and it registered nothing
    from maskcls.config import EXPERIMENT_NAME

    exp = mlflow_client.get_experiment_by_name(EXPERIMENT_NAME)
    runs = mlflow_client.search_runs([exp.experiment_id], filter_string=f"tags.source = '{out.source}'")
    assert runs, f"no MLflow run for {out.source}"
    for run in runs:
        assert run.info.status == "FAILED", (name, run.info.status)
        assert "model_version" not in run.data.tags


def test_nothing_escaped_the_zip_targets(outcomes):
    """The zip-slip entry was never written anywhere (outside or inside MASKCLS_HOME)."""
    base = outcomes["zip-slip"].home.parent.parent
    assert not list(base.rglob("escaped.png"))
    assert not list(Path(os.sep, "tmp").glob("escaped.png"))
