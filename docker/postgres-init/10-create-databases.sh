#!/usr/bin/env bash
# Create one role and one database each for Prefect (`prefect`) and MLflow
# (`mlflow`) on a fresh PostgreSQL server.
#
# docker-compose: the postgres image runs this once, on an empty data volume
# (it is mounted at /docker-entrypoint-initdb.d). Elsewhere (a native test
# server) run it with psql's usual PGHOST/PGPORT/PGUSER in the environment.
#
# Credentials: PREFECT_DB_USER/PREFECT_DB_PASSWORD and MLFLOW_DB_USER/
# MLFLOW_DB_PASSWORD (from .env in compose); the users default to the
# database names.
# No `set -u`: the postgres image may source this file into its entrypoint.
set -eo pipefail

: "${PREFECT_DB_PASSWORD:?set PREFECT_DB_PASSWORD}"
: "${MLFLOW_DB_PASSWORD:?set MLFLOW_DB_PASSWORD}"

psql -v ON_ERROR_STOP=1 \
  --username "${POSTGRES_USER:-${PGUSER:-postgres}}" \
  --dbname "${POSTGRES_DB:-postgres}" \
  -v prefect_user="${PREFECT_DB_USER:-prefect}" \
  -v prefect_password="$PREFECT_DB_PASSWORD" \
  -v mlflow_user="${MLFLOW_DB_USER:-mlflow}" \
  -v mlflow_password="$MLFLOW_DB_PASSWORD" <<'SQL'
CREATE ROLE :"prefect_user" LOGIN PASSWORD :'prefect_password';
CREATE DATABASE prefect OWNER :"prefect_user";
CREATE ROLE :"mlflow_user" LOGIN PASSWORD :'mlflow_password';
CREATE DATABASE mlflow OWNER :"mlflow_user";
-- Prefect's migrations create pg_trgm; create it as superuser so they never
-- depend on whether the extension is trusted on this server.
\connect prefect
CREATE EXTENSION IF NOT EXISTS pg_trgm;
SQL
