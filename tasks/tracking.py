"""Everything that talks to MLflow: runs, params, metrics, artifacts, registry, promotion.

The run id is always passed explicitly: MLflow's active run is thread-local and Prefect
runs tasks in worker threads. An MLflow failure leaves this module as a ``TrackingError``
that names the server and says what to do, never as an ``MlflowException``.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import requests
from mlflow.entities import Metric, Run
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

import mlflow
from maskcls.config import (
    CHAMPION_ALIAS,
    EXPERIMENT_NAME,
    REGISTERED_MODEL_NAME,
    PipelineConfig,
    Settings,
)
from maskcls.errors import TrackingError
from maskcls.names import CLASSIFIER_MODELS, SCANNER_MODELS
from maskcls.names import scanner_model_name as _scanner_name
from mlflow import MlflowClient

PROJECT_ROOT = Path(__file__).resolve().parents[1]
PYFUNC_CODE = Path(__file__).with_name("pyfunc_model.py")
SCANNER_CODE = Path(__file__).with_name("scanner_model.py")
#: The scanning model of the two-class classifier; another class set gets its own name.
SCANNER_MODEL_NAME = SCANNER_MODELS[2]
#: The scanner version's tag naming the classifier version it bundles.
WRAPS_TAG = "classifier_version"
#: The experiment tag with which MLflow's UI tells model-training experiments
#: (`custom_model_development`) from GenAI ones (`genai_development`).
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
MODEL_TRAINING_KIND = "custom_model_development"
#: MLflow 3.17's UI picks its view from its workflow switch, kept in this URL parameter (else
#: in the browser's storage, GenAI by default), before any experiment tag: links carry it.
MODEL_TRAINING_VIEW = "workflowType=machine_learning"

# The retry budget configure() last set, for the message of a request that gave up.
_retry_budget_s = 60.0


def retry_settings(budget: float) -> dict[str, str]:
    """MLflow's HTTP retry variables whose worst case (backoffs + timeouts) stays within ``budget`` s.

    urllib3 sleeps 0, 2f, 4f, ... between attempts (f = backoff factor, an int for MLflow):
    half the budget goes to backoff, the rest to the attempts' timeouts (at least 5 s each;
    a refused connection fails at once, so only a hung server uses them).
    """
    budget = max(1.0, budget)
    jitter = 0.5
    retries = 1
    while retries < 10 and (2 ** (retries + 1) - 2) + jitter * (retries + 1) <= budget / 2:
        retries += 1
    backoff = (2 ** retries - 2) + jitter * retries
    timeout = max(5, int((budget - backoff) / (retries + 1)))
    return {
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": str(retries),
        "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
        "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER": str(jitter),
        "MLFLOW_HTTP_REQUEST_TIMEOUT": str(timeout),
    }


def tracking_error(exc: BaseException, uri: str, budget_s: float) -> TrackingError:
    """What a failed MLflow request means for the user: the server lost mid-run, or a refused request."""
    text = " ".join(str(exc).split())
    why = (re.search(r"\[Errno -?\d+\] ([^'\")]+)", text)
           or re.search(r"(Read timed out|timed out|Max retries exceeded)", text))
    if why is None:
        return TrackingError(f"MLflow ({uri}) refused a request: {text[:600]}")
    request = re.search(r"API request to (\S+) failed", text)
    return TrackingError(
        f"Lost the MLflow tracking server {uri} during the run: "
        f"{'the request ' + request.group(1) if request else 'a request'} failed ({why.group(1).strip()}) after "
        f"retrying with backoff for up to {budget_s:g} s (MASKCLS_MLFLOW_RETRY_S). The run's finished "
        "stages are cached: run the same command again once the server is back; the next run marks "
        "this one FAILED in MLflow."
    )


@contextmanager
def translated() -> Iterator[None]:
    """Turn MLflow's failures (and those of the HTTP layer under it) into ``TrackingError``.

    Also a decorator: ``@translated()`` on every function here that sends a request.
    """
    try:
        yield
    except (MlflowException, requests.RequestException) as exc:
        raise tracking_error(exc, mlflow.get_tracking_uri(), _retry_budget_s) from exc


def reachable(uri: str, timeout: float = 5.0) -> bool:
    """A local store, or a tracking server answering GET /health within ``timeout``."""
    if not uri.startswith(("http://", "https://")):
        return True
    try:
        return httpx.get(uri.rstrip("/") + "/health", timeout=timeout).status_code == 200
    except httpx.HTTPError:
        return False


def configure(settings: Settings) -> MlflowClient:
    """Point MLflow at the configured tracking URI; probe a server before any work."""
    global _retry_budget_s
    uri = settings.tracking_uri
    # Cap the client's own retries so a dead server is an error in about a minute, not ten.
    _retry_budget_s = settings.mlflow_retry_s
    os.environ.update(retry_settings(settings.mlflow_retry_s))
    if uri.startswith(("http://", "https://")):
        try:
            resp = httpx.get(uri.rstrip("/") + "/health", timeout=5.0)
            resp.raise_for_status()
        except httpx.HTTPError as exc:
            raise TrackingError(
                f"MLflow tracking server {uri} is not reachable ({exc.__class__.__name__}: {exc}). "
                "Start it (make up) or set MLFLOW_TRACKING_URI to a reachable server; "
                "unset it to track into a local SQLite file under MASKCLS_HOME."
            ) from None
    elif uri.startswith("sqlite:///"):
        Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


@translated()
def experiment_id(client: MlflowClient, settings: Settings, name: str = EXPERIMENT_NAME) -> str:
    """The id of experiment ``name``, created if missing, tagged to open in the UI's model-training view."""
    exp = client.get_experiment_by_name(name)
    if exp is None:
        # A local store needs an explicit artifact root, or artifacts land in ./mlruns of the cwd.
        location = None
        if not settings.tracking_uri.startswith(("http://", "https://")):
            settings.artifacts_dir.mkdir(parents=True, exist_ok=True)
            location = settings.artifacts_dir.as_uri()
        try:
            return client.create_experiment(name, artifact_location=location,
                                            tags={EXPERIMENT_KIND_TAG: MODEL_TRAINING_KIND})
        except MlflowException:  # created by a concurrent run in the meantime
            exp = client.get_experiment_by_name(name)
    if exp.tags.get(EXPERIMENT_KIND_TAG) != MODEL_TRAINING_KIND:  # made before the tag, or by hand
        client.set_experiment_tag(exp.experiment_id, EXPERIMENT_KIND_TAG, MODEL_TRAINING_KIND)
    return exp.experiment_id


def git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=5
        )
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


@translated()
def create_run(client: MlflowClient, settings: Settings, run_name: str | None, tags: dict[str, str],
               experiment: str = EXPERIMENT_NAME) -> str:
    """A new run in ``experiment``, tagged with what made it (commit) and where (host, pid).

    ``host`` and ``pid`` are what ``tasks.recovery`` reads to fail the run if its process dies.
    """
    run = client.create_run(
        experiment_id(client, settings, experiment),
        run_name=run_name,
        tags={"git_commit": git_commit(), "host": socket.gethostname(), "pid": str(os.getpid()), **tags},
    )
    return run.info.run_id


def start_run(client: MlflowClient, settings: Settings, config: PipelineConfig, tags: dict[str, str]) -> str:
    """Create this flow run's MLflow run with every config setting as a param."""
    run_id = create_run(client, settings, tags.pop("run_name", None), {"profile": config.profile, **tags})
    log_params(client, run_id, config.flat())
    return run_id


@translated()
def log_params(client: MlflowClient, run_id: str, params: dict[str, Any]) -> None:
    from mlflow.entities import Param

    items = [Param(k, json.dumps(v) if isinstance(v, (list, dict)) else str(v)) for k, v in params.items()]
    for start in range(0, len(items), 90):
        client.log_batch(run_id, params=items[start : start + 90])


@translated()
def log_metrics(client: MlflowClient, run_id: str, metrics: dict[str, float], step: int = 0) -> None:
    now = int(time.time() * 1000)
    items = [Metric(k, float(v), now, step) for k, v in metrics.items() if v == v]  # drop NaN
    if items:
        client.log_batch(run_id, metrics=items)


@translated()
def log_history(client: MlflowClient, run_id: str, history: dict[str, list[float]]) -> None:
    now = int(time.time() * 1000)
    items = [Metric(k, float(v), now, step) for k, vals in history.items() for step, v in enumerate(vals)]
    for start in range(0, len(items), 900):
        client.log_batch(run_id, metrics=items[start : start + 900])


@translated()
def log_json(client: MlflowClient, run_id: str, payload: Any, artifact_file: str) -> None:
    client.log_dict(run_id, payload, artifact_file)


@translated()
def log_table(client: MlflowClient, run_id: str, rows: list[dict[str, Any]], artifact_file: str) -> None:
    """``rows`` as an MLflow table artifact (the UI shows it as a table)."""
    import pandas as pd

    client.log_table(run_id, data=pd.DataFrame(rows), artifact_file=artifact_file)


@translated()
def log_file(client: MlflowClient, run_id: str, path: Path, name: str, artifact_path: str | None = None) -> None:
    """Upload ``path`` under its user-facing ``name`` (store files are named by hash)."""
    with tempfile.TemporaryDirectory() as tmp:
        target = Path(tmp) / name
        target.write_bytes(Path(path).read_bytes())
        client.log_artifact(run_id, str(target), artifact_path)


@translated()
def log_dataset(client: MlflowClient, run_id: str, items: list[dict[str, Any]], source: str, digest: str) -> None:
    """Record the dataset as the run's MLflow dataset input (name, digest, source, schema)."""
    import pandas as pd
    from mlflow.entities import DatasetInput, InputTag

    df = pd.DataFrame(items, columns=["path", "label", "sha256"])
    ds = mlflow.data.from_pandas(df, source=source, targets="label", name="face-mask", digest=digest[:36])
    client.log_inputs(
        run_id,
        datasets=[DatasetInput(ds._to_mlflow_entity(), tags=[InputTag("mlflow.data.context", "training")])],
    )


def epoch_logger(client: MlflowClient, run_id: str):
    """A Keras callback that sends per-epoch loss and accuracy (train and validation) to the run.

    Built on demand so that importing this module does not import TensorFlow (a fully
    cached run never needs it).
    """
    import keras

    class EpochLogger(keras.callbacks.Callback):
        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            log_metrics(client, run_id, dict(logs or {}), step=epoch)

    return EpochLogger()


def run_url(settings: Settings, exp_id: str, run_id: str) -> str:
    """Where a person sees the run: its page in the UI's model-training view, or how to open a local store."""
    uri = settings.tracking_uri
    if uri.startswith(("http://", "https://")):
        return f"{uri.rstrip('/')}/#/experiments/{exp_id}/runs/{run_id}?{MODEL_TRAINING_VIEW}"
    return f"(local store {uri}; `mlflow ui --backend-store-uri {uri}`) run {run_id}"


@translated()
def end_run(client: MlflowClient, run_id: str, ok: bool) -> None:
    if not ok and not reachable(client.tracking_uri, timeout=2.0):
        # The run failed, often because MLflow went away: retrying here would only hide the
        # first error behind a second wait. The next run's recovery marks this one FAILED.
        return
    client.set_terminated(run_id, "FINISHED" if ok else "FAILED")


# --- runs left behind (tasks.recovery) --------------------------------------------------


@translated()
def running_runs(client: MlflowClient) -> list[Run]:
    """The project's runs still RUNNING (at most 500)."""
    exp = client.get_experiment_by_name(EXPERIMENT_NAME)
    if exp is None:
        return []
    return client.search_runs([exp.experiment_id], filter_string="attributes.status = 'RUNNING'", max_results=500)


@translated()
def fail_run(client: MlflowClient, run_id: str, tags: dict[str, str]) -> None:
    """Tag a run with why it failed and terminate it FAILED."""
    set_tags(client, run_id, tags)
    client.set_terminated(run_id, "FAILED")


# --- sweeps (tasks.sweep) ---------------------------------------------------------------


@translated()
def child_runs(client: MlflowClient, exp_id: str, parent_run_id: str) -> list[Run]:
    """The runs nested under ``parent_run_id`` (tag `mlflow.parentRunId`)."""
    return client.search_runs([exp_id], filter_string=f"tags.`mlflow.parentRunId` = '{parent_run_id}'",
                              max_results=1000)


def run_data(run: Run) -> dict[str, Any]:
    """A run as plain data: id, name, MLflow status, params, metrics (latest values), tags."""
    return {"run_id": run.info.run_id, "run_name": run.info.run_name, "status": run.info.status,
            "params": dict(run.data.params), "metrics": dict(run.data.metrics), "tags": dict(run.data.tags)}


@translated()
def sweep_runs(client: MlflowClient, parent_run_id: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """A sweep's parent run and its nested runs, as ``run_data``; TrackingError if there is no such run."""
    try:
        parent = client.get_run(parent_run_id)
    except MlflowException as exc:
        if exc.error_code not in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            raise
        raise TrackingError(f"there is no MLflow run {parent_run_id} in {client.tracking_uri}: give the "
                            "parent run id a sweep printed (`parent MLflow run ...`), with MLFLOW_TRACKING_URI "
                            "set to the MLflow server it logged to") from None
    children = child_runs(client, parent.info.experiment_id, parent_run_id)
    return run_data(parent), [run_data(child) for child in children]


# --- registry ---------------------------------------------------------------------------


def pip_requirements() -> list[str]:
    from importlib.metadata import version

    pins = ["mlflow", "tensorflow-cpu", "keras", "opencv-python-headless", "numpy", "pandas", "pydantic"]
    out = []
    for name in pins:
        try:
            out.append(f"{name}=={version(name)}")
        except Exception:  # noqa: BLE001 - a package that is not installed is simply not pinned
            continue
    return out


def _log_code_model(run_id: str, name: str, code: Path, artifacts: dict[str, str], signature: Any,
                    input_example: Any = None) -> tuple[str, str]:
    """Log the models-from-code file ``code`` with the maskcls package and ``artifacts`` into
    ``run_id`` as model ``name``; returns its model URI and model id."""
    # Not `with mlflow.start_run(...)`: leaving that block ends the run FINISHED, so a process
    # killed later in the flow would leave a run that looks finished. The flow ends the run.
    mlflow.start_run(run_id=run_id)
    try:
        info = mlflow.pyfunc.log_model(
            name=name,
            python_model=str(code),
            artifacts=artifacts,
            code_paths=[str(PROJECT_ROOT / "maskcls")],
            signature=signature,
            input_example=input_example,
            pip_requirements=pip_requirements(),
        )
    finally:
        mlflow.end_run("RUNNING")
    return info.model_uri, info.model_id


@translated()
def log_pyfunc(run_id: str, keras_path: Path, settings_path: Path, example_image: bytes) -> tuple[str, str]:
    """Log the model as code (no pickle) into ``run_id``; returns its model URI and model id."""
    import pandas as pd
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    signature = ModelSignature(
        inputs=Schema([ColSpec("binary", "image")]),
        outputs=Schema([ColSpec("string", "label"), ColSpec("double", "probability")]),
    )
    with tempfile.TemporaryDirectory() as tmp:
        # Artifacts keep user-facing names inside the model folder.
        model_file = Path(tmp) / "model.keras"
        model_file.write_bytes(Path(keras_path).read_bytes())
        settings_file = Path(tmp) / "preprocessing.json"
        settings_file.write_text(Path(settings_path).read_text())
        return _log_code_model(run_id, "model", PYFUNC_CODE,
                               {"keras_model": str(model_file), "settings": str(settings_file)},
                               signature, pd.DataFrame({"image": [example_image]}))


def champion(client: MlflowClient, name: str = REGISTERED_MODEL_NAME) -> ModelVersion | None:
    """The version the alias `champion` of registered model ``name`` points to, if any."""
    try:
        return client.get_model_version_by_alias(name, CHAMPION_ALIAS)
    except MlflowException:
        return None


@translated()
def ensure_registered_model(client: MlflowClient, name: str = REGISTERED_MODEL_NAME,
                            classes: Sequence[str] = ("with_mask", "without_mask"),
                            licences: Sequence[str] = ()) -> None:
    """Create registered model ``name`` if missing; its description (model card) names its classes
    and, when its data carry one, the data's licence (also a `licence` tag on the model)."""
    try:
        client.get_registered_model(name)
    except MlflowException:
        try:
            client.create_registered_model(name, description=model_card(classes, licences),
                                           tags={"licence": "; ".join(licences)} if licences else None)
        except MlflowException:
            pass  # created concurrently


def model_card(classes: Sequence[str], licences: Sequence[str] = ()) -> str:
    """The description of a registered classifier: what it answers and, if any, its data's licence."""
    card = (f"Face mask classifier over the classes {', '.join(classes)}. Input: DataFrame column `image` of "
            "encoded image bytes. Output: `label` (class folder name) and `probability` of that label.")
    if licences:
        card += (f" Licence: trained on data licensed {'; '.join(licences)}; a model trained on "
                 "non-commercial (NC) data may be used for non-commercial purposes only, with credit to the "
                 "data's authors (see the datasets' SOURCE.md), and shared under the same licence (SA).")
    return card


@translated()
def create_version(client: MlflowClient, model_uri: str, run_id: str, model_id: str,
                   tags: dict[str, str], name: str = REGISTERED_MODEL_NAME, description: str | None = None) -> str:
    """A new version of registered model ``name`` from a logged model; returns its version number."""
    version = client.create_model_version(name, source=model_uri, run_id=run_id,
                                          model_id=model_id, tags=tags, description=description)
    return str(version.version)


@translated()
def run_artifact_json(client: MlflowClient, run_id: str, artifact_file: str) -> Any:
    """The parsed JSON artifact ``artifact_file`` of run ``run_id``."""
    with tempfile.TemporaryDirectory() as tmp:
        return json.loads(Path(client.download_artifacts(run_id, artifact_file, tmp)).read_text())


def trained_on(client: MlflowClient, run_id: str) -> set[str]:
    """sha256 of every image a version's run trained or validated on."""
    return {row["sha256"] for row in run_artifact_json(client, run_id, "dataset/trained_on.json")}


@translated()
def version_labels(version: str, images: list[bytes], name: str = REGISTERED_MODEL_NAME) -> list[str]:
    """The labels registered version ``version`` gives ``images`` (loaded as any user loads it)."""
    import pandas as pd

    model = mlflow.pyfunc.load_model(f"models:/{name}/{version}")
    return list(model.predict(pd.DataFrame({"image": images}))["label"])


@translated()
def set_champion(client: MlflowClient, version: str, name: str = REGISTERED_MODEL_NAME) -> None:
    client.set_registered_model_alias(name, CHAMPION_ALIAS, version)


@translated()
def tag_version(client: MlflowClient, version: str, tags: dict[str, str], name: str = REGISTERED_MODEL_NAME) -> None:
    for key, value in tags.items():
        client.set_model_version_tag(name, version, key, value)


# --- the scanning model (tasks.promotion) ----------------------------------------------


def scanner_model_name(classes: Sequence[str]) -> str:
    """`face-mask-scanner` for the two-class classifier, `face-mask-scanner-3class` for the three-class
    one (``maskcls.names.scanner_model_name``)."""
    return _scanner_name(list(classes))


def scanner_signature(classes: Sequence[str]) -> Any:
    """Input: column `image` of encoded bytes (binary, so the scoring server base64-decodes JSON
    strings); output: `faces` (JSON), `count_<class>`, `error`; param `whole_image`."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema

    return ModelSignature(
        inputs=Schema([ColSpec("binary", "image")]),
        outputs=Schema([ColSpec("string", "faces"), *(ColSpec("long", f"count_{c}") for c in classes),
                        ColSpec("string", "error")]),
        params=ParamSchema([ParamSpec("whole_image", "boolean", False)]),
    )


@translated()
def scanner_wraps(client: MlflowClient, name: str) -> str | None:
    """The classifier version that scanner ``name``'s champion bundles (None: no scanner champion)."""
    try:
        aliases = client.get_registered_model(name).aliases
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
        return None
    if CHAMPION_ALIAS not in aliases:
        return None
    return client.get_model_version(name, aliases[CHAMPION_ALIAS]).tags.get(WRAPS_TAG)


@translated()
def register_scanner(client: MlflowClient, run_id: str, classifier_version: str, classes: Sequence[str],
                     classifier: str = REGISTERED_MODEL_NAME) -> str:
    """Register a scanner version bundling classifier version ``classifier_version``'s own files and
    the face detector, logged into ``run_id``; make it the scanner's champion. Returns its version."""
    from maskcls.detect import MODEL_PATH

    name = scanner_model_name(classes)
    with tempfile.TemporaryDirectory() as tmp:
        # The version's own model folder: its artifacts are the files its pyfunc loads.
        local = Path(mlflow.artifacts.download_artifacts(
            artifact_uri=f"models:/{classifier}/{classifier_version}", dst_path=tmp))
        artifacts = {"keras_model": str(local / "artifacts" / "model.keras"),
                     "settings": str(local / "artifacts" / "preprocessing.json"),
                     "detector": str(MODEL_PATH)}
        model_uri, model_id = _log_code_model(run_id, "scanner", SCANNER_CODE, artifacts, scanner_signature(classes))
    try:
        client.get_registered_model(name)
    except MlflowException:
        try:
            client.create_registered_model(
                name, description="Faces in photos, each labelled by the face-mask classifier. Input: DataFrame "
                "column `image` of encoded image bytes (base64 in JSON). Output per image: `faces` (JSON list "
                "of {x, y, w, h, label, probability, detector_score}), `count_<class>`, `error`.")
        except MlflowException:
            pass  # created concurrently
    version = client.create_model_version(name, source=model_uri, run_id=run_id, model_id=model_id,
                                          tags={WRAPS_TAG: classifier_version,
                                                "classifier_model": classifier})
    client.set_registered_model_alias(name, CHAMPION_ALIAS, str(version.version))
    return str(version.version)


# --- used by the training stages ---


def set_tags(client: MlflowClient, run_id: str, tags: dict[str, str]) -> None:
    """Set several tags of a run in one request."""
    from mlflow.entities import RunTag

    client.log_batch(run_id, tags=[RunTag(k, v) for k, v in tags.items()])


def tag_outcome(client: MlflowClient, run_id: str, cache_hit: bool, source_run_id: str) -> None:
    """Tag whether every stage came from the cache (then nothing was registered: `promotion=cached`)
    and which run trained the model."""
    tags = {"cache_hit": str(cache_hit).lower(), "source_run_id": source_run_id}
    set_tags(client, run_id, {**tags, "promotion": "cached"} if cache_hit else tags)


# --- used by the CLI ---


def _said(exc: BaseException, limit: int = 600) -> str:
    """An exception's text on one line, capped (MLflow's can carry a whole JSON response)."""
    text = " ".join(str(exc).split())
    return f"{exc.__class__.__name__}: {text[:limit]}"


def load_model(settings: Settings, uri: str) -> Any:
    """The pyfunc model at ``uri`` (e.g. ``models:/face-mask-classifier@champion``).

    Loading runs the model's own code, so any failure means this model cannot be used here:
    it is a TrackingError naming the model and the tracking server.
    """
    configure(settings)
    try:
        return mlflow.pyfunc.load_model(uri)
    except Exception as exc:  # noqa: BLE001 - see the docstring
        raise TrackingError(f"cannot load model {uri} from {settings.tracking_uri}: {_said(exc)}") from exc


def load_scanner(settings: Settings, uri: str) -> Any:
    """The scanning model at ``uri`` as its Python object: ``.scanner(config)`` builds a
    ``maskcls.scan.Scanner`` from its bundled detector and classifier, ``.classifier.classes``."""
    python_model = load_model(settings, uri).unwrap_python_model()
    if not callable(getattr(python_model, "scanner", None)):
        raise TrackingError(f"model {uri} is not a scanning model (it bundles no face detector): give a "
                            f"{SCANNER_MODEL_NAME} version, e.g. models:/{SCANNER_MODEL_NAME}@{CHAMPION_ALIAS}")
    return python_model


def registered_model_files(settings: Settings) -> set[str]:
    """sha256 of the Keras file of every registered classifier version, of every class set's name (a version
    without one adds nothing)."""
    from maskcls.files import sha256_file

    client = configure(settings)
    versions = []
    for name in CLASSIFIER_MODELS.values():  # every class set's classifier
        try:
            versions += client.search_model_versions(f"name='{name}'")
        except MlflowException as exc:
            raise TrackingError(
                f"cannot list the versions of {name} in {settings.tracking_uri}: {_said(exc)}"
            ) from exc
    keep: set[str] = set()
    for mv in versions:
        with tempfile.TemporaryDirectory() as tmp:
            try:
                keep.add(sha256_file(client.download_artifacts(mv.run_id, "model/artifacts/model.keras", tmp)))
            except (MlflowException, OSError):
                continue
    return keep


def load_classifier(settings: Settings, uri: str) -> Any:
    """The ``maskcls.inference.Classifier`` inside the pyfunc at ``uri``: its Keras model, its own
    preprocessing and class names (what `maskcls evaluate` scores with)."""
    python_model = load_model(settings, uri).unwrap_python_model()
    classifier = getattr(python_model, "classifier", None)
    if classifier is None or not callable(getattr(classifier, "proba", None)):
        raise TrackingError(f"model {uri} is not a face-mask classifier (it holds no maskcls Classifier): give a "
                            f"{REGISTERED_MODEL_NAME} version, e.g. models:/{REGISTERED_MODEL_NAME}@{CHAMPION_ALIAS}")
    return classifier


@translated()
def model_versions(client: MlflowClient, name: str) -> list[ModelVersion]:
    """Every version of registered model ``name``, oldest first; TrackingError if there is no such model."""
    try:
        client.get_registered_model(name)
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
        names = sorted(m.name for m in client.search_registered_models(max_results=100))
        raise TrackingError(f"there is no registered model {name} in {client.tracking_uri} (registered: "
                            f"{', '.join(names) or 'none'})") from None
    return sorted(client.search_model_versions(f"name='{name}'"), key=lambda v: int(v.version))


def model_version(client: MlflowClient, name: str, version: str) -> ModelVersion:
    """Version ``version`` of ``name``; TrackingError listing the versions that exist when it does not."""
    versions = model_versions(client, name)
    for mv in versions:
        if str(mv.version) == str(version):
            return mv
    raise TrackingError(f"{name} has no version {version} in {client.tracking_uri}; its versions: "
                        f"{', '.join(str(v.version) for v in versions) or 'none'}")


@translated()
def alias_version(client: MlflowClient, name: str, alias: str = CHAMPION_ALIAS) -> ModelVersion | None:
    """The version of ``name`` that ``alias`` points to (None: no such alias or model)."""
    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException as exc:
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            return None
        raise


@translated()
def move_alias(client: MlflowClient, name: str, version: str, tags: dict[str, str],
               alias: str = CHAMPION_ALIAS) -> None:
    """Point ``alias`` of ``name`` at ``version`` and tag that version with ``tags``."""
    client.set_registered_model_alias(name, alias, str(version))
    for key, value in tags.items():
        client.set_model_version_tag(name, str(version), key, value)


@translated()
def version_classes(client: MlflowClient, name: str, version: ModelVersion) -> list[str]:
    """The class names of a version: its run's `classes` param, else its own preprocessing.json."""
    if version.run_id:
        classes = client.get_run(version.run_id).data.params.get("classes")
        if classes:
            return classes.split(",")
    with tempfile.TemporaryDirectory() as tmp:
        local = mlflow.artifacts.download_artifacts(
            artifact_uri=f"models:/{name}/{version.version}/artifacts/preprocessing.json", dst_path=tmp)
        return list(json.loads(Path(local).read_text())["classes"])


# --- used by the scan flow ---


@translated()
def scanner_champion(client: MlflowClient, name: str) -> str | None:
    """The version number the scanner ``name``'s alias `champion` points to (None: no champion)."""
    try:
        return str(client.get_model_version_by_alias(name, CHAMPION_ALIAS).version)
    except MlflowException as exc:
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            return None
        raise


@translated()
def log_folder(client: MlflowClient, run_id: str, folder: Path, artifact_path: str | None = None) -> None:
    """Upload every file under ``folder`` (its layout kept) under ``artifact_path``."""
    client.log_artifacts(run_id, str(folder), artifact_path)


@translated()
def run_metrics(client: MlflowClient, exp_id: str, limit: int) -> list[dict[str, Any]]:
    """The latest ``limit`` runs of an experiment, newest first: run id, start time (ms) and metrics."""
    runs = client.search_runs([exp_id], order_by=["attributes.start_time DESC"], max_results=limit)
    return [{"run_id": r.info.run_id, "start_time": r.info.start_time, **r.data.metrics} for r in runs]


@translated()
def delete_runs_before(client: MlflowClient, exp_id: str, cutoff_ms: int, keep: str) -> list[str]:
    """Delete the experiment's runs started before ``cutoff_ms`` (epoch ms) but run ``keep``; their ids."""
    deleted: list[str] = []
    while True:
        page = client.search_runs([exp_id], filter_string=f"attributes.start_time < {cutoff_ms}", max_results=500)
        for run in page:
            if run.info.run_id != keep:
                client.delete_run(run.info.run_id)
                deleted.append(run.info.run_id)
        if len(page) < 500:  # else a full page: deleted runs leave the search, so look again
            return deleted
