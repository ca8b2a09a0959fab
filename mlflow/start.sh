#!/usr/bin/env bash
# Start the MLflow tracking server and UI. The one start script behind both
# docker-compose's `mlflow` service and `python -m stack up`, so both run
# the same server with the same options.
#
# Configuration (environment; any extra arguments are appended to
# `mlflow server` and, being later on the command line, win):
#   MLFLOW_BACKEND_STORE_URI      required: sqlite:////abs/path/mlflow.db or postgresql+psycopg2://user:pw@host:5432/mlflow
#   MLFLOW_ARTIFACTS_DESTINATION  required: where served artifacts live (a local path or an object-store URI)
#   MLFLOW_HOST                   bind address (default 127.0.0.1; 0.0.0.0 inside a container)
#   MLFLOW_PORT                   port (default 5000)
#   MLFLOW_SERVER_ALLOWED_HOSTS   comma-separated Host headers the server accepts (default: MLflow's own,
#                                 localhost and private IPs); must include the name clients use, e.g. `mlflow:5000`
#   MLFLOW_WORKERS                uvicorn worker processes (default: MLflow's own, 4)
#   MLFLOW_SERVER_ENABLE_JOB_EXECUTION  default false here (MLflow's default is true)
#   MLFLOW_DISABLE_TELEMETRY      default true here: the server runs without internet
#   MLFLOW_BIN                    the mlflow executable (default: `mlflow` on PATH)
set -euo pipefail

: "${MLFLOW_BACKEND_STORE_URI:?set MLFLOW_BACKEND_STORE_URI, e.g. sqlite:////data/mlflow.db or postgresql+psycopg2://user:pw@postgres:5432/mlflow}"
: "${MLFLOW_ARTIFACTS_DESTINATION:?set MLFLOW_ARTIFACTS_DESTINATION, e.g. /mlartifacts}"
host="${MLFLOW_HOST:-127.0.0.1}"
port="${MLFLOW_PORT:-5000}"
# MLflow's job runner (GenAI scorers, prompt optimisation) starts seven huey
# consumer processes; this project submits no jobs, and the machines are small.
export MLFLOW_SERVER_ENABLE_JOB_EXECUTION="${MLFLOW_SERVER_ENABLE_JOB_EXECUTION:-false}"
export MLFLOW_DISABLE_TELEMETRY="${MLFLOW_DISABLE_TELEMETRY:-true}"

# A local artifacts folder must exist before the first upload; URIs are left alone.
case "$MLFLOW_ARTIFACTS_DESTINATION" in
  file://*) mkdir -p "${MLFLOW_ARTIFACTS_DESTINATION#file://}" ;;
  *://*) ;;
  *) mkdir -p "$MLFLOW_ARTIFACTS_DESTINATION" ;;
esac

args=(
  server
  --backend-store-uri "$MLFLOW_BACKEND_STORE_URI"
  --serve-artifacts
  --artifacts-destination "$MLFLOW_ARTIFACTS_DESTINATION"
  --host "$host"
  --port "$port"
)
if [[ -n "${MLFLOW_SERVER_ALLOWED_HOSTS:-}" ]]; then
  args+=(--allowed-hosts "$MLFLOW_SERVER_ALLOWED_HOSTS")
fi
if [[ -n "${MLFLOW_WORKERS:-}" ]]; then
  args+=(--workers "$MLFLOW_WORKERS")
fi

# exec: the server takes this script's pid, so signals sent to it reach MLflow.
exec "${MLFLOW_BIN:-mlflow}" "${args[@]}" "$@"
