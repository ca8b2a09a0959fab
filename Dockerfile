# The project image: Prefect workers (`--scale worker=N`), the one-shot `deploy`
# service and Prefect's server in docker-compose.yml all run it, so server,
# workers and deployments share one pinned Prefect.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    DO_NOT_TRACK=1

# OpenCV's headless wheel still links against GLib.
RUN apt-get update \
    && apt-get install -y --no-install-recommends libglib2.0-0 \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /app

# Dependencies first: this layer is rebuilt only when the lock changes.
COPY requirements.lock ./
RUN pip install -r requirements.lock

# Then the project, editable, so flow runs (which start in /app, the
# deployments' working directory) and imports see one copy of the code.
COPY pyproject.toml README.md ./
COPY maskcls ./maskcls
COPY tasks ./tasks
COPY flows ./flows
COPY mlflow ./mlflow
RUN pip install --no-deps -e .

# Not root: workers run arbitrary flow code. /data is the shared MASKCLS_HOME
# volume; a named volume mounted there takes this ownership on first use.
RUN useradd --create-home --uid 1000 maskcls \
    && mkdir -p /data \
    && chown maskcls /data
USER maskcls
ENV MASKCLS_HOME=/data/maskcls

CMD ["prefect", "worker", "start", "--pool", "maskcls", "--type", "process", "--install-policy", "never"]
