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
from dataclasses import dataclass, field
from logging import Logger, LoggerAdapter
from typing import Any

from mlflow import MlflowClient

from maskcls.config import EXPERIMENT_NAME

CRASH_TAG = "crashed"
REASON_TAG = "failure_reason"
# The training flow's name (flows/train.py); only its flow runs are looked at.
FLOW_NAME = "train-face-mask"
_FINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


@dataclass
class Recovered:
    """What ``recover`` marked: MLflow run ids and Prefect flow run ids, with why."""

    mlflow_runs: dict[str, str] = field(default_factory=dict)
    flow_runs: dict[str, str] = field(default_factory=dict)


def _boot_time() -> float | None:
    try:
        for line in open("/proc/stat"):
            if line.startswith("btime"):
                return float(line.split()[1])
    except OSError:
        pass
    return None


def process_started(pid: int) -> float | None:
    """Epoch seconds at which process ``pid`` started; None if it does not exist (or is a zombie)."""
    try:
        stat = open(f"/proc/{pid}/stat").read()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2:].split()
    if fields[0] in ("Z", "X"):
        return None
    boot = _boot_time()
    if boot is None:
        return 0.0
    return boot + int(fields[19]) / os.sysconf("SC_CLK_TCK")


def pid_dead(pid: int, since: float | None = None) -> bool:
    """True when ``pid`` is not running, or runs a process that started after ``since`` (pid reuse)."""
    if pid <= 0:
        return False
    if pid == os.getpid():
        return False
    started = process_started(pid)
    if started is None:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        return not os.path.exists("/proc")  # alive by kill(0) but no /proc entry: trust kill
    # 2 s of slack: /proc's start time has clock-tick resolution and the run starts after its process.
    return since is not None and started > since + 2.0


def _prefect_state(pc: Any, flow_run_id: str) -> str | None:
    try:
        run = pc.read_flow_run(flow_run_id)
    except Exception:  # noqa: BLE001 - unknown to this server (another API, ephemeral run)
        return None
    return run.state.type.value if run.state is not None else None


def _crash_flow_run(pc: Any, flow_run_id: str, reason: str) -> bool:
    from prefect.states import Crashed

    state = _prefect_state(pc, flow_run_id)
    if state is None or state in _FINAL:
        return False
    pc.set_flow_run_state(flow_run_id, Crashed(message=reason), force=True)
    return True


def _prefect_client() -> Any:
    from prefect.client.orchestration import get_client

    return get_client(sync_client=True)


def recover(client: MlflowClient, log: Logger | LoggerAdapter | None = None, prefect: bool = True) -> Recovered:
    """Mark runs left Running by dead processes; never raises (a failure here must not stop a run)."""
    out = Recovered()
    host = socket.gethostname()
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())

    def warn(msg: str) -> None:
        if log is not None:
            log.warning(msg)

    pc_cm = None
    pc = None
    if prefect:
        try:
            pc_cm = _prefect_client()
            pc = pc_cm.__enter__()
        except Exception as exc:  # noqa: BLE001
            warn(f"recovery: cannot reach Prefect's API ({exc}); only MLflow runs are checked")
            pc_cm = pc = None
    try:
        try:
            exp = client.get_experiment_by_name(EXPERIMENT_NAME)
            runs = [] if exp is None else client.search_runs(
                [exp.experiment_id], filter_string="attributes.status = 'RUNNING'", max_results=500)
        except Exception as exc:  # noqa: BLE001
            warn(f"recovery: cannot list running MLflow runs ({exc})")
            runs = []
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
                state = _prefect_state(pc, flow_run_id)
                if state in _FINAL:
                    reason = (f"its Prefect flow run {flow_run_id} ended {state.lower()} while this run was "
                              f"still RUNNING (process {pid or '?'} on {tags.get('host', '?')} is gone); "
                              f"marked FAILED by a later run at {now}")
            if reason is None:
                continue
            try:
                client.set_tag(run_id, CRASH_TAG, "true")
                client.set_tag(run_id, REASON_TAG, reason)
                client.set_terminated(run_id, "FAILED")
                out.mlflow_runs[run_id] = reason
                warn(f"recovery: MLflow run {run_id}: {reason}")
            except Exception as exc:  # noqa: BLE001
                warn(f"recovery: cannot mark MLflow run {run_id} failed ({exc})")
                continue
            if pc is not None and flow_run_id:
                try:
                    if _crash_flow_run(pc, flow_run_id, f"MLflow run {run_id}: {reason}"):
                        out.flow_runs[flow_run_id] = reason
                except Exception as exc:  # noqa: BLE001
                    warn(f"recovery: cannot mark Prefect flow run {flow_run_id} crashed ({exc})")
        if pc is not None:
            _recover_worker_runs(pc, host, now, out, warn)
    finally:
        if pc_cm is not None:
            try:
                pc_cm.__exit__(None, None, None)
            except Exception:  # noqa: BLE001
                pass
    return out


def _recover_worker_runs(pc: Any, host: str, now: str, out: Recovered, warn) -> None:
    """Prefect flow runs a process worker on this host started (infrastructure_pid host:pid) whose process died."""
    try:
        from prefect.client.schemas.filters import (
            FlowFilter,
            FlowFilterName,
            FlowRunFilter,
            FlowRunFilterState,
            FlowRunFilterStateType,
        )
        from prefect.client.schemas.objects import StateType

        runs = pc.read_flow_runs(
            flow_filter=FlowFilter(name=FlowFilterName(any_=[FLOW_NAME])),
            flow_run_filter=FlowRunFilter(state=FlowRunFilterState(
                type=FlowRunFilterStateType(any_=[StateType.RUNNING]))),
            limit=200,
        )
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
            if _crash_flow_run(pc, str(run.id), reason):
                out.flow_runs[str(run.id)] = reason
                warn(f"recovery: Prefect flow run {run.id}: {reason}")
        except Exception as exc:  # noqa: BLE001
            warn(f"recovery: cannot mark Prefect flow run {run.id} crashed ({exc})")
