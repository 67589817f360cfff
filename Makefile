# cvn-focal: the two commands of the README, plus a few conveniences.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
export DAGSTER_HOME ?= $(CURDIR)/.dagster_home

.PHONY: install sweep paper drill live-drill ops test lint dev bench clean-home

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[dev]'
	touch $@

install: $(VENV)/.installed

## The whole FTF sweep (125 trainings + calibration + results + gates) on the embedded default.
sweep: install
	$(PY) -m cvn_assets.sweep $(SWEEP_ARGS)

## The default sweep (or reuse it), its champions, then 90 days of paper trading after its window.
paper: install
	$(PY) -m cvn_assets.paper_run $(PAPER_ARGS)

## The guard's incident drill on a fresh home: SCENARIO=crash (P1s -> one rollback) or calm.
SCENARIO ?= crash
drill: install
	$(PY) -m cvn_assets.drill --scenario $(SCENARIO) $(DRILL_ARGS)

## The guard's operator command: OPS_ARGS="status" (default), "alerts", "halt --actor ... --reason ...";
## see python -m cvn_assets.ops --help and README "Operator command".
OPS_ARGS ?= status
ops: install
	$(PY) -m cvn_assets.ops $(OPS_ARGS)

## The same drill under the real daemon (dagster dev, accelerated guard clock; only watches).
live-drill: install
	$(PY) -m cvn_assets.live_drill --scenario $(SCENARIO) $(LIVE_DRILL_ARGS)

## Lint + the full test suite (unit, integration, PostgreSQL, webserver).
test: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/pytest -q -n auto --dist loadfile

lint: install
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

## Browse runs, assets, checks and metadata of the local instance.
dev: install
	$(VENV)/bin/dagster dev -w workspace.yaml

bench: install
	$(PY) bench/bench_focal.py
	$(PY) bench/bench_sweep.py

clean-home:
	rm -rf .dagster_home
