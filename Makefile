# The two entry points of the README: `make demo` and `make test`.
# Both create .venv on first use and reuse it afterwards (reinstalling only when
# pyproject.toml changes).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_DIR ?= data/demo
DEMO_CUSTOMERS ?= 20000
DEMO_AS_OF ?= 2025-01-01
DEMO_API_KEY ?= demo-client-key
DEMO_ADMIN_KEY ?= demo-admin-key

.PHONY: demo demo-model test lint typecheck unit clean-env

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "winback needs Python 3.11 or newer; set PYTHON=python3.x")'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev,postgres,spark,compiled]'
	touch $(STAMP)

# The main job on the embedded defaults (SQLite store, ./mlruns): a synthetic world, a trained
# and promoted model, a serving snapshot, then the API in the foreground (Ctrl-C stops it).
demo: demo-model
	@echo "API on http://127.0.0.1:8000 -- try:"
	@echo "  curl -s -H 'X-API-Key: $(DEMO_API_KEY)' -H 'content-type: application/json' \\"
	@echo "       -d '{\"customer_id\": \"c000042\", \"channel\": \"auto\", \"dry_run\": true}' \\"
	@echo "       http://127.0.0.1:8000/v1/recommendations"
	WINBACK_API_KEYS=$(DEMO_API_KEY) WINBACK_ADMIN_KEYS=$(DEMO_ADMIN_KEY) \
	WINBACK_CATALOG_PATH=$(DEMO_DIR)/offers.yaml $(BIN)/winback serve --workers 2

demo-model: $(STAMP)
	$(BIN)/winback generate --customers $(DEMO_CUSTOMERS) --seed 7 --out $(DEMO_DIR)
	$(BIN)/winback validate $(DEMO_DIR)
	$(BIN)/winback train $(DEMO_DIR) --seed 7
	$(BIN)/winback promote $(DEMO_DIR)
	$(BIN)/winback features materialize $(DEMO_DIR) --as-of $(DEMO_AS_OF) \
		--model models:/winback-policy@champion

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
