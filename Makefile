# Two commands on a fresh machine: `make run` and `make test`. `make dev` opens the Dagster UI.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test dev bench lint install db-stop clean

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "$(PYTHON) not found: install Python 3.11"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/clay db start
	$(BIN)/clay db migrate
	$(BIN)/clay seed
	$(BIN)/clay run
	$(BIN)/clay live-hour

test: $(STAMP)
	$(BIN)/python -m pytest -q

dev: $(STAMP)
	$(BIN)/clay db start
	$(BIN)/clay db migrate
	$(BIN)/clay dev

bench: $(STAMP)
	$(BIN)/python -m benchmarks

lint: $(STAMP)
	$(BIN)/ruff check clay_pipelines tests benchmarks
	$(BIN)/ruff format --check clay_pipelines tests benchmarks

db-stop: $(STAMP)
	$(BIN)/clay db stop

clean: db-stop
	rm -rf .clay
