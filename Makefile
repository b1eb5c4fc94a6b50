# Two commands matter: `make demo` and `make test`. Everything they need is installed on demand.
SHELL := /bin/bash
PYTHON_BOOTSTRAP ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: help install browser up down status logs clean demo test test-unit test-stack test-integration test-reliability lint bench screenshots cluster-up cluster-down cluster-status test-cluster

help:
	@echo "make demo   - bring up the stack and run the pipeline on the built-in offline feed"
	@echo "make test   - install what is missing and run every test (unit + integration)"
	@echo "make up | down | status | logs | clean | lint | test-unit | bench | screenshots"
	@echo "make test-stack (test-integration, then test-reliability, in one session)"
	@echo "make cluster-up | cluster-down | cluster-status | test-cluster - the loopback cluster"

# The venv's packages are installed with uv, at the version pyproject's dev extras pin (read
# from there when the recipe runs: one pin). In a clean clone it installed the same 150
# packages as pip in 53 s instead of 111, and Superset's (infra/superset.py) in 16 s instead
# of 98. pip only bootstraps it. Compiled at install, as pip does: where PYTHONDONTWRITEBYTECODE is set (it is on the CI
# machine), every process would otherwise compile what it imports again, and the unit tests
# took 3:45 instead of 2:43.
UV_REQUIREMENT = $(shell grep -o '"uv==[^"]*"' pyproject.toml | tr -d '"')

$(STAMP): pyproject.toml
	@command -v $(PYTHON_BOOTSTRAP) >/dev/null || command -v python3 >/dev/null || \
		{ echo "error: Python 3.11 not found (set PYTHON_BOOTSTRAP=/path/to/python3.11)"; exit 1; }
	@test -x $(PY) || $$(command -v $(PYTHON_BOOTSTRAP) || command -v python3) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check '$(UV_REQUIREMENT)'
	$(VENV)/bin/uv pip install -q --compile-bytecode --python $(PY) -e '.[dev]'
	@touch $(STAMP)

# Also the deploy artefacts' validators: helm (built once from the Go module proxy into
# .cache/tools) and docker-compose (apt-get when missing); see infra/tools.py.
install: $(STAMP)
	$(PY) -m infra install
	$(PY) -m infra.tools install

# Debian's chromium for the dashboard browser tests, screenshots and benchmark (apt-get if missing).
browser: $(STAMP)
	$(PY) -m infra.browser install

up: install
	$(PY) -m infra up

down:
	@test -x $(PY) && $(PY) -m infra down || true

status: $(STAMP)
	$(PY) -m infra status

logs: $(STAMP)
	$(PY) -m infra logs

clean: $(STAMP)
	$(PY) -m infra clean

demo: install
	$(PY) -m infra up
	$(PY) -m infra demo

# The cluster topology on loopback (README, Running on a cluster): three Kafka nodes, three
# Cassandra nodes, Trino and a Spark standalone master with two workers, under its own STATE_DIR
# and ports, so it can run beside the single-node stack.
CLUSTER_STATE_DIR ?= .state-cluster
CLUSTER := STATE_DIR=$(CLUSTER_STATE_DIR) $(PY) -m infra

cluster-up: install
	$(CLUSTER) up --topology cluster

cluster-down:
	@test -x $(PY) && $(CLUSTER) down --topology cluster || true

cluster-status: $(STAMP)
	$(CLUSTER) status --topology cluster

# The failover test (about 10 GB of memory): brings the cluster up if needed, stops a Kafka
# broker, a Cassandra node and a Spark worker while trades flow, and leaves the cluster as it
# found it. `make test` runs it beside test-stack when the machine has the memory
# (MemAvailable >= 16 GiB; TEST_CLUSTER=false leaves it out): on its own it takes about 8
# minutes on a quiet machine (the cluster's start 3, the test 4, its stop), 10.5 beside
# test-stack.
TEST_CLUSTER ?= true
test-cluster: install
	STATE_DIR=$(CLUSTER_STATE_DIR) $(PY) -m pytest --durations=25 -m cluster tests/cluster

# Lint and the unit tests with their coverage floor first, then everything that needs the
# stack in one pytest session (test-stack), so the stack starts once. Lint (mypy) and the unit
# tests are independent and each use one core, so they run side by side on the 2 cores; each
# one's output is printed whole when it ends (--output-sync), and either failing fails
# `make test` once the other has finished. install and browser run before, one after the
# other: both may call apt-get, which takes the dpkg lock.
# The failover test runs in the background beside test-stack (unless TEST_CLUSTER=false), on its own ports and
# STATE_DIR: test-stack's sessions spend most of their time waiting on outages and recoveries
# (15 CPU minutes in 42), so the two together take little longer than test-stack alone. It
# starts once the single-node stack answers (`infra status`; at most 10 minutes' wait): the two
# stacks' JVMs starting at once slowed test-stack's start from 77 s to 143 s. Its
# output goes to $(CLUSTER_LOG) and is printed after test-stack's; either failing fails `make
# test`. test-stack's fault matrix, the part most sensitive to load, runs last, after the
# cluster's test has finished. make runs a line naming $(MAKE) even under -n, so the block
# checks for a dry run itself (tests/test_commands.py runs `make -n test`).
CLUSTER_LOG := $(CLUSTER_STATE_DIR)/test-cluster.log
test: install browser
	$(MAKE) --no-print-directory -j2 --output-sync=target lint test-unit
	@if [ -n "$(findstring n,$(firstword -$(MAKEFLAGS)))" ]; then \
		echo "make test-stack (and test-cluster beside it unless TEST_CLUSTER=false): dry run"; \
		exit 0; fi; \
	rm -f $(CLUSTER_LOG).rc; \
	if [ "$(TEST_CLUSTER)" != true ]; then \
		echo "make test: test-cluster not run (TEST_CLUSTER=$(TEST_CLUSTER); make test-cluster runs it)"; \
	elif [ "$$(awk '/^MemAvailable:/ {print int($$2 / 1048576)}' /proc/meminfo)" -lt 16 ]; then \
		echo "make test: skipping test-cluster (needs 16 GiB available; run make test-cluster)"; \
	else \
		echo "make test: test-cluster runs beside test-stack; its output follows ($(CLUSTER_LOG))"; \
		mkdir -p $(CLUSTER_STATE_DIR); \
		{ for wait in $$(seq 60); do $(PY) -m infra status > /dev/null 2>&1 && break; \
		    sleep 10; done; \
		  $(MAKE) --no-print-directory test-cluster > $(CLUSTER_LOG) 2>&1; \
		  echo $$? > $(CLUSTER_LOG).rc; } & \
	fi; \
	$(MAKE) --no-print-directory test-stack; stack=$$?; \
	wait; cluster=0; \
	if [ -f $(CLUSTER_LOG).rc ]; then \
		echo "---------------- make test-cluster (run beside test-stack) ----------------"; \
		cat $(CLUSTER_LOG); cluster=$$(cat $(CLUSTER_LOG).rc); \
	fi; \
	[ $$stack = 0 ] && [ $$cluster = 0 ]

# Every pytest step prints its 25 slowest tests (--durations=25), so CI shows where the time goes.
# Every step, unit or against the real engines, fails on a warning: pyproject.toml's
# filterwarnings ignores only the few the engines' clients raise from their own code, each named.
# test-integration and test-reliability in one session: the fault matrix runs last (it restarts
# Kafka and Cassandra under the tests; tests/conftest.py orders it), and the stack is started
# once instead of stopped and started again between the two.
test-stack: install
	$(PY) -m pytest --durations=40 -m 'integration and not live and not cluster'

test-integration: install
	$(PY) -m pytest --durations=25 -m 'integration and not live and not reliability and not cluster'

test-reliability: install
	$(PY) -m pytest --durations=25 -m reliability tests/reliability

# The tests that need no service, with the coverage report of the pure modules; it fails under
# the floor in pyproject.toml ([tool.coverage.report] fail_under). Two pytest-xdist workers: the
# unit tests share no service, and lint's mypy is done within the first minutes beside them.
test-unit: $(STAMP)
	$(PY) -m pytest -n 2 --durations=25 -m 'not integration and not live' --cov --cov-report=term-missing:skip-covered

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

bench: install browser
	$(PY) benchmarks/collector.py
	$(PY) benchmarks/pipeline.py
	$(PY) benchmarks/gbm.py
	$(PY) benchmarks/dashboards.py

# Refresh the README's dashboard pictures in docs/img/ from the running stack.
screenshots: browser
	$(PY) -m infra.browser screenshots
