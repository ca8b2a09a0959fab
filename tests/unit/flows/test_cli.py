"""flows.cli: errors become one paragraph and an exit code; --debug; log routing; settings checks."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from flows import cli
from maskcls.errors import OrchestrationError, TrackingError


# A fresh MASKCLS_HOME and the logging put back, for every test here (tests/unit/flows/conftest.py).
pytestmark = pytest.mark.usefixtures("_home")


def _invoke(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli.app, list(args))
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture
def load_model_raises(monkeypatch: pytest.MonkeyPatch):
    """Make `predict`'s model loading fail with the given exception (no MLflow involved)."""
    from tasks import tracking

    def install(exc: Exception) -> None:
        def load_model(settings, uri):
            raise exc

        monkeypatch.setattr(tracking, "load_model", load_model)

    return install


# --- settings and config errors: exit 2, the message alone --------------------------------


def test_a_bad_setting_variable_stops_every_command_naming_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MASKCLS_WORKERS", "lots")
    code, out, err = _invoke("predict", "x.jpg")
    assert code == 2
    assert err.startswith("error: invalid environment setting: MASKCLS_WORKERS='lots'")
    assert "Traceback" not in err and out == ""


def test_a_bad_override_is_a_usage_error_before_any_work(_home: Path) -> None:
    code, _, err = _invoke("train", "--set", "train.epochs")
    assert code == 2
    assert err.strip() == "error: override 'train.epochs' is not of the form section.field=value"
    assert not _home.exists()  # nothing ran: no Prefect home, no log file


def test_an_unknown_profile_names_the_choices() -> None:
    code, _, err = _invoke("train", "--profile", "nope")
    assert code == 2
    assert "unknown profile 'nope'" in err and "smoke" in err


# --- a MaskclsError: exit 1, its message alone, the traceback in the log file ----------------


def test_a_maskcls_error_prints_its_message_alone(load_model_raises, _home: Path) -> None:
    load_model_raises(TrackingError("cannot load model models:/m@champion from http://x: gone"))
    code, out, err = _invoke("predict", "x.jpg")
    assert code == 1
    log_file = _home / "logs" / "maskcls.log"
    assert err.splitlines() == [
        "error: cannot load model models:/m@champion from http://x: gone",
        f"The full log is in {log_file} (`maskcls --debug ...` shows it here).",
    ]
    assert out == ""
    logged = log_file.read_text()
    assert "Traceback (most recent call last)" in logged and "TrackingError: cannot load model" in logged


def test_debug_prints_the_traceback_before_the_message(load_model_raises) -> None:
    load_model_raises(OrchestrationError("no work pool"))
    code, _, err = _invoke("--debug", "predict", "x.jpg")
    assert code == 1
    assert err.index("Traceback (most recent call last)") < err.index("error: no work pool")
    assert "The full log is in" not in err


def test_the_exit_code_follows_the_class_not_the_text(load_model_raises) -> None:
    from maskcls.config import ConfigError

    load_model_raises(ConfigError("TrackingError: looks like tracking, is configuration"))
    code, _, err = _invoke("predict", "x.jpg")
    assert code == 2
    assert "error: TrackingError: looks like tracking, is configuration" in err


def test_an_unexpected_error_is_named_and_logged_not_explained(load_model_raises, _home: Path) -> None:
    load_model_raises(KeyError("champion"))
    code, _, err = _invoke("predict", "x.jpg")
    assert code == 1
    assert err.splitlines()[0] == "error: unexpected KeyError: 'champion'"
    assert "Traceback" not in err
    assert "KeyError: 'champion'" in (_home / "logs" / "maskcls.log").read_text()


def test_exit_requests_of_a_command_pass_through(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """`predict` exits 1 when no image could be read; that is no error report."""
    from tasks import tracking

    class Unreadable:
        def predict(self, frame):
            return {"label": [None] * len(frame), "probability": [float("nan")] * len(frame)}

    monkeypatch.setattr(tracking, "load_model", lambda settings, uri: Unreadable())
    (tmp_path / "a.jpg").write_bytes(b"not an image")
    code, out, err = _invoke("predict", str(tmp_path / "a.jpg"))
    assert code == 1
    assert out.strip().endswith("error: not a readable image")
    assert "error: unexpected" not in err


# --- the console keeps progress; failure reports go to the log file -------------------------


def _record(name: str, level: int, msg: str, exc: bool = False) -> logging.LogRecord:
    exc_info = None
    if exc:
        try:
            raise ValueError("inner")
        except ValueError:
            exc_info = sys.exc_info()
    return logging.LogRecord(name, level, __file__, 1, msg, None, exc_info)


@pytest.mark.parametrize(
    "name, level, msg, exc, shown",
    [
        ("prefect.task_runs", logging.INFO, "Finished in state Cached(type=COMPLETED)", False, True),
        ("prefect.task_runs", logging.INFO, "Task run failed with exception: X - Retry 1/2 will start", False, True),
        ("prefect.flow_runs", logging.INFO, "MLflow run abc in http://x; profile smoke", False, True),
        ("prefect.flow_runs", logging.INFO, "Finished in state Completed()", False, True),
        ("urllib3.connectionpool", logging.WARNING, "Retrying (Retry(total=2))", False, True),
        ("mlflow.tracking", logging.ERROR, "a library's own error line", False, True),
        ("prefect.task_runs", logging.ERROR, "Finished in state Failed('Task run encountered ...')", False, False),
        ("prefect.flow_runs", logging.ERROR, "Encountered exception during execution", True, False),
        ("prefect.flow_runs", logging.INFO, "Finished in state Failed('Flow run encountered ...')", False, False),
        ("prefect.flow_runs", logging.INFO, "Finished in state Crashed('...')", False, False),
        ("anything", logging.WARNING, "with a traceback", True, False),
    ],
)
def test_console_filter_drops_failure_reports_only(name: str, level: int, msg: str, exc: bool, shown: bool) -> None:
    assert cli._NoFailureReports().filter(_record(name, level, msg, exc)) is shown


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.mark.parametrize("debug", [False, True])
def test_route_logging_sends_everything_to_the_file(debug: bool, _home: Path) -> None:
    from maskcls.config import Settings

    console = _Collect()
    logging.getLogger().addHandler(console)
    run = cli._Run(settings=Settings.from_env(), debug=debug)
    cli._route_logging(run)
    engine = logging.getLogger("prefect.flow_runs")
    engine.setLevel(logging.INFO)
    engine.info("Beginning flow run 'x'")
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        engine.exception("Encountered exception during execution")
    for handler in logging.getLogger().handlers:
        handler.flush()
    assert run.log_file == _home / "logs" / "maskcls.log"
    logged = run.log_file.read_text()
    assert "Beginning flow run 'x'" in logged and "RuntimeError: boom" in logged
    shown = [r.getMessage() for r in console.records]
    expected = ["Beginning flow run 'x'"] + (["Encountered exception during execution"] if debug else [])
    assert shown == expected


# --- the MLflow calls of predict and cache prune, on a local store (no server) -------------------


@pytest.fixture(scope="module")
def _store_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One MASKCLS_HOME for the tests below: creating MLflow's SQLite store takes seconds."""
    return tmp_path_factory.mktemp("store-home")


@pytest.fixture
def store_home(_store_home: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("MASKCLS_HOME", str(_store_home))
    return _store_home


def test_predict_with_an_unknown_model_is_a_tracking_error_naming_it(store_home: Path) -> None:
    code, out, err = _invoke("predict", "--model", "models:/no-such-model@champion", "x.jpg")
    assert code == 1 and out == ""
    first = next(line for line in err.splitlines() if line.startswith("error:"))
    assert first.startswith(f"error: cannot load model models:/no-such-model@champion from sqlite:///{store_home}")
    assert "no-such-model" in first.split(" from ", 1)[1]
    assert "Traceback" not in err


def test_cache_prune_removes_model_files_no_version_uses(store_home: Path) -> None:
    stray = store_home / "store" / "models" / ("0" * 64 + ".keras")
    stray.parent.mkdir(parents=True)
    stray.write_bytes(b"not registered")
    code, out, _ = _invoke("cache", "prune", "--dry-run")
    assert code == 0
    assert out.splitlines() == [f"would remove {stray}", "1 model files to remove, 0 in use kept"]
    assert stray.exists()
    code, out, _ = _invoke("cache", "prune")
    assert code == 0 and out.splitlines()[-1] == "1 model files removed, 0 in use kept"
    assert not stray.exists()


def test_train_takes_several_sources(monkeypatch: pytest.MonkeyPatch) -> None:
    import flows.train

    seen: dict = {}

    def fake_flow(**kwargs):
        seen.update(kwargs)
        return {"metrics": {"test_accuracy": 0.9, "test_f1": 0.9, "test_roc_auc": 0.9}, "cache_hit": False,
                "model_version": "1", "promotion": "promoted", "registered_model": "face-mask-classifier-3class",
                "mlflow_run_id": "r"}

    monkeypatch.setattr(cli, "_prefect_api", lambda settings: lambda: None)  # no Prefect server
    monkeypatch.setattr(flows.train, "train_flow", fake_flow)
    code, out, err = _invoke("train", "--profile", "three-class", "--source", "/d/a", "--source",
                             "voc:/d/scenes?part=tune")
    assert code == 0, err
    assert seen["source"] == ["/d/a", "voc:/d/scenes?part=tune"] and seen["profile"] == "three-class"
    assert "face-mask-classifier-3class version 1: promoted" in out
