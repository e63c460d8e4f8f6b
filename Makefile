# The two entry points of the README: `make demo` and `make test`.
# Both create .venv on first use and reuse it afterwards (reinstalling only when
# pyproject.toml changes).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_DIR ?= data/demo
DEMO_CUSTOMERS ?= 20000

.PHONY: demo test lint typecheck unit bench clean-env

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "winback needs Python 3.11 or newer; set PYTHON=python3.x")'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev,postgres]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/winback generate --customers $(DEMO_CUSTOMERS) --seed 7 --out $(DEMO_DIR)
	$(BIN)/winback validate $(DEMO_DIR)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP)
	$(BIN)/pytest

test: lint typecheck unit

clean-env:
	rm -rf $(VENV)
