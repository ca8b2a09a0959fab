"""The sweep flow: train every combination of a grid of settings as parallel runs.

Each grid point is a flow run of `train-face-mask/sweep-member` (a deployment of
the training flow without the one-run-at-a-time limit of `on-demand`), created
with Prefect's `run_deployment`, so the workers of the `maskcls` pool pick the
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

Started by `maskcls sweep --grid ...` (the sweep itself runs in the CLI's
process, every worker trains) or from the UI as `sweep-face-mask/sweep` (the
sweep then holds one worker slot while it waits, so the pool needs more than
one worker).
"""

from __future__ import annotations

import itertools
import json
import os
import socket
import time
from collections.abc import Mapping, Sequence
from typing import Any
from uuid import UUID

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.context import get_run_context

from flows.deploy import FLOW_NAME, SWEEP_FLOW_NAME, SWEEP_MEMBER
from maskcls.config import ConfigError, Settings, load_config, parse_overrides
from maskcls.errors import OrchestrationError

MEMBER_DEPLOYMENT = f"{FLOW_NAME}/{SWEEP_MEMBER}"
DEFAULT_GRID: dict[str, list[Any]] = {"train.learning_rate": [1e-3, 3e-4]}
MAX_POINTS = 64
POLL_SECONDS = 2.0
#: The training flow's stages that read only data, in order, with the config sections they depend on.
DATA_STAGES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("download", ()),
    ("validate", ("data",)),
    ("split", ("data",)),
    ("preprocess", ("data", "preprocess")),
    ("augment", ("data", "preprocess", "augment")),
)
METRIC_COLUMNS = ("test_accuracy", "test_f1", "test_roc_auc")


class SweepError(OrchestrationError):
    """The sweep cannot run here (no server, no workers, no deployment, a bad grid); says why."""


# --------------------------------------------------------------------------- the grid


def split_values(text: str) -> list[str]:
    """`1e-3,3e-4` -> ["1e-3", "3e-4"]; commas inside brackets stay: `[8,8],[16,32]` -> two values."""
    values, depth, current = [], 0, ""
    for char in text:
        if char in "[(":
            depth += 1
        elif char in "])":
            depth -= 1
        if char == "," and depth == 0:
            values.append(current)
            current = ""
        else:
            current += char
    values.append(current)
    return [v.strip() for v in values if v.strip()]


def parse_grid(options: Sequence[str]) -> dict[str, list[Any]]:
    """CLI `--grid section.field=v1,v2` options -> {"section.field": [v1, v2]} (values parsed like --set)."""
    grid: dict[str, list[Any]] = {}
    for option in options:
        if "=" not in option:
            raise ConfigError(f"--grid {option!r} is not of the form section.field=value1,value2")
        key, raw = (part.strip() for part in option.split("=", 1))
        if key in grid:
            raise ConfigError(f"--grid {key} is given twice; list all its values in one option")
        values = [parse_overrides([f"{key}={value}"])[key] for value in split_values(raw)]
        if not values:
            raise ConfigError(f"--grid {key} has no values")
        grid[key] = values
    return grid


def expand_grid(grid: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Every combination of the grid's values, in the order given (first key varies slowest)."""
    if not grid:
        raise ConfigError("the grid is empty: give at least one setting with its values")
    axes = {key: list(values) if isinstance(values, (list, tuple)) else [values] for key, values in grid.items()}
    for key, values in axes.items():
        if not values:
            raise ConfigError(f"grid setting {key} has no values")
    points = [dict(zip(axes, combo)) for combo in itertools.product(*axes.values())]
    if len(points) > MAX_POINTS:
        raise ConfigError(f"the grid has {len(points)} points; at most {MAX_POINTS} per sweep")
    return points


def override_text(value: Any) -> str:
    """A value as the training flow's `overrides` take it (strings, parsed like --set)."""
    return value if isinstance(value, str) else json.dumps(value)


def shared_stage(grid_keys: Sequence[str]) -> str | None:
    """The last data stage whose result is the same for every point (None: not even the download)."""
    varied = {key.split(".", 1)[0] for key in grid_keys}
    last = None
    for stage, sections in DATA_STAGES:
        if varied & set(sections):
            break
        last = stage
    return last


def point_label(point: Mapping[str, Any]) -> str:
    return ", ".join(f"{key}={override_text(value)}" for key, value in point.items())


# --------------------------------------------------------------------------- Prefect


def _is_stage_run(name: str, stage: str) -> bool:
    # Task runs are named "<task>-<n>"; no other task name starts with a stage name and a dash.
    return name == stage or name.startswith(f"{stage}-")


def _task_runs(client: Any, flow_run_id: UUID) -> list[Any]:
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    return client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))


def task_states(client: Any, flow_run_id: UUID) -> dict[str, str]:
    """{task name: state name} of a flow run's task runs (the latest run of each name)."""
    states: dict[str, str] = {}
    for run in sorted(_task_runs(client, flow_run_id), key=lambda r: str(r.created or "")):
        if run.state is not None:
            states[run.name.rsplit("-", 1)[0] if "-" in run.name else run.name] = run.state.name
    return states


def _stage_done(client: Any, flow_run_id: UUID, stage: str) -> bool:
    """The flow run has a completed (computed or Cached) task run of `stage`."""
    return any(_is_stage_run(r.name, stage) and r.state is not None and r.state.is_completed()
               for r in _task_runs(client, flow_run_id))


def check_pool(client: Any, logger: Any) -> Any:
    """The member deployment, after checking it exists and that its pool has a worker online."""
    from prefect.exceptions import ObjectNotFound

    try:
        deployment = client.read_deployment_by_name(MEMBER_DEPLOYMENT)
    except ObjectNotFound:
        raise SweepError(
            f"deployment {MEMBER_DEPLOYMENT} is not registered on this Prefect server: run "
            "`python flows/deploy.py` (`make up` does it) against it first"
        ) from None
    pool = deployment.work_pool_name
    online = [w for w in client.read_workers_for_work_pool(pool) if getattr(w.status, "value", w.status) == "ONLINE"]
    if not online:
        raise SweepError(
            f"no worker is online in work pool {pool!r}: the sweep's points run on its workers. "
            "Start them with `make up` (MASKCLS_WORKERS sets how many) or `prefect worker start "
            f"--pool {pool}`"
        )
    ctx = get_run_context()
    own_pool = getattr(ctx.flow_run, "work_pool_name", None) if ctx.flow_run else None
    if own_pool == pool and len(online) < 2:
        logger.warning(
            f"this sweep runs on a worker of pool {pool!r}, which has {len(online)} worker(s) online: "
            "its points wait for a free slot; start more workers or run `maskcls sweep` instead"
        )
    logger.info(f"work pool {pool!r}: {len(online)} worker(s) online")
    return deployment


def _cancel(client: Any, flow_run_ids: Sequence[UUID], tag: str, logger: Any) -> None:
    """Cancel the points that have not finished, so a stopped sweep leaves no run behind.

    Points are found by id and by the sweep's tag: an interrupt can land between the
    server creating a run and `run_deployment` returning it.
    """
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterTags
    from prefect.states import Cancelled, Cancelling

    ids = list(dict.fromkeys(flow_run_ids))
    try:
        tagged = client.read_flow_runs(flow_run_filter=FlowRunFilter(tags=FlowRunFilterTags(all_=[tag])))
        ids += [run.id for run in tagged if run.id not in ids]
    except Exception as exc:  # noqa: BLE001 - best effort while stopping
        logger.warning(f"could not list the sweep's runs by tag {tag}: {exc}")
    for run_id in ids:
        try:
            run = client.read_flow_run(run_id)
            if run.state is None or run.state.is_final():
                continue
            # A running point is stopped by its worker; one not started yet never starts.
            state = Cancelling() if run.state.is_running() else Cancelled(message="the sweep stopped")
            client.set_flow_run_state(run_id, state, force=True)
            logger.warning(f"cancelled point run {run.name}")
        except Exception as exc:  # noqa: BLE001 - best effort while stopping
            logger.warning(f"could not cancel flow run {run_id}: {exc}")


# --------------------------------------------------------------------------- the flow


@flow(name=SWEEP_FLOW_NAME, log_prints=True)
def sweep_flow(
    grid: dict[str, list[Any]] | None = None,
    profile: str = "default",
    source: str | None = None,
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
        source: Dataset folder, zip or http(s) URL of a zip; empty uses the workers' MASKCLS_DATA_SOURCE.
        max_images: Train every point on a stable, class-balanced subset of at most this many images.
        epochs: Training epochs of every point (overrides the profile).
        overrides: Settings fixed for every point, `section.field` -> value.
        share_data_stages: Start one point first and the others once its data stages are done,
            so those are computed once and read from the cache by the rest.
        timeout_minutes: Give up (and cancel the unfinished points) after this long.
    """
    from prefect.client.orchestration import get_client
    from prefect.deployments import run_deployment

    from tasks import tracking

    logger = get_run_logger()
    grid = dict(grid) if grid else dict(DEFAULT_GRID)
    fixed = {key: override_text(value) for key, value in (overrides or {}).items()}
    points = expand_grid(grid)
    overlap = set(grid) & set(fixed)
    if overlap:
        raise ConfigError(f"{', '.join(sorted(overlap))} is both varied by the grid and fixed by overrides")
    base: dict[str, Any] = {k: v for k, v in (("data.max_images", max_images), ("train.epochs", epochs))
                            if v is not None}
    for point in points:  # every point must be a valid config before anything starts
        load_config(profile, {**base, **parse_overrides([f"{k}={v}" for k, v in fixed.items()]), **point})

    settings = Settings.from_env()
    if not settings.tracking_uri.startswith(("http://", "https://")):
        logger.warning(
            f"MLFLOW_TRACKING_URI is {settings.tracking_uri}: the points log to the MLflow server of "
            "their workers, and nest under this parent only if it is the same store"
        )
    mlflow = tracking.configure(settings)
    ctx = get_run_context()
    prefect_run = ctx.flow_run
    run_name = f"sweep-{prefect_run.name}" if prefect_run else "sweep"
    common: dict[str, Any] = {"profile": profile}
    for key, value in (("source", source), ("max_images", max_images), ("epochs", epochs)):
        if value is not None:
            common[key] = value
    wait_for = shared_stage(list(grid)) if share_data_stages and len(points) > 1 else None
    deadline = time.monotonic() + timeout_minutes * 60
    runs: list[Any] = []
    final: dict[UUID, Any] = {}
    with get_client(sync_client=True) as client:
        check_pool(client, logger)  # before the parent run exists: a stack that cannot run leaves nothing
        exp_id = tracking.experiment_id(mlflow, settings)
        parent = mlflow.create_run(exp_id, run_name=run_name, tags={
            "sweep": "true",
            "profile": profile,
            "prefect_flow_run_id": str(prefect_run.id) if prefect_run else "",
            "git_commit": tracking.git_commit(),
            # What tasks/recovery.py reads to fail this run if the sweep's process dies.
            "host": socket.gethostname(),
            "pid": str(os.getpid()),
            **({"source": source} if source else {}),
        }).info.run_id
        tracking.log_params(mlflow, parent, {
            "sweep.grid": json.dumps(grid, sort_keys=True), "sweep.n_points": len(points),
            "sweep.profile": profile, **{f"sweep.fixed.{k}": v for k, v in fixed.items()},
            **({"sweep.max_images": max_images} if max_images is not None else {}),
            **({"sweep.epochs": epochs} if epochs is not None else {}),
        })
        logger.info(f"sweep of {len(points)} points; parent MLflow run {parent} "
                    f"({tracking.run_url(settings, exp_id, parent)})")
        common["parent_run_id"] = parent
        sweep_tag = f"sweep:{parent}"

        def start(index: int, point: dict[str, Any]) -> None:
            parameters = {**common, "overrides": {**fixed, **{k: override_text(v) for k, v in point.items()}}}
            run = run_deployment(
                MEMBER_DEPLOYMENT, parameters=parameters, timeout=0,
                flow_run_name=f"{run_name}-{index + 1}", tags=["sweep", sweep_tag],
            )
            runs.append(run)
            logger.info(f"point {index + 1}/{len(points)} ({point_label(point)}): flow run {run.name}")

        ok = False
        try:
            start(0, points[0])
            if wait_for and len(points) > 1:
                logger.info(f"waiting for point 1's data stages (up to {wait_for}) before starting the others")
                while time.monotonic() < deadline:
                    first = client.read_flow_run(runs[0].id)
                    if _stage_done(client, runs[0].id, wait_for) or (first.state and first.state.is_final()):
                        break
                    time.sleep(POLL_SECONDS)
            for index, point in enumerate(points[1:], start=1):
                start(index, point)
            while len(final) < len(runs):
                if time.monotonic() > deadline:
                    raise SweepError(f"the sweep did not finish within {timeout_minutes} minutes")
                for run in runs:
                    if run.id not in final:
                        current = client.read_flow_run(run.id)
                        if current.state is not None and current.state.is_final():
                            final[run.id] = current
                            logger.info(f"{current.name}: {current.state.name}")
                if len(final) < len(runs):
                    time.sleep(POLL_SECONDS)
            ok = True
        finally:
            if not ok:
                _cancel(client, [r.id for r in runs], sweep_tag, logger)
                tracking.end_run(mlflow, parent, False)
        stages = {run.id: task_states(client, run.id) for run in runs}

    rows = _rows(mlflow, exp_id, parent, points, [final[r.id] for r in runs], stages)
    champion = tracking.champion(mlflow)
    child_runs = {row["mlflow_run_id"] for row in rows if row["mlflow_run_id"]}
    completed = [row for row in rows if row["state"] == "Completed"]
    if completed and not child_runs:
        tracking.end_run(mlflow, parent, False)
        raise SweepError(
            f"the points completed but none of their MLflow runs is nested under {parent} in "
            f"{settings.tracking_uri}: the workers log to another MLflow (set MLFLOW_TRACKING_URI to theirs)"
        )
    scored = [row for row in completed if row.get("test_accuracy") is not None]
    best = max(scored, key=lambda r: (r["test_accuracy"], r.get("test_roc_auc") or 0.0), default=None)
    summary = {
        "mlflow_run_id": parent,
        "points": rows,
        "best": best,
        "champion": None if champion is None else {
            "version": str(champion.version), "run_id": champion.run_id,
            "from_sweep": champion.run_id in child_runs,
        },
        "n_failed": len(rows) - len(completed),
    }
    _log_summary(mlflow, parent, summary, list(grid))
    markdown = _markdown(summary, list(grid), tracking.run_url(settings, exp_id, parent))
    create_markdown_artifact(markdown=markdown, key="sweep-summary", description="maskcls sweep summary")
    tracking.end_run(mlflow, parent, summary["n_failed"] == 0)
    if summary["n_failed"]:
        failed = [f"{row['flow_run']} ({row['state']})" for row in rows if row["state"] != "Completed"]
        raise SweepError(f"{len(failed)} of {len(rows)} points did not complete: {', '.join(failed)}")
    return summary


def _rows(mlflow: Any, exp_id: str, parent: str, points: list[dict[str, Any]], runs: list[Any],
          stages: dict[UUID, dict[str, str]]) -> list[dict[str, Any]]:
    """One row per point: its settings, flow run, state, nested MLflow run, metrics and registration."""
    children = mlflow.search_runs([exp_id], filter_string=f"tags.`mlflow.parentRunId` = '{parent}'",
                                  max_results=1000)
    by_flow_run = {run.data.tags.get("prefect_flow_run_id"): run for run in children}
    rows = []
    for index, (point, flow_run) in enumerate(zip(points, runs)):
        child = by_flow_run.get(str(flow_run.id))
        metrics = child.data.metrics if child else {}
        tags = child.data.tags if child else {}
        run_stages = stages.get(flow_run.id, {})
        rows.append({
            "point": index + 1,
            **{key: override_text(value) for key, value in point.items()},
            "flow_run": flow_run.name,
            "state": flow_run.state.name if flow_run.state else "Unknown",
            "mlflow_run_id": child.info.run_id if child else None,
            **{m: metrics.get(m) for m in METRIC_COLUMNS},
            "model_version": tags.get("model_version"),
            "promotion": tags.get("promotion"),
            "data_stages_cached": sum(run_stages.get(s) == "Cached" for s, _ in DATA_STAGES),
            "stages": run_stages,
        })
    return rows


def _log_summary(mlflow: Any, parent: str, summary: dict[str, Any], keys: list[str]) -> None:
    import pandas as pd

    from tasks import tracking

    rows = summary["points"]
    table = pd.DataFrame([{k: v for k, v in row.items() if k != "stages"} for row in rows])
    mlflow.log_table(parent, data=table, artifact_file="sweep_summary.json")
    metrics: dict[str, float] = {
        "n_points": len(rows), "n_completed": len(rows) - summary["n_failed"], "n_failed": summary["n_failed"],
    }
    best = summary["best"]
    if best is not None:
        metrics.update({f"best_{m}": best[m] for m in METRIC_COLUMNS if best.get(m) is not None})
        mlflow.set_tag(parent, "best_run_id", best["mlflow_run_id"])
        mlflow.set_tag(parent, "best_point", ", ".join(f"{k}={best[k]}" for k in keys))
        if best.get("model_version"):
            mlflow.set_tag(parent, "best_model_version", best["model_version"])
    tracking.log_metrics(mlflow, parent, metrics)
    champion = summary["champion"]
    if champion is not None:
        mlflow.set_tag(parent, "champion_version", champion["version"])
        mlflow.set_tag(parent, "champion_run_id", champion["run_id"])
        mlflow.set_tag(parent, "champion_from_sweep", str(champion["from_sweep"]).lower())


def _fmt(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else ("" if value is None else str(value))


def _markdown(summary: dict[str, Any], keys: list[str], link: str) -> str:
    rows = summary["points"]
    columns = ["point", *keys, "state", *METRIC_COLUMNS, "model_version", "promotion", "data_stages_cached",
               "flow_run"]
    table = "\n".join(
        ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
        + ["| " + " | ".join(_fmt(row.get(c)) for c in columns) + " |" for row in rows]
    )
    best, champion = summary["best"], summary["champion"]
    best_line = ("no point completed" if best is None else
                 f"best point: **{best['point']}** ({', '.join(f'{k}={best[k]}' for k in keys)}), "
                 f"test_accuracy {_fmt(best['test_accuracy'])}, version {best['model_version'] or '-'}")
    if champion is None:
        champion_line = "no champion"
    else:
        where = "from this sweep" if champion["from_sweep"] else "from an earlier run (no point beat it)"
        champion_line = f"`champion` is version **{champion['version']}**, {where}"
    link_md = f"[{summary['mlflow_run_id']}]({link})" if link.startswith("http") else link
    return f"""# maskcls sweep: {len(rows)} points

{best_line}; {champion_line}.
Each point registered its model and moved `champion` only if it beat the one standing
(test accuracy on test images unseen by both, by at least `promotion_min_delta`).

Parent MLflow run: {link_md}

{table}
"""


if __name__ == "__main__":
    sweep_flow()
