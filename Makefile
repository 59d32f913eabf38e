# Two commands for a fresh machine: `make run` and `make test`. Both create .venv if needed.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: run test lint format typecheck unit openapi bench clean

$(BIN)/bem: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(VENV)/.dev: $(BIN)/bem
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

run: $(BIN)/bem
	$(BIN)/bem migrate
	$(BIN)/bem demo --if-empty
	$(BIN)/bem serve --host $(HOST) --port $(PORT)

lint: $(VENV)/.dev
	$(BIN)/ruff format --check src tests bench migrations
	$(BIN)/ruff check src tests bench migrations
	$(BIN)/mypy
	$(BIN)/lint-imports

format: $(VENV)/.dev
	$(BIN)/ruff format src tests bench migrations
	$(BIN)/ruff check --fix src tests bench migrations

test: lint
	$(BIN)/pytest

openapi: $(VENV)/.dev
	$(BIN)/bem openapi > openapi.json

bench: $(VENV)/.dev
	$(BIN)/python bench/upload.py
	$(BIN)/python bench/db_driver.py
	$(BIN)/python bench/query.py
	$(BIN)/python bench/ingest.py
	$(BIN)/python bench/feed.py
	$(BIN)/python bench/drill.py
	$(BIN)/python bench/sla.py --capacity --scenario mixed --duration 30

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache .import_linter_cache
