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
DEMO_PLAY ?= data/demo-play

.PHONY: demo demo-model test lint typecheck unit clean-env

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "winback needs Python 3.11 or newer; set PYTHON=python3.x")'
	@echo "==> setting up $(VENV): winback and its dependencies (MLflow, LightGBM, Spark, ...)."
	@echo "    First run only, typically 4-6 minutes; pip lists each package as it goes."
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --disable-pip-version-check -e '.[dev,postgres,spark,compiled]'
	touch $(STAMP)
	@echo "==> $(VENV) is ready"

# The main job on the embedded defaults (SQLite store, ./mlruns): a synthetic world, a trained
# and promoted model, a serving snapshot, then the API in the foreground (Ctrl-C stops it).
demo: demo-model
	@echo "==> starting the API (2 workers; ready in a few seconds, Ctrl-C stops it)"
	@echo "API on http://127.0.0.1:8000 -- try (more in README.md, 'A tour after make demo'):"
	@echo "  curl -s -H 'X-API-Key: $(DEMO_API_KEY)' -H 'content-type: application/json' \\"
	@echo "       -d '{\"customer_id\": \"c000210\", \"channel\": \"auto\", \"dry_run\": true}' \\"
	@echo "       http://127.0.0.1:8000/v1/recommendations"
	WINBACK_API_KEYS=$(DEMO_API_KEY) WINBACK_ADMIN_KEYS=$(DEMO_ADMIN_KEY) \
	WINBACK_CATALOG_PATH=$(DEMO_DIR)/offers.yaml $(BIN)/winback serve --workers 2

demo-model: $(STAMP)
	@echo "==> 1/6 generating a synthetic retailer: $(DEMO_CUSTOMERS) customers, seed 7 (typically 10 s)"
	$(BIN)/winback generate --customers $(DEMO_CUSTOMERS) --seed 7 --out $(DEMO_DIR)
	@echo "==> 2/6 checking it against the data contract (typically 10 s)"
	$(BIN)/winback validate $(DEMO_DIR)
	@echo "==> 3/6 training the reactivation and offer-response models, logged to MLflow"
	@echo "    (typically 1 minute, 2 on a busy machine; each stage is printed as it starts)"
	$(BIN)/winback train $(DEMO_DIR) --seed 7
	@echo "==> 4/6 promoting the new model to champion if it beats the current one (typically 15 s)"
	$(BIN)/winback promote $(DEMO_DIR)
	@echo "==> 5/6 the serving snapshot as of $(DEMO_AS_OF) with the champion's scores (typically 10 s)"
	$(BIN)/winback features materialize $(DEMO_DIR) --as-of $(DEMO_AS_OF) \
		--model models:/winback-policy@champion
	@echo "==> 6/6 one campaign wave played on the world, which answers from its true response"
	@echo "    model, recorded in its own store $(DEMO_PLAY) for the report (typically 30 s)"
	rm -rf $(DEMO_PLAY)
	WINBACK_DATABASE_URL=sqlite:///$(DEMO_PLAY)/winback.db WINBACK_CATALOG_PATH=$(DEMO_DIR)/offers.yaml \
		$(BIN)/winback world play $(DEMO_DIR) --waves 1 --seed 7 --out $(DEMO_PLAY)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

# The tests marked `serial` (a server started while every CPU is busy) run alone first, so
# their load is the one they create; then two pytest processes share the two cores.
unit: $(STAMP)
	$(BIN)/pytest -m serial
	$(BIN)/pytest -n 2 -m "not serial"

test: lint typecheck unit

clean-env:
	rm -rf $(VENV)
