# Two commands matter: `make run` and `make test`. Everything else supports them.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install browser peers run test test-unit test-cluster chaos protos lint docs docs-serve bench clean-data

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "needs $(PYTHON)"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[dev,mlflow]'
	touch $(STAMP)

install: $(STAMP)

# The suite's preprocessor package (tests/plugins), installed as an operator installs one.
PLUGINS := $(VENV)/.test-plugins
$(PLUGINS): $(STAMP) tests/plugins/pyproject.toml tests/plugins/aihub_test_preprocessors/__init__.py
	$(PY) -m pip install --quiet --disable-pip-version-check -e tests/plugins
	touch $(PLUGINS)

# The peers bench/peers compares against (mlforecast, statsforecast), in an interpreter of
# their own: they need pandas < 3, the service pandas 3 (bench/peers-requirements.txt).
PEERS := .venv-peers/.installed
$(PEERS): bench/peers-requirements.txt
	test -x .venv-peers/bin/python || $(PYTHON) -m venv .venv-peers
	.venv-peers/bin/python -m pip install --quiet --disable-pip-version-check -r bench/peers-requirements.txt
	touch $(PEERS)

peers: $(PEERS)

# Debian's Chromium for the browser tests of the web page (tests/e2e/test_web.py), when it is
# missing and can be installed; they skip, saying why, when it cannot.
browser:
	@sh scripts/install_browser.sh || true

# Postgres (embedded, in .data/), a local Ray (AIHUB_LOCAL_RAY_NODES=2: a two-node cluster)
# and the gRPC server in a private network namespace, Envoy in front on 127.0.0.1 (REST 8000,
# gRPC 50051); loads the demo data once. Ctrl-C stops everything it started. Authentication is off
# (loopback only, announced at start) unless AIHUB_AUTH=required is given.
run: install
	AIHUB_AUTH=$${AIHUB_AUTH:-off} $(PY) -m server --seed-demo

# The suite runs in a private network namespace (server/isolation.py): distributed training
# and the local multi-node Ray cluster open sockets on every interface, which is loopback there.
# tests/cluster runs in a second pytest process (a Ray driver joins one cluster per process).
test: install $(PLUGINS) browser $(PEERS)
	$(PY) -m server.isolation -- sh -c '$(PY) -m pytest -q && AIHUB_CLUSTER_TESTS=1 $(PY) -m pytest -q tests/cluster'

# The unit tests alone (no PostgreSQL, no Ray, no servers): the inner loop, well under a minute.
test-unit: install $(PLUGINS)
	$(PY) -m pytest -q tests/unit

# Only the multi-node cluster tests (a head and a second node started with `ray start`).
test-cluster: install $(PLUGINS)
	$(PY) -m server.isolation -- env AIHUB_CLUSTER_TESTS=1 $(PY) -m pytest -q tests/cluster

# The chaos suite (tests/chaos): two replicas behind Envoy on a PostgreSQL of its own; one
# replica killed with -9 five times during bursts of jobs, long jobs across leases,
# PostgreSQL stopped mid-run and mid-stream, 100 concurrent creates with one request_id; checks
# from the database that nothing was lost or done twice and prints its figures. make test runs
# the short version (tests/e2e/test_chaos.py).
chaos: install
	$(PY) -m server.isolation -- $(PY) -m tests.chaos

# Regenerate client/_gen (stubs and Envoy's descriptor set) from protos/ (commit the result).
protos: install
	$(PY) scripts/gen_protos.py

# buf lint (the protos), ruff (lint and format) and mypy (strict for storage/ and trainers/).
lint: install
	$(PY) scripts/gen_protos.py --link-only
	$(VENV)/bin/buf lint
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	PYTHONPATH=. $(VENV)/bin/lint-imports

# The docs site from docs/ (mkdocs-material) into build/site; --strict: a broken link or anchor fails.
docs: install
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict

docs-serve: install
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs serve --dev-addr 127.0.0.1:8001

bench: install $(PEERS)
	$(PY) -m bench.pipeline_overhead
	$(PY) -m bench.dispatch_latency
	$(PY) -m bench.api_latency
	$(PY) -m bench.queue_throughput
	$(PY) -m bench.auth_overhead
	$(PY) -m bench.import_memory
	$(PY) -m bench.rest_latency
	$(PY) -m bench.algorithms
	$(PY) -m bench.quality
	$(PY) -m bench.operations
	$(PY) -m bench.predictions
	$(PY) -m bench.peers

clean-data:
	rm -rf .data
