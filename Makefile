# The two commands of the quick start: `make up` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: up test lint typecheck bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

## up: run the whole service on the embedded default (broker, SQLite, listener, worker, web)
up: $(STAMP)
	$(BIN)/transcare up --data-dir $${TRANSCARE_DATA_DIR:-./data}

## test: lint, type-check and run the whole test suite
test: lint typecheck
	$(BIN)/python -m pytest -q -p no:cacheprovider $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .

typecheck: $(STAMP)
	$(BIN)/mypy

## bench: ingest benchmark (prints figures beside the MLLP echo baseline)
bench: $(STAMP)
	$(BIN)/python -m bench.ingest

clean:
	rm -rf $(VENV) build *.egg-info
