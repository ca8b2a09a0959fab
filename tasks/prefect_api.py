"""Everything that talks to Prefect's API: flow runs, their states and task runs, deployments, workers.

Flows and tasks use Prefect's decorators and run context directly; every request to the
API goes through here. A failed request leaves this module as an ``OrchestrationError``
that names the API's URL, never as an httpx or Prefect exception.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from logging import Logger, LoggerAdapter
from typing import Any
from uuid import UUID

import httpx
from prefect.client.orchestration import SyncPrefectClient, get_client
from prefect.client.schemas.actions import WorkPoolCreate
from prefect.client.schemas.filters import (
    FlowFilter,
    FlowFilterName,
    FlowRunFilter,
    FlowRunFilterId,
    FlowRunFilterState,
    FlowRunFilterStateType,
    FlowRunFilterTags,
)
from prefect.client.schemas.objects import Deployment, FlowRun, StateType
from prefect.deployments import run_deployment
from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound
from prefect.settings import get_current_settings
from prefect.states import Cancelled, Cancelling, Crashed

from maskcls.errors import OrchestrationError

#: The synchronous API client the functions below take (open one with ``client()``).
ApiClient = SyncPrefectClient
#: State types of a flow run that has ended.
FINAL_STATES = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


def api_url() -> str:
    """The configured API (PREFECT_API_URL), or Prefect's ephemeral local API."""
    return get_current_settings().api.url or "Prefect's ephemeral local API (PREFECT_API_URL unset)"


@contextmanager
def translated() -> Iterator[None]:
    """Turn a failed request (unreachable server, refused request) into ``OrchestrationError``."""
    try:
        yield
    except httpx.HTTPError as exc:  # PrefectHTTPStatusError is one too
        raise OrchestrationError(
            f"the Prefect API at {api_url()} failed a request ({exc.__class__.__name__}: {exc}). Start the "
            "stack (`make up`) or set PREFECT_API_URL to a reachable server."
        ) from exc


@contextmanager
def client() -> Iterator[ApiClient]:
    """A synchronous client of the configured API, for the requests below."""
    with translated(), get_client(sync_client=True) as pc:
        yield pc


# --- flow runs --------------------------------------------------------------------------


def flow_run_state(pc: ApiClient, flow_run_id: str | UUID) -> str | None:
    """The state type of a flow run (`RUNNING`, `COMPLETED`...); None if this API does not know it."""
    try:
        run = pc.read_flow_run(UUID(str(flow_run_id)))
    except Exception:  # noqa: BLE001 - unknown to this API (another server, an ephemeral run, not an id)
        return None
    return run.state.type.value if run.state is not None else None


@translated()
def crash_flow_run(pc: ApiClient, flow_run_id: str | UUID, reason: str) -> bool:
    """Set a flow run that is not final Crashed with ``reason``; False when it is unknown or already final."""
    state = flow_run_state(pc, flow_run_id)
    if state is None or state in FINAL_STATES:
        return False
    pc.set_flow_run_state(UUID(str(flow_run_id)), Crashed(message=reason), force=True)
    return True


@translated()
def running_flow_runs(pc: ApiClient, flow_name: str, limit: int = 200) -> list[FlowRun]:
    """Flow runs of flow ``flow_name`` in state Running."""
    return pc.read_flow_runs(
        flow_filter=FlowFilter(name=FlowFilterName(any_=[flow_name])),
        flow_run_filter=FlowRunFilter(state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.RUNNING]))),
        limit=limit,
    )


@translated()
def read_flow_run(pc: ApiClient, flow_run_id: UUID) -> FlowRun:
    return pc.read_flow_run(flow_run_id)


def is_final(run: FlowRun) -> bool:
    """The run has ended (completed, failed, crashed, cancelled)."""
    return run.state is not None and run.state.is_final()


def _task_runs(pc: ApiClient, flow_run_id: UUID) -> list[Any]:
    return pc.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))


@translated()
def task_states(pc: ApiClient, flow_run_id: UUID) -> dict[str, str]:
    """{task name: state name} of a flow run's task runs (the latest run of each name)."""
    states: dict[str, str] = {}
    for run in sorted(_task_runs(pc, flow_run_id), key=lambda r: str(r.created or "")):
        if run.state is not None:
            states[run.name.rsplit("-", 1)[0] if "-" in run.name else run.name] = run.state.name
    return states


@translated()
def stage_done(pc: ApiClient, flow_run_id: UUID, stage: str) -> bool:
    """The flow run has a completed (computed or Cached) task run of ``stage``."""
    # Task runs are named "<task>-<n>"; no other task name starts with a stage name and a dash.
    return any((r.name == stage or r.name.startswith(f"{stage}-")) and r.state is not None
               and r.state.is_completed() for r in _task_runs(pc, flow_run_id))


@translated()
def cancel_flow_runs(pc: ApiClient, flow_run_ids: Sequence[UUID], tag: str,
                     log: Logger | LoggerAdapter) -> None:
    """Cancel the flow runs with these ids or this tag that have not ended; best effort, logged.

    By tag too: an interrupt can land between the server creating a run and
    `run_deployment` returning it. A running flow run is stopped by its worker (Cancelling);
    one not started yet never starts (Cancelled).
    """
    ids = list(dict.fromkeys(flow_run_ids))
    try:
        tagged = pc.read_flow_runs(flow_run_filter=FlowRunFilter(tags=FlowRunFilterTags(all_=[tag])))
        ids += [run.id for run in tagged if run.id not in ids]
    except Exception as exc:  # noqa: BLE001 - best effort while stopping
        log.warning(f"could not list the sweep's runs by tag {tag}: {exc}")
    for run_id in ids:
        try:
            run = pc.read_flow_run(run_id)
            if run.state is None or run.state.is_final():
                continue
            state = Cancelling() if run.state.is_running() else Cancelled(message="the sweep stopped")
            pc.set_flow_run_state(run_id, state, force=True)
            log.warning(f"cancelled point run {run.name}")
        except Exception as exc:  # noqa: BLE001 - best effort while stopping
            log.warning(f"could not cancel flow run {run_id}: {exc}")


# --- deployments and workers ------------------------------------------------------------


@translated()
def deployment(pc: ApiClient, name: str) -> Deployment | None:
    """Deployment ``flow/deployment``, or None when it is not registered."""
    try:
        return pc.read_deployment_by_name(name)
    except ObjectNotFound:
        return None


@translated()
def online_workers(pc: ApiClient, pool: str) -> list[Any]:
    """The workers of work pool ``pool`` that are online."""
    return [w for w in pc.read_workers_for_work_pool(pool) if getattr(w.status, "value", w.status) == "ONLINE"]


@translated()
def start_deployment(name: str, parameters: dict[str, Any], flow_run_name: str, tags: list[str]) -> FlowRun:
    """Create a flow run of deployment ``name`` for its work pool's workers and return at once.

    Called from a flow or task, the flow run is linked as a subflow of the calling flow run.
    """
    return run_deployment(name, parameters=parameters, timeout=0, flow_run_name=flow_run_name, tags=tags)


# --- work pools -------------------------------------------------------------------------


def ensure_work_pool(name: str) -> bool:
    """Create the process work pool ``name`` with Prefect's default job template; True if created."""
    from prefect.workers.process import ProcessWorker

    with client() as pc:
        try:
            pc.read_work_pool(name)
            return False
        except ObjectNotFound:
            pass
        try:
            pc.create_work_pool(WorkPoolCreate(name=name, type=ProcessWorker.type,
                                               base_job_template=ProcessWorker.get_default_base_job_template()))
        except ObjectAlreadyExists:
            # A worker started with --type process may have created it meanwhile.
            return False
    return True
