"""How the training flow runs: its MLflow run opened, and its stage tasks called with the
project's result storage, cache-key locks and refresh, each one's final state kept."""

from __future__ import annotations

from typing import Any, TypeVar

from mlflow import MlflowClient
from prefect import Task, get_run_logger
from prefect.client.schemas.objects import State
from prefect.context import get_run_context

from maskcls.config import PipelineConfig, Settings
from maskcls.stages import STAGE_NAMES
from tasks import recovery, tracking
from tasks.codeversion import stage_code_version
from tasks.locking import FcntlLockManager

R = TypeVar("R")


def open_run(settings: Settings, config: PipelineConfig, source: str,
             parent_run_id: str | None) -> tuple[MlflowClient, str]:
    """Probe MLflow, mark runs left behind by killed processes, and create this flow run's MLflow run."""
    logger = get_run_logger()
    client = tracking.configure(settings)  # probes a tracking server before any work
    recovery.recover(client, logger)  # runs left Running by a killed process -> FAILED / Crashed
    prefect_run = get_run_context().flow_run
    run_id = tracking.start_run(client, settings, config, {
        "run_name": prefect_run.name if prefect_run else None,
        "prefect_flow_run_id": str(prefect_run.id) if prefect_run else "",
        "source": source,
        # The last stage's code version covers every stage's modules: what code made this model.
        "code_version": stage_code_version(STAGE_NAMES[-1]),
        **({"mlflow.parentRunId": parent_run_id} if parent_run_id else {}),
    })
    logger.info(f"MLflow run {run_id} in {settings.tracking_uri}; profile {config.profile}")
    return client, run_id


class StageRunner:
    """Calls stage tasks with persisted results and a lock per cache key; keeps their states."""

    def __init__(self, settings: Settings, refresh: bool) -> None:
        # A Path: Prefect makes a local block of it, no server-side save.
        self.storage = settings.results_dir
        self.storage.mkdir(parents=True, exist_ok=True)
        # Same cache key -> computed once: a stage holds an fcntl lock on its key while it runs
        # (released by the OS if the process dies); a concurrent run waits, then reads the result.
        self.locks = FcntlLockManager(settings.locks_dir)
        self.refresh = refresh
        self.states: dict[str, State] = {}

    def __call__(self, stage_task: Task[..., R], *args: Any, **kwargs: Any) -> R:
        """Run one stage task and return its result (raises if it failed)."""
        policy = stage_task.cache_policy.configure(lock_manager=self.locks, isolation_level="SERIALIZABLE")
        configured = stage_task.with_options(result_storage=self.storage, persist_result=True,
                                             refresh_cache=self.refresh or None, cache_policy=policy)
        state = configured(*args, return_state=True, **kwargs)
        self.states[stage_task.name] = state
        return state.result()

    def state_names(self) -> dict[str, str]:
        """Stage name -> final state name (`Completed`, `Cached`), in pipeline order."""
        return {name: self.states[name].name for name in STAGE_NAMES}

    def all_cached(self) -> bool:
        """Whether every stage came from the cache."""
        return all(state == "Cached" for state in self.state_names().values())
