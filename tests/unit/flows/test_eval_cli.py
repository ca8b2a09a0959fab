"""`maskcls evaluate`, `maskcls champion set|show` and `maskcls sweep --export/--from-run`: arguments,
exit codes and errors, with a stand-in classifier or a local MLflow store (no server)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from flows import cli, eval_cli
from maskcls import config
from tests.unit.maskcls.test_folder_eval import BrightIsUnmasked, image


# A fresh MASKCLS_HOME and the logging put back, for every test here (tests/unit/flows/conftest.py).
pytestmark = pytest.mark.usefixtures("_home")


@pytest.fixture
def no_mlflow(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any MLflow use fails the test: these errors must come before it."""
    from tasks import tracking

    def configure(settings):
        raise AssertionError("MLflow was used")

    monkeypatch.setattr(tracking, "configure", configure)


def _invoke(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli.app, list(args))
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture
def stand_in(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """`evaluate` loads BrightIsUnmasked for any URI; the URIs asked for are recorded."""
    from tasks import tracking

    asked: list[str] = []

    def load_classifier(settings, uri):
        asked.append(uri)
        return BrightIsUnmasked()

    monkeypatch.setattr(tracking, "load_classifier", load_classifier)
    return asked


def test_the_cli_spells_the_registry_names_of_the_config() -> None:
    assert eval_cli.REGISTERED_MODEL_NAME == config.REGISTERED_MODEL_NAME
    assert eval_cli.CHAMPION_ALIAS == config.CHAMPION_ALIAS


def test_evaluate_prints_the_metrics_writes_the_figures_and_exits_3_for_skipped_images(
        stand_in: list[str], no_mlflow: None, tmp_path: Path) -> None:
    data = tmp_path / "mine"
    image(data / "with_mask" / "a.jpg", 20)
    image(data / "without_mask" / "b.jpg", 230)
    (data / "without_mask" / "c.jpg").write_bytes(b"truncated")
    code, out, err = _invoke("evaluate", str(data), "--out", str(tmp_path / "figures"))
    assert code == eval_cli.EXIT_SKIPPED, err
    assert stand_in == [eval_cli.DEFAULT_MODEL]
    assert f"{data / 'without_mask' / 'c.jpg'}\terror:" in err and "(skipped)" in err
    assert "accuracy" in out and "1.0000" in out and "2 images (with_mask 1, without_mask 1); 1 unreadable" in out
    assert (tmp_path / "figures" / "confusion_matrix.png").stat().st_size > 0


def test_evaluate_json_exits_0_when_every_image_was_read(stand_in: list[str], no_mlflow: None,
                                                          tmp_path: Path) -> None:
    image(tmp_path / "with_mask" / "a.jpg", 20)
    image(tmp_path / "without_mask" / "b.jpg", 20)  # dark: called masked
    code, out, err = _invoke("evaluate", str(tmp_path), "--model", "models:/face-mask-classifier/2", "--json")
    assert code == 0, err
    result = json.loads(out)
    assert result["metrics"]["accuracy"] == 0.5 and result["metrics"]["recall_without_mask"] == 0.0
    assert result["unreadable"] == [] and result["out"] is None and stand_in == ["models:/face-mask-classifier/2"]


def test_evaluate_names_the_folders_that_match_no_class(stand_in: list[str], no_mlflow: None, tmp_path: Path) -> None:
    image(tmp_path / "masked" / "a.jpg", 20)
    image(tmp_path / "with_mask" / "a.jpg", 20)
    code, _, err = _invoke("evaluate", str(tmp_path))
    assert code == 2 and "error:" in err and "masked match no class of the model" in err


@pytest.mark.parametrize("args, message", [
    (["evaluate", "{tmp}/nothing-here"], "is not a folder"),
    (["evaluate", "{tmp}", "--model", "models:/face-mask-classifier"], "is not a registered model URI"),
    (["evaluate", "{tmp}"], "no class folders with images"),
    (["champion", "set", "three", "--reason", "rollback"], "is not a version number"),
    (["champion", "set", "3", "--reason", " "], "--reason is empty"),
    (["sweep", "--from-run", "abc"], "--from-run exports an existing sweep"),
    (["sweep", "--from-run", "abc", "--export", "{tmp}/x.json", "--grid", "train.epochs=1,2"], "without --grid"),
    (["sweep"], "give at least one --grid"),
    (["sweep", "--export", "{tmp}", "--grid", "train.epochs=1,2"], "is a folder"),
])
def test_argument_errors_stop_before_any_server(args: list[str], message: str, stand_in: list[str],
                                                no_mlflow: None, tmp_path: Path) -> None:
    code, _, err = _invoke(*(a.replace("{tmp}", str(tmp_path)) for a in args))
    assert code == 2 and message in err, err
    assert "Traceback" not in err


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A local MLflow store with model `m` at version 1 (creating the SQLite store takes seconds)."""
    from mlflow import MlflowClient

    home = tmp_path_factory.mktemp("registry-home")
    settings = config.Settings.from_env({"MASKCLS_HOME": str(home)})
    from tasks import tracking

    tracking.configure(settings)
    client = MlflowClient(settings.tracking_uri)
    client.create_registered_model("m")
    source = home / "model-files"
    source.mkdir()
    client.create_model_version("m", source=str(source))
    return home


def test_champion_set_to_a_missing_version_lists_those_that_exist(registry: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MASKCLS_HOME", str(registry))
    code, _, err = _invoke("champion", "set", "5", "--model", "m", "--reason", "roll back")
    assert code == 1 and "m has no version 5" in err and "its versions: 1" in err
    code, _, err = _invoke("champion", "show", "--model", "nope")
    assert code == 1 and "there is no registered model nope" in err and "(registered: m)" in err
    code, out, _ = _invoke("champion", "show", "--model", "m")
    assert code == 1 and "m has no champion yet" in out


def test_sweep_from_run_exports_an_existing_sweep_from_mlflow_alone(registry: Path, tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    from mlflow import MlflowClient

    from tasks import tracking

    monkeypatch.setenv("MASKCLS_HOME", str(registry))
    settings = config.Settings.from_env({"MASKCLS_HOME": str(registry)})
    client = MlflowClient(settings.tracking_uri)
    parent = tracking.create_run(client, settings, "sweep-x", {"sweep": "true"})
    tracking.log_params(client, parent, {"sweep.grid": json.dumps({"train.learning_rate": [0.001, 0.003]}),
                                         "sweep.profile": "smoke"})
    children = {}
    for lr, loss, accuracy in (("0.001", 0.5, 0.99), ("0.003", 0.3, 0.90)):
        child = tracking.create_run(client, settings, f"point-{lr}", {"mlflow.parentRunId": parent,
                                                                      "dataset_fingerprint": "fp"})
        tracking.log_params(client, child, {"train.learning_rate": lr})
        tracking.log_metrics(client, child, {"best_val_loss": loss, "test_accuracy": accuracy})
        tracking.end_run(client, child, True)
        children[lr] = child
    target = tmp_path / "experiments" / "lr.json"
    code, out, err = _invoke("sweep", "--from-run", parent, "--export", str(target))
    assert code == 0, err
    assert f"best (lowest validation loss): {children['0.003']}" in out
    document = json.loads(target.read_text())
    assert [c["run_id"] for c in document["candidates"]] == [children["0.003"], children["0.001"]]
    assert document["candidates"][0]["git_commit"] == tracking.git_commit()
    assert document["dataset_fingerprints"] == ["fp"]
    # A run that is not a sweep's parent is named as such.
    code, _, err = _invoke("sweep", "--from-run", children["0.001"], "--export", str(target))
    assert code == 1 and "is not a sweep's parent run" in err


def test_sweep_takes_several_sources_like_train(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import flows.sweep

    asked: dict = {}

    def sweep_flow(**kwargs):
        asked.update(kwargs)
        return {"mlflow_run_id": "parent", "points": []}

    monkeypatch.setenv("MASKCLS_HOME", str(tmp_path))
    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:9/api")  # what _stack_env would find
    monkeypatch.setattr(cli, "_stack_env", lambda: None)
    monkeypatch.setattr(flows.sweep, "sweep_flow", sweep_flow)
    code, out, err = _invoke("sweep", "--grid", "train.epochs=1,2", "--profile", "smoke", "--source", "a",
                             "--source", "voc:b?part=tune,c", "--json")
    assert code == 0, err
    assert asked["source"] == ["a", "voc:b?part=tune,c"]
    assert json.loads(out)["mlflow_run_id"] == "parent"
