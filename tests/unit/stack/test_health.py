"""Health checks against a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import socket
import time

import httpx
import pytest

from stack.health import (
    deployment_exists,
    http_ok,
    http_request,
    missing_deployments,
    port_open,
    wait_healthy,
    work_pool_exists,
    worker_online,
)
from tests.unit.stack.fake_http import FakeServer


def closed_port() -> int:
    """A port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_http_request_parses_json_and_text_and_returns_error_statuses(fake_server: FakeServer) -> None:
    fake_server.routes = {"GET /json": (200, {"a": 1}), "GET /text": (200, "OK"), "GET /bad": (500, {"e": 1})}
    assert http_request(f"{fake_server.url}/json") == (200, {"a": 1})
    assert http_request(f"{fake_server.url}/text") == (200, "OK")
    assert http_request(f"{fake_server.url}/bad") == (500, {"e": 1})


def test_http_request_posts_json_when_given_data(fake_server: FakeServer) -> None:
    fake_server.routes = {"POST /f": (200, [])}
    assert http_request(f"{fake_server.url}/f", data={"x": 2}) == (200, [])
    assert fake_server.requests == [("POST", "/f", {"x": 2})]


def test_http_request_raises_on_a_closed_port() -> None:
    with pytest.raises(httpx.HTTPError):
        http_request(f"http://127.0.0.1:{closed_port()}/")


def test_http_ok_only_on_200(fake_server: FakeServer) -> None:
    fake_server.routes = {"GET /health": (200, "OK"), "GET /sick": (503, "no")}
    assert http_ok(f"{fake_server.url}/health")
    assert not http_ok(f"{fake_server.url}/sick")
    assert not http_ok(f"{fake_server.url}/missing")
    assert not http_ok(f"http://127.0.0.1:{closed_port()}/health")


def test_http_request_ignores_proxies_from_the_environment(
    fake_server: FakeServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_server.routes = {"GET /health": (200, "OK")}
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{closed_port()}")
    monkeypatch.setenv("NO_PROXY", "")
    assert http_ok(f"{fake_server.url}/health")


def test_port_open(fake_server: FakeServer) -> None:
    assert port_open("127.0.0.1", fake_server.port)
    assert port_open("0.0.0.0", fake_server.port)  # a wildcard bind is checked on loopback
    assert not port_open("127.0.0.1", closed_port())


def test_wait_healthy_returns_once_healthy_and_times_out_otherwise(fake_server: FakeServer) -> None:
    fake_server.routes = {"GET /health": (200, "OK")}
    wait_healthy(f"{fake_server.url}/health", timeout=5)
    started = time.monotonic()
    with pytest.raises(TimeoutError, match="did not answer within 1s"):
        wait_healthy(f"{fake_server.url}/sick", timeout=1)
    assert time.monotonic() - started < 5


def test_pool_worker_and_deployment_checks(fake_server: FakeServer) -> None:
    api = f"{fake_server.url}/api"
    beat = "2030-01-01T00:00:00+00:00"
    fake_server.routes = {
        "GET /api/work_pools/maskcls": (200, {"name": "maskcls"}),
        "POST /api/work_pools/maskcls/workers/filter": (
            200, [{"name": "maskcls-worker-1", "status": "ONLINE", "last_heartbeat_time": beat}],
        ),
        "GET /api/deployments/name/train-face-mask/on-demand": (200, {"id": "x"}),
    }
    assert work_pool_exists(api) and not work_pool_exists(api, "other")
    assert worker_online(api, "maskcls", "maskcls-worker-1", since=time.time())
    assert not worker_online(api, "maskcls", "maskcls-worker-2", since=time.time())
    # A heartbeat from before the worker started belongs to an earlier worker of that name.
    assert not worker_online(api, "maskcls", "maskcls-worker-1", since=4_000_000_000)
    assert deployment_exists(api, "train-face-mask", "on-demand")
    assert missing_deployments(api) == [
        "train-face-mask/scheduled-retrain", "train-face-mask/sweep-member", "sweep-face-mask/sweep",
        "scan-photos/on-demand", "scan-photos/scan-inbox",
    ]
