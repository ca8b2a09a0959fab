"""The local stack without Docker: Prefect's and MLflow's servers, the work pool's workers, the deployments.

`python -m stack up|down|status` (and `make up|down|status`) run it; tests and
benchmarks start single services with `start_prefect_server`,
`start_mlflow_server` and `start_worker`, wait with `wait_healthy`, and stop
them with `Service.stop`. Imports only maskcls and third-party libraries.
"""

from stack.commands import (
    MLFLOW_HEALTH_PATH,
    MLFLOW_START_SCRIPT,
    PREFECT_HEALTH_PATH,
    default_allowed_hosts,
    deploy_command,
    mlflow_server_command,
    mlflow_server_env,
    prefect_server_command,
    prefect_server_env,
    worker_command,
    worker_env,
)
from stack.health import (
    free_port,
    http_ok,
    http_request,
    port_open,
    wait_healthy,
    wait_worker_online,
)
from stack.paths import StackPaths
from stack.processes import (
    SERVICE_ENV,
    TAG_ENV,
    Service,
    load_services,
    process_tree,
    spawn,
    tagged_processes,
    terminate,
)
from stack.services import (
    MLFLOW_SERVER,
    PREFECT_SERVER,
    WORKER_PREFIX,
    run_deploy,
    start_mlflow_server,
    start_prefect_server,
    start_worker,
)
from stack.supervisor import StackConfig, StackStatus, down, status, up

__all__ = [
    "MLFLOW_HEALTH_PATH",
    "MLFLOW_SERVER",
    "MLFLOW_START_SCRIPT",
    "PREFECT_HEALTH_PATH",
    "PREFECT_SERVER",
    "SERVICE_ENV",
    "TAG_ENV",
    "WORKER_PREFIX",
    "Service",
    "StackConfig",
    "StackPaths",
    "StackStatus",
    "default_allowed_hosts",
    "deploy_command",
    "down",
    "free_port",
    "http_ok",
    "http_request",
    "load_services",
    "mlflow_server_command",
    "mlflow_server_env",
    "port_open",
    "prefect_server_command",
    "prefect_server_env",
    "process_tree",
    "run_deploy",
    "spawn",
    "start_mlflow_server",
    "start_prefect_server",
    "start_worker",
    "status",
    "tagged_processes",
    "terminate",
    "up",
    "wait_healthy",
    "wait_worker_online",
    "worker_command",
    "worker_env",
]
