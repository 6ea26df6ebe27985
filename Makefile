# Quickstart targets: `make repro` (install + dvc repro) and `make test` (install + pytest).
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: venv repro test dvc-yaml clean-cache

venv: $(STAMP)

# torch first, pinned to the local CPU build, so no dependency range pulls the CUDA build.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

repro: venv
	. $(BIN)/activate && dvc repro

test: venv
	. $(BIN)/activate && python -m pytest -q

dvc-yaml: venv
	$(BIN)/python -m flows.graph

clean-cache:
	rm -rf .prefect/artifacts .prefect/storage
