"""Everything that talks to MLflow: runs, params, metrics, artifacts, registry, promotion.

The run id is always passed explicitly: MLflow's active run is thread-local and Prefect
runs tasks in worker threads.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import httpx
import mlflow
from mlflow import MlflowClient
from mlflow.entities import Metric
from mlflow.exceptions import MlflowException

from maskcls.config import (
    CHAMPION_ALIAS,
    EXPERIMENT_NAME,
    REGISTERED_MODEL_NAME,
    PipelineConfig,
    Settings,
)
from maskcls.errors import TrackingError

PROJECT_ROOT = Path(__file__).resolve().parents[1]
PYFUNC_CODE = Path(__file__).with_name("pyfunc_model.py")


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
    uri = settings.tracking_uri
    # Cap the client's own retries so a dead server is an error in about a minute, not ten.
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


def experiment_id(client: MlflowClient, settings: Settings) -> str:
    exp = client.get_experiment_by_name(EXPERIMENT_NAME)
    if exp is not None:
        return exp.experiment_id
    # A local store needs an explicit artifact root, or artifacts land in ./mlruns of the cwd.
    location = None
    if not settings.tracking_uri.startswith(("http://", "https://")):
        settings.artifacts_dir.mkdir(parents=True, exist_ok=True)
        location = settings.artifacts_dir.as_uri()
    try:
        return client.create_experiment(EXPERIMENT_NAME, artifact_location=location)
    except MlflowException:  # created by a concurrent run in the meantime
        return client.get_experiment_by_name(EXPERIMENT_NAME).experiment_id


def git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=5
        )
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def start_run(client: MlflowClient, settings: Settings, config: PipelineConfig, tags: dict[str, str]) -> str:
    """Create this flow run's MLflow run with every config setting as a param."""
    exp = experiment_id(client, settings)
    run = client.create_run(
        exp,
        run_name=tags.pop("run_name", None),
        tags={
            "profile": config.profile,
            "git_commit": git_commit(),
            "host": socket.gethostname(),
            "pid": str(os.getpid()),
            **tags,
        },
    )
    run_id = run.info.run_id
    log_params(client, run_id, config.flat())
    return run_id


def log_params(client: MlflowClient, run_id: str, params: dict[str, Any]) -> None:
    from mlflow.entities import Param

    items = [Param(k, json.dumps(v) if isinstance(v, (list, dict)) else str(v)) for k, v in params.items()]
    for start in range(0, len(items), 90):
        client.log_batch(run_id, params=items[start : start + 90])


def log_metrics(client: MlflowClient, run_id: str, metrics: dict[str, float], step: int = 0) -> None:
    now = int(time.time() * 1000)
    items = [Metric(k, float(v), now, step) for k, v in metrics.items() if v == v]  # drop NaN
    if items:
        client.log_batch(run_id, metrics=items)


def log_history(client: MlflowClient, run_id: str, history: dict[str, list[float]]) -> None:
    now = int(time.time() * 1000)
    items = [Metric(k, float(v), now, step) for k, vals in history.items() for step, v in enumerate(vals)]
    for start in range(0, len(items), 900):
        client.log_batch(run_id, metrics=items[start : start + 900])


def log_json(client: MlflowClient, run_id: str, payload: Any, artifact_file: str) -> None:
    client.log_dict(run_id, payload, artifact_file)


def log_file(client: MlflowClient, run_id: str, path: Path, name: str, artifact_path: str | None = None) -> None:
    """Upload ``path`` under its user-facing ``name`` (store files are named by hash)."""
    with tempfile.TemporaryDirectory() as tmp:
        target = Path(tmp) / name
        target.write_bytes(Path(path).read_bytes())
        client.log_artifact(run_id, str(target), artifact_path)


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
    uri = settings.tracking_uri
    if uri.startswith(("http://", "https://")):
        return f"{uri.rstrip('/')}/#/experiments/{exp_id}/runs/{run_id}"
    return f"(local store {uri}; `mlflow ui --backend-store-uri {uri}`) run {run_id}"


def end_run(client: MlflowClient, run_id: str, ok: bool) -> None:
    if not ok and not reachable(client.tracking_uri, timeout=2.0):
        # The run failed, often because MLflow went away: retrying here would only hide the
        # first error behind a second wait. The next run's recovery marks this one FAILED.
        return
    client.set_terminated(run_id, "FINISHED" if ok else "FAILED")


# --- registry ---------------------------------------------------------------------------


@contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive fcntl lock: the operating system releases it if the holder dies."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


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
        # Not `with mlflow.start_run(...)`: leaving that block ends the run FINISHED, so a process
        # killed later in the flow would leave a run that looks finished. The flow ends the run.
        mlflow.start_run(run_id=run_id)
        try:
            info = mlflow.pyfunc.log_model(
                name="model",
                python_model=str(PYFUNC_CODE),
                artifacts={"keras_model": str(model_file), "settings": str(settings_file)},
                code_paths=[str(PROJECT_ROOT / "maskcls")],
                signature=signature,
                input_example=pd.DataFrame({"image": [example_image]}),
                pip_requirements=pip_requirements(),
            )
        finally:
            mlflow.end_run("RUNNING")
    return info.model_uri, info.model_id


def champion(client: MlflowClient):
    try:
        return client.get_model_version_by_alias(REGISTERED_MODEL_NAME, CHAMPION_ALIAS)
    except MlflowException:
        return None


def ensure_registered_model(client: MlflowClient) -> None:
    try:
        client.get_registered_model(REGISTERED_MODEL_NAME)
    except MlflowException:
        try:
            client.create_registered_model(
                REGISTERED_MODEL_NAME,
                description="Face mask / no mask classifier. Input: DataFrame column `image` of encoded "
                "image bytes. Output: `label` (class folder name) and `probability` of that label.",
            )
        except MlflowException:
            pass  # created concurrently


def trained_on(client: MlflowClient, run_id: str) -> set[str]:
    """sha256 of every image a version's run trained or validated on."""
    with tempfile.TemporaryDirectory() as tmp:
        path = client.download_artifacts(run_id, "dataset/trained_on.json", tmp)
        return {row["sha256"] for row in json.loads(Path(path).read_text())}


def host_of(uri: str) -> str:
    return urlparse(uri).hostname or uri


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
