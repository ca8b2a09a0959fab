"""The whole local stack for browser tests, started once per session on free 127.0.0.1 ports.

Prefect's server (scheduler loop 5 s), MLflow's server, the `maskcls` process
pool with two workers and every deployment of maskcls/names.py, started with the stack package's
functions in a temporary MASKCLS_HOME, on a small real subset of the shared
data. Every run the tests start uses the `smoke` profile: on-demand runs set it
in the UI's run form, and the scheduled deployment's parameters are set to it
through the API before its schedule fires.

Chromium is Debian's /usr/bin/chromium, headless, with a fresh profile per
session and no way off loopback. Screenshots of every step (and of the page of a
failed test) go to a temporary folder, printed in pytest's terminal summary
together with the services' logs. With MASKCLS_E2E_DOCS=1 the ones the README
shows are also copied to docs/screenshots/ (off by default, so that `make test`
does not rewrite tracked images on every run).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

import stack
from maskcls.names import FLOW_NAME, ON_DEMAND, SCHEDULED
from tests.support import REPO
from tests.support.data import copy_subset
from tests.support.servers import start_servers
from tests.support.waiting import wait_until

DOCS_SCREENSHOTS = REPO / "docs" / "screenshots"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
PER_CLASS = 30
VIEWPORT = {"width": 1440, "height": 900}
# Generous but bounded: a smoke run takes well under a minute here, start-up included.
RUN_TIMEOUT_S = 300.0
UI_TIMEOUT_MS = 30_000
NOT_LOOPBACK = re.compile(r"^(https?|wss?)://(?!(127\.0\.0\.1|localhost)[:/])")


@dataclass
class Stack:
    """The running stack: URLs, the data subset, and a small Prefect REST client."""

    home: Path
    prefect_url: str
    mlflow_url: str
    data_source: str
    workers: list[stack.Service] = field(default_factory=list)

    @property
    def api_url(self) -> str:
        return f"{self.prefect_url}/api"

    @property
    def prefect_ui(self) -> str:
        """Base URL of the UI a new browser gets (3.8.8: the React UI under /v2).

        Only "/" redirects to it; a deep link without the prefix opens the old UI.
        """
        settings = httpx.get(f"{self.prefect_url}/ui-settings", timeout=10, trust_env=False).json()
        base = settings[f"{settings['default_ui']}_base_url"] or "/"
        return f"{self.prefect_url}{base.rstrip('/')}"

    def api(self, method: str, path: str, json: Any = None, ok: tuple[int, ...] = (200, 201, 204)) -> Any:
        for _ in range(10):  # 503: Prefect's SQLite database was briefly locked by its own services
            response = httpx.request(method, f"{self.api_url}{path}", json=json, timeout=30, trust_env=False)
            if response.status_code != 503:
                break
            time.sleep(1)
        assert response.status_code in ok, f"{method} {path}: {response.status_code} {response.text[:500]}"
        return response.json() if response.content else None

    def deployment(self, name: str) -> dict[str, Any]:
        return self.api("GET", f"/deployments/name/{FLOW_NAME}/{name}")

    def flow_run(self, run_id: str) -> dict[str, Any]:
        return self.api("GET", f"/flow_runs/{run_id}")

    def flow_runs(self, deployment_id: str, **filters: Any) -> list[dict[str, Any]]:
        body = {"deployments": {"id": {"any_": [deployment_id]}}, "sort": "EXPECTED_START_TIME_ASC"}
        if filters:
            body["flow_runs"] = filters
        return self.api("POST", "/flow_runs/filter", json=body)

    def task_runs(self, flow_run_id: str) -> list[dict[str, Any]]:
        return self.api("POST", "/task_runs/filter", json={"flow_runs": {"id": {"any_": [flow_run_id]}}})

    def wait_run_final(self, run_id: str, timeout: float = RUN_TIMEOUT_S) -> dict[str, Any]:
        """Poll the API until the run reaches a final state; fail with worker logs if it does not."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            run = self.flow_run(run_id)
            if run["state_type"] in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED"):
                return run
            time.sleep(2)
        raise AssertionError(
            f"flow run {run_id} not finished after {timeout:.0f}s (state {run['state_name']});\n"
            + self.worker_logs()
        )

    def worker_logs(self, lines: int = 40) -> str:
        out = []
        for worker in self.workers:
            text = worker.log_path.read_text(errors="replace").splitlines()[-lines:]
            out.append(f"--- {worker.log_path}\n" + "\n".join(text))
        return "\n".join(out)


_SESSION_DIRS: list[Path] = []


@pytest.fixture(scope="session")
def e2e_dir() -> Iterator[Path]:
    """Temporary folder of the session: MASKCLS_HOME (stack logs too), data subset, screenshots.

    Kept after the session, so the screenshots and logs can be looked at.
    """
    root = Path(tempfile.mkdtemp(prefix="maskcls-e2e-"))
    _SESSION_DIRS.append(root)
    print(f"\n[e2e] session folder {root}; screenshots in {root / 'screenshots'}", flush=True)
    yield root


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Print where this session's screenshots and service logs are, with or without -s."""
    for root in _SESSION_DIRS:
        terminalreporter.write_sep("-", "e2e browser tests")
        terminalreporter.write_line(f"screenshots: {root / 'screenshots'}")
        terminalreporter.write_line(f"service logs: {root / 'home' / 'stack' / 'logs'}")


@contextlib.contextmanager
def running_stack(root: Path) -> Iterator[Stack]:
    """Prefect server + MLflow server + 2 workers + every deployment (scheduled one on `smoke`)."""
    home = root / "home"
    # Every 20th file by sorted name: not only the 'copy N' duplicates that open with_mask/.
    subset = copy_subset(root / "data", PER_CLASS, step=20)
    # The scheduler looks for deployments to schedule every 5 s, not 60 s.
    with start_servers(home, prefect_env={"PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS": "5"}) as servers:
        st = Stack(home=home, prefect_url=servers.prefect_url, mlflow_url=servers.mlflow_url,
                   data_source=str(subset))
        try:
            stack.run_deploy(home, st.api_url, pool_only=True)
            worker_env = {
                # Workers pick up a due run within 2 s; logs reach the UI quickly.
                "PREFECT_WORKER_QUERY_SECONDS": "2",
                "PREFECT_LOGGING_TO_API_BATCH_INTERVAL": "0.5",
                "TF_CPP_MIN_LOG_LEVEL": "2",
            }
            st.workers.extend(
                stack.start_worker(home, i, st.api_url, st.mlflow_url, str(subset), env=worker_env)
                for i in (1, 2)
            )
            stack.run_deploy(home, st.api_url, data_source=str(subset))
            # Scheduled runs take the deployment's parameters: make them smoke runs on the
            # subset before any schedule that fires often is set (the default cron is weekly).
            scheduled = st.deployment(SCHEDULED)
            st.api(
                "PATCH",
                f"/deployments/{scheduled['id']}",
                json={"parameters": {**scheduled["parameters"], "profile": "smoke"}},
            )
            for worker in st.workers:
                stack.wait_worker_online(worker, st.api_url, timeout=180)
            yield st
        finally:
            # Workers first (they own flow runs); the servers stop after them.
            for worker in st.workers:
                worker.stop()


@pytest.fixture(scope="session")
def e2e_stack(e2e_dir: Path) -> Iterator[Stack]:
    with running_stack(e2e_dir) as st:
        yield st


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    profile = Path(tempfile.mkdtemp(prefix="maskcls-chromium-"))
    with sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            str(profile),
            executable_path=CHROMIUM,
            headless=True,
            args=CHROMIUM_ARGS,
            viewport=VIEWPORT,
        )
        context.set_default_timeout(UI_TIMEOUT_MS)
        expect_timeout(UI_TIMEOUT_MS)
        # No network here, and the tests must not depend on it: anything not on loopback
        # (Prefect's UI asks amplitude.com for a session-replay config) fails at once.
        context.route(NOT_LOOPBACK, lambda route: route.abort())
        try:
            yield context
        finally:
            context.close()
            shutil.rmtree(profile, ignore_errors=True)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: Any, call: Any) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"rep_{report.when}", report)


@pytest.fixture
def page(browser: Any, request: Any, e2e_dir: Path) -> Iterator[Any]:
    """A fresh tab; on failure, a screenshot of what it showed is saved next to the others."""
    page = browser.new_page()
    try:
        yield page
    finally:
        report = getattr(request.node, "rep_call", None)
        if report is not None and report.failed and not page.is_closed():
            path = e2e_dir / "screenshots" / f"FAILED-{request.node.name}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            with contextlib.suppress(Exception):
                page.screenshot(path=str(path), full_page=True)
                print(f"[e2e] failure screenshot {path}", flush=True)
        page.close()


def expect_timeout(ms: int) -> None:
    from playwright.sync_api import expect

    expect.set_options(timeout=ms)


Shot = Callable[..., Path]


@pytest.fixture(scope="session")
def screenshot(e2e_dir: Path) -> Shot:
    """`screenshot(page, "step-name", docs="prefect-flow-run.png")`: saves a PNG of the page.

    Every step goes to the session folder; with `docs` and MASKCLS_E2E_DOCS=1, it is
    also copied to docs/screenshots/ under that name.
    """
    folder = e2e_dir / "screenshots"
    folder.mkdir(parents=True, exist_ok=True)
    counter = iter(range(1, 1000))

    def take(page: Any, name: str, docs: str | None = None, full_page: bool = False) -> Path:
        safe = re.sub(r"[^a-z0-9-]+", "-", name.lower()).strip("-")
        # Let pending requests land so the picture shows data, not loading placeholders
        # (both UIs poll, so "idle" may never come: bounded).
        with contextlib.suppress(Exception):
            page.wait_for_load_state("networkidle", timeout=5_000)
        path = folder / f"{next(counter):02d}-{safe}.png"
        page.screenshot(path=str(path), full_page=full_page)
        print(f"[e2e] screenshot {path}", flush=True)
        if docs and os.environ.get("MASKCLS_E2E_DOCS") == "1":
            DOCS_SCREENSHOTS.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, DOCS_SCREENSHOTS / docs)
        return path

    return take


@pytest.fixture(scope="session")
def on_demand_runs(e2e_stack: Stack, browser: Any, screenshot: Shot) -> list[dict[str, Any]]:
    """Two runs of `on-demand`, each started as a person would: deployment page -> Run ->
    Custom run -> profile `smoke` -> Submit; both waited for (API) and returned, oldest first.

    The second run has the same data, config and code as the first, so its stages come
    from the cache.
    """
    from .ui import custom_run, open_deployment, submit_run

    deployment = e2e_stack.deployment(ON_DEMAND)
    page = browser.new_page()
    runs = []
    try:
        for attempt in (1, 2):
            known = {r["id"] for r in e2e_stack.flow_runs(deployment["id"])}
            open_deployment(page, e2e_stack.prefect_ui, ON_DEMAND)
            custom_run(page, "smoke", e2e_stack.data_source)
            screenshot(page, f"on-demand run form {attempt}", full_page=True,
                       docs="prefect-run-form.png" if attempt == 1 else None)
            submit_run(page, created=lambda known=known: any(
                r["id"] not in known for r in e2e_stack.flow_runs(deployment["id"])))
            new = wait_until(
                lambda: [r for r in e2e_stack.flow_runs(deployment["id"]) if r["id"] not in known],
                30, "the flow run created by Submit", interval=1,
            )
            assert len(new) == 1, f"one Submit created {len(new)} runs"
            assert new[0]["parameters"].get("profile") == "smoke", new[0]["parameters"]
            final = e2e_stack.wait_run_final(new[0]["id"])
            assert final["state_type"] == "COMPLETED", (
                f"run {final['name']} ended {final['state_name']}: "
                f"{(final.get('state') or {}).get('message')}\n{e2e_stack.worker_logs()}"
            )
            runs.append(final)
    finally:
        page.close()
    return runs

