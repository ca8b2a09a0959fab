"""Health checks: HTTP (httpx), TCP ports, and the Prefect server's pool, workers and deployments."""

from __future__ import annotations

import contextlib
import datetime as dt
import socket
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import httpx

from maskcls.names import DEPLOYMENTS, POOL_NAME
from stack.commands import url_host

if TYPE_CHECKING:
    from stack.processes import Service

DEFAULT_TIMEOUT = 180.0


def http_request(
    url: str, data: Any = None, method: str | None = None, timeout: float = 5.0
) -> tuple[int, Any]:
    """(status, parsed JSON or text) of a request (POST if `data` is given, as JSON).

    HTTP error statuses are returned, not raised; a failed connection raises httpx.HTTPError.
    """
    # Local health checks must never go through a proxy from the environment.
    with httpx.Client(trust_env=False, timeout=timeout) as client:
        response = client.request(method or ("GET" if data is None else "POST"), url, json=data)
    try:
        return response.status_code, response.json()
    except ValueError:
        return response.status_code, response.text


def http_ok(url: str, timeout: float = 3.0) -> bool:
    """True if GET `url` answers 200."""
    try:
        return http_request(url, timeout=timeout)[0] == 200
    except httpx.HTTPError:
        return False


def free_port() -> int:
    """A port on 127.0.0.1 nothing listens on right now (the kernel's pick; free until someone binds it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_open(host: str, port: int, timeout: float = 1.0) -> bool:
    """True if something accepts TCP connections on host:port."""
    with contextlib.suppress(OSError), socket.create_connection((url_host(host), port), timeout=timeout):
        return True
    return False


def wait_healthy(url: str, timeout: float = DEFAULT_TIMEOUT, service: Service | None = None) -> None:
    """Poll GET `url` until it answers 200; fail early if `service` dies meanwhile."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if http_ok(url):
            return
        if service is not None and not service.alive():
            raise RuntimeError(f"{service.name} exited before {url} answered; {service.log_tail()}")
        time.sleep(0.5)
    log = f"; {service.log_tail()}" if service else ""
    raise TimeoutError(f"{url} did not answer within {timeout:.0f}s{log}")


def worker_online(api_url: str, pool: str, worker_name: str, since: float) -> bool:
    """The pool lists `worker_name` as ONLINE with a heartbeat after `since` (epoch seconds)."""
    try:
        status, workers = http_request(f"{api_url}/work_pools/{quote(pool)}/workers/filter", data={})
    except httpx.HTTPError:
        return False
    if status != 200 or not isinstance(workers, list):
        return False
    for worker in workers:
        if worker.get("name") != worker_name or worker.get("status") != "ONLINE":
            continue
        beat = worker.get("last_heartbeat_time")
        # A record left by an earlier worker of the same name must not count.
        if beat and dt.datetime.fromisoformat(beat).timestamp() >= since - 5:
            return True
    return False


def wait_worker_online(
    service: Service, api_url: str, pool: str = POOL_NAME, timeout: float = DEFAULT_TIMEOUT
) -> None:
    """Wait until worker `service` has registered with the pool."""
    worker_name = f"maskcls-{service.name}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if worker_online(api_url, pool, worker_name, service.started_at):
            return
        if not service.alive():
            raise RuntimeError(f"{service.name} exited; {service.log_tail()}")
        time.sleep(1)
    raise TimeoutError(f"{service.name} did not come online in pool {pool!r} within {timeout:.0f}s")


def work_pool_exists(api_url: str, pool: str = POOL_NAME) -> bool:
    """The work pool `pool` exists on the server."""
    try:
        status, _ = http_request(f"{api_url}/work_pools/{quote(pool)}")
    except httpx.HTTPError:
        return False
    return status == 200


def deployment_exists(api_url: str, flow_name: str, deployment_name: str) -> bool:
    """The deployment `flow_name`/`deployment_name` exists on the server."""
    try:
        status, _ = http_request(f"{api_url}/deployments/name/{quote(flow_name)}/{quote(deployment_name)}")
    except httpx.HTTPError:
        return False
    return status == 200


def missing_deployments(api_url: str) -> list[str]:
    """"flow/deployment" of every deployment flows/deploy.py registers that the server lacks."""
    return [f"{flow}/{name}" for flow, name in DEPLOYMENTS if not deployment_exists(api_url, flow, name)]
