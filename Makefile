# terarec: `make demo` (main job) and `make test` (tests) set themselves up on a fresh machine.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.terarec-setup
RUN_DIR ?= runs/demo

.PHONY: setup demo test test-fast lint clean

setup: $(STAMP)

# Idempotent: reuses .venv and reinstalls only when the pins or setup.py change.
$(STAMP): requirements/stack.txt requirements/base.txt requirements/dev.txt requirements/install.py setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) requirements/install.py
	touch $(STAMP)

demo: setup
	bash scripts/demo.sh $(RUN_DIR)

# ruff lint + format check and mypy (settings in pyproject.toml); CI runs them through make test
lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

test: setup lint
	$(PY) -m pytest -q tests

test-fast: setup
	$(PY) -m pytest -q -m "not slow" tests

clean:
	rm -rf $(VENV) runs .pytest_cache
