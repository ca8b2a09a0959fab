"""The sweep flow: train every combination of a grid of settings as parallel runs.

Each grid point is a flow run of `train-face-mask/sweep-member` (a deployment of
the training flow without the one-run-at-a-time limit of `on-demand`), created
as a deployment run through Prefect's API, so the workers of the `maskcls` pool pick the
points up in parallel: Prefect does the scheduling, not this module. Each point
is a nested MLflow run (tag `mlflow.parentRunId`) under the one parent run this
flow creates in experiment `face-mask`.

Shared work is done once: the first point starts alone, and the others start
when its data stages (download ... augment, up to the first stage a grid key
changes) have finished, so they find them in the cache (same MASKCLS_HOME, same
keys) instead of computing them side by side. (The training flow's cache-key
locks would also make a concurrent point wait for the one computing; starting
the others later keeps them from holding worker slots while they wait.) Each point registers its model
and moves `champion` by the usual rule (compare-and-set under the promotion
lock); the sweep then logs a summary table of the points to its MLflow run and
a markdown artifact to Prefect.

This module is the wiring: the sweep as data is `maskcls/sweep.py`, its steps are the
tasks of `tasks/sweep.py`.

Started by `maskcls sweep --grid ...` (the sweep itself runs in the CLI's
process, every worker trains) or from the UI as `sweep-face-mask/sweep` (the
sweep then holds one worker slot while it waits, so the pool needs more than
one worker).
"""

from __future__ import annotations

import time
from typing import Any
from uuid import UUID

from prefect import flow, get_run_logger
from prefect.context import get_run_context

from maskcls.config import Settings
from maskcls.multisource import split_sources
from maskcls.names import FLOW_NAME, SWEEP_FLOW_NAME, SWEEP_MEMBER
from maskcls.sweep import SweepError, failed_points, plan_sweep
from tasks.sweep import (
    cancel_points,
    check_pool,
    close_parent_run,
    log_summary,
    open_parent_run,
    start_point,
    summarize_points,
    wait_for_points,
    wait_for_stage,
)

MEMBER_DEPLOYMENT = f"{FLOW_NAME}/{SWEEP_MEMBER}"


@flow(name=SWEEP_FLOW_NAME, log_prints=True)
def sweep_flow(
    grid: dict[str, list[Any]] | None = None,
    profile: str = "default",
    source: list[str] | str | None = None,
    max_images: int | None = None,
    epochs: int | None = None,
    overrides: dict[str, str] | None = None,
    share_data_stages: bool = True,
    timeout_minutes: float = 720,
) -> dict[str, Any]:
    """Train every combination of a grid of settings as parallel runs, nested under one MLflow run.

    Args:
        grid: Settings to vary, `section.field` -> list of values, e.g.
            {"train.learning_rate": [0.001, 0.0003], "train.dense_units": [32, 64]}
            (default: learning rates 0.001 and 0.0003). Every combination is one training run.
        profile: Named recipe every point starts from: `default`, `seed` or `smoke`.
        source: Dataset parts (folders, zips, URLs, voc:FOLDER), as for the training flow; empty uses
            the profile's own list, else the workers' MASKCLS_DATA_SOURCE.
        max_images: Train every point on a stable, class-balanced subset of at most this many images.
        epochs: Training epochs of every point (overrides the profile).
        overrides: Settings fixed for every point, `section.field` -> value.
        share_data_stages: Start one point first and the others once its data stages are done,
            so those are computed once and read from the cache by the rest.
        timeout_minutes: Give up (and cancel the unfinished points) after this long.
    """
    # Every point must be a valid config before anything starts.
    source = ",".join(split_sources(source)) or None  # the members' parameter, one tag on the parent run
    plan = plan_sweep(grid, profile, source, max_images, epochs, overrides, share_data_stages)
    settings = Settings.from_env()
    if not settings.tracking_uri.startswith(("http://", "https://")):
        get_run_logger().warning(
            f"MLFLOW_TRACKING_URI is {settings.tracking_uri}: the points log to the MLflow server of "
            "their workers, and nest under this parent only if it is the same store"
        )
    this_run = get_run_context().flow_run
    run_name = f"sweep-{this_run.name}"
    deadline = time.time() + timeout_minutes * 60
    # Before the parent run exists: a stack that cannot run the points leaves nothing behind.
    check_pool(MEMBER_DEPLOYMENT, this_run.work_pool_name)
    parent = open_parent_run(settings, plan, run_name, str(this_run.id))
    started: list[UUID] = []
    ok = False
    try:
        started.append(start_point(MEMBER_DEPLOYMENT, plan, 0, parent, run_name))
        if plan.wait_for:
            wait_for_stage(started[0], plan.wait_for, deadline)
        for index in range(1, len(plan.points)):
            started.append(start_point(MEMBER_DEPLOYMENT, plan, index, parent, run_name))
        finished = wait_for_points(started, deadline, timeout_minutes)
        ok = True
    finally:
        if not ok:  # stopped, timed out or failed: no point may go on without the sweep
            cancel_points(started, parent.tag)
            close_parent_run(settings, parent, False)
    summary = summarize_points(settings, plan, parent, finished)
    log_summary(settings, plan, parent, summary)
    close_parent_run(settings, parent, summary["n_failed"] == 0)
    problem = failed_points(summary)
    if problem:
        raise SweepError(problem)
    return summary


if __name__ == "__main__":
    sweep_flow()
