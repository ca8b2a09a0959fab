"""The service boundaries translate their service's failures into the project's errors, so the
CLI can print ``error.message`` without knowing anything about MLflow or Prefect."""

from __future__ import annotations

import httpx
import pytest
import requests
from mlflow.exceptions import MlflowException

from maskcls.errors import MaskclsError, OrchestrationError, TrackingError
from tasks import prefect_api, tracking


def test_a_refused_mlflow_request_becomes_a_tracking_error_naming_the_server(monkeypatch) -> None:
    monkeypatch.setattr(tracking.mlflow, "get_tracking_uri", lambda: "http://127.0.0.1:5999")
    with pytest.raises(TrackingError) as info:
        with tracking.translated():
            raise MlflowException("RESOURCE_DOES_NOT_EXIST: Registered Model with name=x not found")
    assert isinstance(info.value, MaskclsError)
    assert "http://127.0.0.1:5999" in info.value.message
    assert "not found" in info.value.message


def test_a_lost_mlflow_server_says_what_to_do(monkeypatch) -> None:
    monkeypatch.setattr(tracking.mlflow, "get_tracking_uri", lambda: "http://127.0.0.1:5999")
    lost = requests.ConnectionError(
        "API request to http://127.0.0.1:5999/api/2.0/mlflow/runs/log-batch failed with exception "
        "HTTPConnectionPool(host='127.0.0.1', port=5999): Max retries exceeded "
        "(Caused by NewConnectionError('[Errno 111] Connection refused'))")
    with pytest.raises(TrackingError) as info:
        with tracking.translated():
            raise lost
    message = info.value.message
    assert message.startswith("Lost the MLflow tracking server http://127.0.0.1:5999")
    assert "Connection refused" in message and "MASKCLS_MLFLOW_RETRY_S" in message
    assert info.value.__cause__ is lost  # the traceback (for the log file) keeps the original


def test_other_exceptions_pass_through_the_mlflow_boundary_untouched() -> None:
    with pytest.raises(KeyError):
        with tracking.translated():
            raise KeyError("a bug, not a service failure")


def test_a_failed_prefect_request_becomes_an_orchestration_error_naming_the_api(monkeypatch) -> None:
    monkeypatch.setattr(prefect_api, "api_url", lambda: "http://127.0.0.1:4999/api")
    with pytest.raises(OrchestrationError) as info:
        with prefect_api.translated():
            raise httpx.ConnectError("[Errno 111] Connection refused")
    assert isinstance(info.value, MaskclsError)
    assert "http://127.0.0.1:4999/api" in info.value.message
    assert "make up" in info.value.message
