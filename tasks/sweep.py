"""The sweep's steps as Prefect tasks: the pool check, the parent MLflow run, starting and
waiting for the points, cancelling them, and the summary.

Each is a task so it shows in the sweep's flow run and, where repeating it is harmless
(reads, summaries), retries a request that failed on a transient server error. None is
cached: each call is a fresh look at the servers. The sweep as data (grid, plan, rows,
markdown) is ``maskcls.sweep``; the requests are ``tasks.tracking`` and ``tasks.prefect_api``.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from uuid import UUID

from prefect import Task, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.client.schemas.objects import State, TaskRun

from maskcls.config import Settings
from maskcls.errors import ConfigError, OrchestrationError, TrackingError
from maskcls.sweep import (
    SweepError,
    SweepPlan,
    export_document,
    point_label,
    point_row,
    summarize,
    summary_markdown,
    summary_metrics,
    summary_tags,
)
from tasks import prefect_api, tracking

POLL_SECONDS = 2.0


@dataclass(frozen=True)
class ParentRun:
    """The sweep's own MLflow run, under which every point's run nests."""

    run_id: str
    experiment_id: str
    url: str

    @property
    def tag(self) -> str:
        """The Prefect tag of the sweep's point runs (how a stopped sweep finds them all)."""
        return f"sweep:{self.run_id}"


@dataclass(frozen=True)
class PointRun:
    """A point's flow run once it ended (plain fields: Prefect refuses run objects as task arguments)."""

    id: UUID
    name: str
    state: str


def _transient(task: Task[..., Any], task_run: TaskRun, state: State) -> bool:
    """Retry a request a server failed, not a sweep that cannot run here (no worker, timed out)."""
    try:
        state.result()
    except SweepError:
        return False
    except (OrchestrationError, TrackingError):
        return True
    except Exception:  # noqa: BLE001 - a bug: retrying would only repeat it
        return False
    return False


RETRIED: dict[str, Any] = {"retries": 2, "retry_delay_seconds": 5, "retry_condition_fn": _transient,
                           "cache_policy": NO_CACHE}


@task(name="check-pool", **RETRIED)
def check_pool(member_deployment: str, own_pool: str | None) -> str:
    """The member deployment's work pool, after checking the deployment exists and the pool has a worker online.

    ``own_pool`` is the pool running this sweep, if any: the sweep then holds one of its slots.
    """
    logger = get_run_logger()
    with prefect_api.client() as pc:
        deployment = prefect_api.deployment(pc, member_deployment)
        if deployment is None:
            raise SweepError(
                f"deployment {member_deployment} is not registered on this Prefect server: run "
                "`python flows/deploy.py` (`make up` does it) against it first"
            )
        pool = deployment.work_pool_name
        online = prefect_api.online_workers(pc, pool)
    if not online:
        raise SweepError(
            f"no worker is online in work pool {pool!r}: the sweep's points run on its workers. "
            "Start them with `make up` (MASKCLS_WORKERS sets how many) or `prefect worker start "
            f"--pool {pool}`"
        )
    if own_pool == pool and len(online) < 2:
        logger.warning(
            f"this sweep runs on a worker of pool {pool!r}, which has {len(online)} worker(s) online: "
            "its points wait for a free slot; start more workers or run `maskcls sweep` instead"
        )
    logger.info(f"work pool {pool!r}: {len(online)} worker(s) online")
    return pool


@task(name="open-sweep-run", cache_policy=NO_CACHE)
def open_parent_run(settings: Settings, plan: SweepPlan, run_name: str, flow_run_id: str) -> ParentRun:
    """Create the sweep's MLflow run (tag `sweep=true`) with the grid and fixed settings as params."""
    client = tracking.configure(settings)
    source = plan.common.get("source")
    run_id = tracking.create_run(client, settings, run_name, {
        "sweep": "true", "profile": plan.common["profile"], "prefect_flow_run_id": flow_run_id,
        **({"source": source} if source else {}),
    })
    tracking.log_params(client, run_id, plan.run_params())
    exp_id = tracking.experiment_id(client, settings)
    parent = ParentRun(run_id=run_id, experiment_id=exp_id, url=tracking.run_url(settings, exp_id, run_id))
    get_run_logger().info(f"sweep of {len(plan.points)} points; parent MLflow run {run_id} ({parent.url})")
    return parent


@task(name="start-point", cache_policy=NO_CACHE)
def start_point(member_deployment: str, plan: SweepPlan, index: int, parent: ParentRun, run_name: str) -> UUID:
    """Create point ``index``'s flow run of the member deployment, for the pool's workers to pick up; its id."""
    run = prefect_api.start_deployment(member_deployment, plan.parameters(index, parent.run_id),
                                       flow_run_name=f"{run_name}-{index + 1}", tags=["sweep", parent.tag])
    get_run_logger().info(f"point {index + 1}/{len(plan.points)} ({point_label(plan.points[index])}): "
                          f"flow run {run.name}")
    return run.id


@task(name="wait-for-shared-data", **RETRIED)
def wait_for_stage(flow_run_id: UUID, stage: str, deadline: float) -> None:
    """Until point 1 has finished ``stage`` (so the other points find it cached), has ended, or the deadline."""
    get_run_logger().info(f"waiting for point 1's data stages (up to {stage}) before starting the others")
    with prefect_api.client() as pc:
        while time.time() < deadline:
            first = prefect_api.read_flow_run(pc, flow_run_id)
            if prefect_api.stage_done(pc, flow_run_id, stage) or prefect_api.is_final(first):
                return
            time.sleep(POLL_SECONDS)


@task(name="wait-for-points", **RETRIED)
def wait_for_points(flow_run_ids: list[UUID], deadline: float, timeout_minutes: float) -> list[PointRun]:
    """The points' flow runs once every one has ended, in the order given; SweepError after the deadline."""
    logger = get_run_logger()
    final: dict[UUID, PointRun] = {}
    with prefect_api.client() as pc:
        while len(final) < len(flow_run_ids):
            if time.time() > deadline:
                raise SweepError(f"the sweep did not finish within {timeout_minutes} minutes")
            for run_id in flow_run_ids:
                if run_id not in final:
                    current = prefect_api.read_flow_run(pc, run_id)
                    if prefect_api.is_final(current):
                        final[run_id] = PointRun(id=run_id, name=current.name, state=current.state.name)
                        logger.info(f"{current.name}: {current.state.name}")
            if len(final) < len(flow_run_ids):
                time.sleep(POLL_SECONDS)
    return [final[run_id] for run_id in flow_run_ids]


@task(name="cancel-points", cache_policy=NO_CACHE)
def cancel_points(flow_run_ids: list[UUID], tag: str) -> None:
    """Cancel the points that have not ended, so a stopped sweep leaves no run behind."""
    with prefect_api.client() as pc:
        prefect_api.cancel_flow_runs(pc, flow_run_ids, tag, get_run_logger())


@task(name="close-sweep-run", cache_policy=NO_CACHE)
def close_parent_run(settings: Settings, parent: ParentRun, ok: bool) -> None:
    """End the sweep's MLflow run FINISHED or FAILED."""
    tracking.end_run(tracking.configure(settings), parent.run_id, ok)


@task(name="summarize-sweep", **RETRIED)
def summarize_points(settings: Settings, plan: SweepPlan, parent: ParentRun, runs: list[PointRun]) -> dict[str, Any]:
    """One row per point (settings, state, nested MLflow run, metrics, registration, stage states), the best
    point and the champion after the sweep. Fails the parent run if no point logged under it."""
    client = tracking.configure(settings)
    with prefect_api.client() as pc:
        stages = {run.id: prefect_api.task_states(pc, run.id) for run in runs}
    children = {child.data.tags.get("prefect_flow_run_id"): child
                for child in tracking.child_runs(client, parent.experiment_id, parent.run_id)}
    rows = []
    for index, (point, run) in enumerate(zip(plan.points, runs)):
        child = children.get(str(run.id))
        rows.append(point_row(index, point, run.name, run.state,
                              child.info.run_id if child else None, child.data.metrics if child else {},
                              child.data.tags if child else {}, stages[run.id]))
    current = tracking.champion(client)
    try:
        return summarize(rows, parent.run_id, None if current is None else (str(current.version), current.run_id),
                         settings.tracking_uri)
    except SweepError:
        tracking.end_run(client, parent.run_id, False)
        raise


@task(name="log-sweep-summary", **RETRIED)
def log_summary(settings: Settings, plan: SweepPlan, parent: ParentRun, summary: dict[str, Any]) -> None:
    """The summary table, best point and champion on the parent MLflow run; the markdown summary in Prefect."""
    client = tracking.configure(settings)
    table = [{k: v for k, v in row.items() if k != "stages"} for row in summary["points"]]
    tracking.log_table(client, parent.run_id, table, "sweep_summary.json")
    tags = summary_tags(summary, plan.keys)
    if tags:
        tracking.set_tags(client, parent.run_id, tags)
    tracking.log_metrics(client, parent.run_id, summary_metrics(summary))
    create_markdown_artifact(markdown=summary_markdown(summary, plan.keys, parent.url), key="sweep-summary",
                             description="maskcls sweep summary")


def export_sweep(settings: Settings, parent_run_id: str, path: Path) -> dict[str, Any]:
    """Write sweep ``parent_run_id``'s candidates to ``path`` as JSON (``maskcls.sweep.export_document``)
    and return the document. A plain function (no task): it also serves `maskcls sweep --from-run`."""
    from maskcls.store import atomic_write_bytes

    client = tracking.configure(settings)
    parent, children = tracking.sweep_runs(client, parent_run_id)
    if parent["tags"].get("sweep") != "true":
        raise SweepError(f"MLflow run {parent_run_id} is not a sweep's parent run (no tag sweep=true): give the "
                         "id `maskcls sweep` printed as its parent MLflow run")
    if not children:
        raise SweepError(f"no MLflow run is nested under sweep {parent_run_id} in {settings.tracking_uri}: "
                         "its points never started, or logged to another MLflow")
    document = export_document(parent, children, settings.tracking_uri,
                               datetime.now(timezone.utc).isoformat(timespec="seconds"))
    try:
        atomic_write_bytes(path, (json.dumps(document, indent=2) + "\n").encode())
    except OSError as exc:
        raise ConfigError(f"cannot write the sweep export {path}: {exc.strerror or exc}") from None
    return document
