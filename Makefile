# The two commands of the quick start: `make up` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: up test browser lint typecheck bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

## up: run the whole service on the embedded default (broker, SQLite, listener, worker, web)
up: $(STAMP)
	$(BIN)/transcare up --data-dir $${TRANSCARE_DATA_DIR:-./data}

## test: lint, type-check and run the whole test suite (the page tests need the browser)
test: browser lint typecheck
	$(BIN)/python -m pytest -q -p no:cacheprovider $(PYTEST_ARGS)

## browser: Debian's Chromium for the page tests (tests/integration/test_pages.py), installed
## with apt-get when it is missing (as root, or through sudo). Never a browser download of its own.
CHROMIUM ?= /usr/bin/chromium
browser:
	@if [ -x $(CHROMIUM) ]; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ]; then SUDO=""; \
	elif command -v sudo >/dev/null 2>&1; then SUDO="sudo"; \
	else echo "make browser: $(CHROMIUM) is missing; install Debian's chromium as root:" \
	  "apt-get install -y --no-install-recommends chromium" >&2; exit 1; fi; \
	echo "make browser: installing Debian's chromium (apt-get)"; \
	{ $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	  $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium; } \
	|| { echo "make browser: apt-get could not install chromium; as root run:" \
	  "apt-get install -y --no-install-recommends chromium" >&2; exit 1; }; \
	[ -x $(CHROMIUM) ] || { echo "make browser: chromium installed but $(CHROMIUM) is missing" >&2; exit 1; }

lint: $(STAMP)
	$(BIN)/ruff check .

typecheck: $(STAMP)
	$(BIN)/mypy

## bench: ingest and end-to-end benchmarks (each prints its figures beside the MLLP echo baseline)
bench: $(STAMP)
	$(BIN)/python -m bench.ingest
	$(BIN)/python -m bench.e2e

clean:
	rm -rf $(VENV) build *.egg-info
