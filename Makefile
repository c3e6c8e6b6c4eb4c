# The two commands of the README. Both set everything up on a fresh machine:
# the virtual environment is created when missing and the pinned
# dependencies are (re)installed whenever pyproject.toml changes.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

REPORTS ?= reports

.PHONY: run qrs-report test lint typecheck pytest bench clean sysdeps

run: $(STAMP)
	$(BIN)/cardiac-monitor serve --demo

qrs-report: $(STAMP)
	$(BIN)/cardiac-monitor evaluate qrs --records all --peers --json $(REPORTS)/qrs.json --report $(REPORTS)/qrs.png

test: sysdeps $(STAMP) lint typecheck pytest

# Debian packages the browser tests need: headless Chromium and its driver.
sysdeps:
	@if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then \
	  SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	  echo "installing chromium and chromium-driver (Debian packages)"; \
	  $$SUDO apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium chromium-driver; \
	fi

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

pytest: $(STAMP)
	$(BIN)/pytest

bench: $(STAMP)
	$(BIN)/python bench/qrs_speed.py

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis build *.egg-info
