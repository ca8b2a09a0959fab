"""Mark runs left Running by a dead process: MLflow runs as FAILED, Prefect flow runs as Crashed.

A SIGKILLed `maskcls train` (or a worker's flow-run process killed with its container)
leaves its MLflow run RUNNING and its Prefect flow run Running forever. Every run calls
``recover`` first. An MLflow run is dead when:

- its ``host`` tag is this host and the process of its ``pid`` tag is gone, or is a newer
  process that reused the pid (it started after the run did); or
- its Prefect flow run (tag ``prefect_flow_run_id``) is already in a final state, which
  also covers runs of other hosts (compose workers).

Such a run is tagged ``crashed=true`` and ``failure_reason=<why>`` and terminated FAILED;
its Prefect flow run, if still not final, is set Crashed with the same reason. Prefect
flow runs started by a process worker on this host (``infrastructure_pid`` is
``host:pid``) whose process is gone are set Crashed too. Runs whose process still lives,
and runs of other hosts without that evidence, are left alone.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from logging import Logger, LoggerAdapter
from typing import TYPE_CHECKING

import psutil

from maskcls.names import FLOW_NAME  # only the training flow's runs are looked at
from tasks import prefect_api, tracking

if TYPE_CHECKING:
    from mlflow import MlflowClient

CRASH_TAG = "crashed"
REASON_TAG = "failure_reason"


@dataclass
class Recovered:
    """What ``recover`` marked: MLflow run ids and Prefect flow run ids, with why."""

    mlflow_runs: dict[str, str] = field(default_factory=dict)
    flow_runs: dict[str, str] = field(default_factory=dict)


def pid_dead(pid: int, since: float | None = None) -> bool:
    """True when ``pid`` is not running (gone or a zombie), or runs a process that started after
    ``since`` (epoch seconds): the pid was reused."""
    if pid <= 0 or pid == os.getpid():
        return False
    try:
        process = psutil.Process(pid)
        if process.status() in (psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD):
            return True
        started = process.create_time()
    except psutil.NoSuchProcess:
        return True
    except psutil.AccessDenied:  # exists, owned by someone else: alive
        return False
    # 2 s of slack: the start time has clock-tick resolution and the run starts after its process.
    return since is not None and started > since + 2.0


def recover(client: MlflowClient, log: Logger | LoggerAdapter | None = None, prefect: bool = True) -> Recovered:
    """Mark runs left Running by dead processes; never raises (a failure here must not stop a run)."""
    out = Recovered()
    host = socket.gethostname()
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())

    def warn(msg: str) -> None:
        if log is not None:
            log.warning(msg)

    try:
        with ExitStack() as stack:
            pc = None
            if prefect:
                try:
                    pc = stack.enter_context(prefect_api.client())
                except Exception as exc:  # noqa: BLE001
                    warn(f"recovery: cannot reach Prefect's API ({exc}); only MLflow runs are checked")
            _recover_mlflow_runs(client, pc, host, now, out, warn)
            if pc is not None:
                _recover_worker_runs(pc, host, now, out, warn)
    except Exception as exc:  # noqa: BLE001 - closing the Prefect client; what was marked stays marked
        warn(f"recovery: {exc}")
    return out


def _recover_mlflow_runs(client: MlflowClient, pc: prefect_api.ApiClient | None, host: str, now: str, out: Recovered,
                         warn: Callable[[str], None]) -> None:
    """MLflow runs RUNNING whose process on this host died, or whose Prefect flow run has ended."""
    try:
        runs = tracking.running_runs(client)
    except Exception as exc:  # noqa: BLE001
        warn(f"recovery: cannot list running MLflow runs ({exc})")
        return
    for run in runs:
        tags = run.data.tags
        run_id = run.info.run_id
        flow_run_id = tags.get("prefect_flow_run_id") or ""
        reason = None
        try:
            pid = int(tags.get("pid", "0"))
        except ValueError:
            pid = 0
        if tags.get("host") == host and pid and pid_dead(pid, (run.info.start_time or 0) / 1000):
            reason = (f"process {pid} on host {host} died while this run was RUNNING "
                      f"(killed or crashed); marked FAILED by a later run at {now}")
        elif pc is not None and flow_run_id:
            state = prefect_api.flow_run_state(pc, flow_run_id)
            if state in prefect_api.FINAL_STATES:
                reason = (f"its Prefect flow run {flow_run_id} ended {state.lower()} while this run was "
                          f"still RUNNING (process {pid or '?'} on {tags.get('host', '?')} is gone); "
                          f"marked FAILED by a later run at {now}")
        if reason is None:
            continue
        try:
            tracking.fail_run(client, run_id, {CRASH_TAG: "true", REASON_TAG: reason})
            out.mlflow_runs[run_id] = reason
            warn(f"recovery: MLflow run {run_id}: {reason}")
        except Exception as exc:  # noqa: BLE001
            warn(f"recovery: cannot mark MLflow run {run_id} failed ({exc})")
            continue
        if pc is not None and flow_run_id:
            try:
                if prefect_api.crash_flow_run(pc, flow_run_id, f"MLflow run {run_id}: {reason}"):
                    out.flow_runs[flow_run_id] = reason
            except Exception as exc:  # noqa: BLE001
                warn(f"recovery: cannot mark Prefect flow run {flow_run_id} crashed ({exc})")


def _recover_worker_runs(pc: prefect_api.ApiClient, host: str, now: str, out: Recovered,
                         warn: Callable[[str], None]) -> None:
    """Prefect flow runs a process worker on this host started (infrastructure_pid host:pid) whose process died."""
    try:
        runs = prefect_api.running_flow_runs(pc, FLOW_NAME)
    except Exception as exc:  # noqa: BLE001
        warn(f"recovery: cannot list running Prefect flow runs ({exc})")
        return
    for run in runs:
        infra = run.infrastructure_pid or ""
        run_host, _, pid_s = infra.rpartition(":")
        if run_host != host or not pid_s.isdigit() or str(run.id) in out.flow_runs:
            continue
        since = run.start_time.timestamp() if run.start_time else None
        if not pid_dead(int(pid_s), since):
            continue
        reason = f"process {pid_s} on host {host} died while this flow run was Running; marked Crashed at {now}"
        try:
            if prefect_api.crash_flow_run(pc, str(run.id), reason):
                out.flow_runs[str(run.id)] = reason
                warn(f"recovery: Prefect flow run {run.id}: {reason}")
        except Exception as exc:  # noqa: BLE001
            warn(f"recovery: cannot mark Prefect flow run {run.id} crashed ({exc})")
