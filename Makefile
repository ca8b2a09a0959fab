# maskcls — every target creates .venv from requirements.lock when it is missing or stale.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
UV_VERSION := 0.13.9
ARGS ?=

.PHONY: venv run test test-unit test-integration bench lock up down status clean predict serve

venv: $(STAMP)

# Progress goes to stderr so that `make bench` prints nothing but its JSON on stdout.
$(STAMP): requirements.lock pyproject.toml
	@echo "installing .venv from requirements.lock" >&2
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -m pip install -q "uv==$(UV_VERSION)" >&2
	@$(BIN)/uv pip install --python $(BIN)/python -q -r requirements.lock >&2
	@$(BIN)/uv pip install --python $(BIN)/python -q --no-deps -e . >&2
	@touch $(STAMP)

## Train the default profile (MASKCLS_DATA_SOURCE picks the data; ARGS="--profile seed" etc.)
run: $(STAMP)
	$(BIN)/maskcls train $(ARGS)

# Each group runs in a pytest process of its own: the browser tests' event loop, the
# fault tests' servers and the stack tests' work pools never meet another group's state.
# Within a group, tests that need servers share one stack started once per session.
TEST_GROUPS := tests/unit \
	tests/faults \
	"tests/integration --ignore=tests/integration/test_stack.py --ignore=tests/integration/test_sweep.py --ignore=tests/integration/test_topology.py" \
	"tests/integration/test_stack.py tests/integration/test_sweep.py tests/integration/test_topology.py" \
	tests/e2e

## Run the whole test suite (unit, faults, integration, e2e); ARGS="tests/unit -q" runs a part
test: $(STAMP)
	@if [ -n "$(ARGS)" ]; then $(BIN)/python -m pytest $(ARGS); else \
	  failed=0; for group in $(TEST_GROUPS); do \
	    echo "== pytest $$group" >&2; $(BIN)/python -m pytest $$group || failed=1; \
	  done; exit $$failed; fi

test-unit: $(STAMP)
	$(BIN)/python -m pytest tests/unit $(ARGS)

## Full-size measurements, one JSON object on stdout; PART=train|seed|speed|predict|scan|origins|three-class|scale runs one part
bench: $(STAMP)
	@$(BIN)/python benchmarks/run.py $(if $(PART),--part $(PART)) $(ARGS)

## Re-resolve the lock file from pyproject.toml
lock:
	$(BIN)/uv pip compile pyproject.toml --extra dev --python-version 3.11 -o requirements.lock

## Serve the scanning model's champion over HTTP on 127.0.0.1:$MASKCLS_SERVE_PORT (POST /invocations)
# The port and the registry come from Settings (MASKCLS_SERVE_PORT, validated; MLFLOW_TRACKING_URI or
# the SQLite store under MASKCLS_HOME), as for every other command; the scoring server runs
# uvicorn from the venv, so its bin goes first on PATH.
serve: $(STAMP)
	@set -- $$($(BIN)/python -c 'from maskcls.config import Settings; s = Settings.from_env(); print(s.tracking_uri, s.serve_port)') && [ $$# -eq 2 ] && \
	  PATH=$(abspath $(BIN)):$$PATH MLFLOW_TRACKING_URI=$$1 exec $(BIN)/mlflow models serve -m models:/face-mask-scanner@champion \
	    --env-manager local -h 127.0.0.1 -p $$2

up: $(STAMP)
	$(BIN)/python -m stack up

down:
	@test -x $(BIN)/python && $(BIN)/python -m stack down || true

status: $(STAMP)
	$(BIN)/python -m stack status

clean:
	rm -rf $(VENV) .pytest_cache
