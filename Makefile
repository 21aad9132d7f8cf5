# make demo / make test do their own set-up: create .venv and install everything they use.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed-stamp
PYTEST_ARGS ?=

.PHONY: install demo test lint typecheck bench clean

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch first and pinned: 2.13.0 is the CPU build on this machine's disk; an unpinned
	# torch (or one pulled in by another package) would download a multi-GB CUDA build
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e '.[cpu,export,dev,server]'
	touch $(STAMP)

install: $(STAMP)

demo: install
	HF_HUB_DISABLE_TELEMETRY=1 $(BIN)/python scripts/demo.py

test: install
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check dmeta_embed tests benchmarks scripts
	$(BIN)/mypy dmeta_embed/runtime dmeta_embed/manifest.py dmeta_embed/errors.py

clean:
	rm -rf out .pytest_cache .mypy_cache .ruff_cache
