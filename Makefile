# ptexp: `make run` installs into .venv and runs the default comparison; `make test` runs the test suite.
VENV   ?= .venv
PYTHON ?= python3
PY     := $(VENV)/bin/python
# The CPU wheel of torch 2.13.0 lies on this kind of machine's disk; an unpinned torch would pull a CUDA build.
# Elsewhere, set TORCH to what suits your machine (e.g. TORCH=torch) or pre-install torch in the venv.
TORCH  ?= torch==2.13.0

.PHONY: install run test test-slow lint mlflow-ui clean

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

lint: install
	$(VENV)/bin/ruff check ptexp tests
	$(VENV)/bin/ruff format --check ptexp tests

mlflow-ui: install
	$(VENV)/bin/mlflow ui --backend-store-uri sqlite:///$(CURDIR)/outputs/mlflow.db --port 5000

clean:
	rm -rf outputs/runs outputs/multiruns
