# The two quick-start commands (see README): `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The CPU build of PyTorch for the built-in AI plugin; the project itself requires a range (torch>=2.3).
TORCH ?= torch==2.13.0
# The suite runs on two workers, a test module per worker (its fixtures are module-scoped worlds),
# handed out longest first (tests/schedule.py; xdist keeps that order with --no-loadscope-reorder).
PYTEST_ARGS ?= -n 2 --dist loadfile --no-loadscope-reorder

.PHONY: install install-dev run test lint unit bench clean

# Stamps of what was installed: `make run` and `make test` reinstall only when pyproject.toml (the
# dependencies, entry points and metadata) changed since; the code itself is installed editable.
STAMP := $(VENV)/.installed
DEV_STAMP := $(VENV)/.installed-dev

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet "$(TORCH)"
	$(BIN)/pip install --quiet -e '.[ai]'
	touch $@

$(DEV_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet "$(TORCH)"
	$(BIN)/pip install --quiet -e '.[ai,dev]'
	touch $@ $(STAMP)

install: $(STAMP)

install-dev: $(DEV_STAMP)

## Install and run the archive on the embedded default (SQLite + filesystem under ./cloudfilm-data),
## with the pinned OHIF viewer at /ohif/ and the built-in viewer's decoders at /codecs/ (fetched from
## npm the first time; skipped without npm).
run: install
	@ohif="$${CLOUDFILM_OHIF_DIR:-$$(sh scripts/fetch_ohif.sh 2>/dev/null)}" || true; \
	 [ -n "$$ohif" ] || echo "make run: the OHIF viewer is not added (it needs npm: apt-get install npm); the built-in viewer works without it"; \
	 codecs="$${CLOUDFILM_CODECS_DIR:-$$(sh scripts/fetch_codecs.sh 2>/dev/null)}" || true; \
	 [ -n "$$codecs" ] || echo "make run: the viewer's image decoders are not added (they need npm); compressed studies show as rendered JPEG"; \
	 CLOUDFILM_OHIF_DIR="$$ohif" CLOUDFILM_CODECS_DIR="$$codecs" exec $(BIN)/cloudfilm serve

## Install and run every check: lint, types, import contracts and the whole test suite.
test: install-dev lint unit

lint:
	$(BIN)/ruff check pacs viewer_api ai_plugins migrations tests benchmarks
	$(BIN)/mypy pacs
	$(BIN)/lint-imports

unit:
	$(BIN)/python -m pytest -p no:cacheprovider $(PYTEST_ARGS)

bench:
	$(BIN)/python benchmarks/import_bench.py

clean:
	rm -rf $(VENV) cloudfilm-data .pytest_cache .mypy_cache .ruff_cache
