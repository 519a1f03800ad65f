# streamserve — `make help` lists the targets.
PYTHON ?= python3
VENV ?= .venv
# the product's extras in $(VENV); `make test EXTRAS=faust,registry,dev VENV=.venv-no-onedal`
# runs the suite without oneDAL (its tests skip, auto scores with XGBoost)
EXTRAS ?= faust,registry,onedal,dev
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell echo $(EXTRAS) | cat - pyproject.toml loadgen/pyproject.toml | cksum | cut -d' ' -f1)
FEAST_VENV := .venv-feast
FEAST_VERSION := 0.67.0
FEAST_STAMP := $(FEAST_VENV)/.installed-$(FEAST_VERSION)

.DEFAULT_GOAL := help
.PHONY: help install test unit integration demo bench chaos soak lint format clean

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

# The product (.) with its Faust extra, and the harness (loadgen/: embedded stack, demo, load tools)
$(STAMP): pyproject.toml loadgen/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q -e ".[$(EXTRAS)]" -e "./loadgen[bench]"
	touch $(STAMP)

# Feast itself, in a venv of its own: only the tests that compare the `feast` layout with Feast's
# own writer and reader run it (loadgen/streamserve_loadgen/world/feast_writer.py); never a dependency
$(FEAST_STAMP):
	$(PYTHON) -m venv $(FEAST_VENV)
	$(FEAST_VENV)/bin/python -m pip install -q "feast[redis]==$(FEAST_VERSION)"
	touch $(FEAST_STAMP)

install: $(STAMP) $(FEAST_STAMP) ## Create .venv (streamserve[faust,registry,onedal,dev], the harness) and .venv-feast

test: unit integration ## Run the whole test suite: unit, then integration on the embedded stack

unit: install ## Unit tests: core, pipeline, checkpoint, config (no broker, no Redis)
	$(BIN)/pytest -q -ra tests/unit

# Four at once: the tests mostly wait on brokers and child processes (each xdist worker starts
# its own embedded broker and Redis; every test has its own topics, group and key prefix).
integration: install ## Integration and CLI tests on the embedded broker and Redis, 4 at a time
	$(BIN)/pytest -q -ra -n 4 tests/integration

demo: install ## Embedded stack, demo model, a worker under a ramp of load, live view; prints JSON
	$(BIN)/streamserve-loadgen demo

bench: install ## Benchmark (~10 min): drains against the bare loop and pass-through, far broker, latency and stage times at 1k and 10k events/s, idle CPU, bursts, Avro, Protobuf, exactly-once, Feast
	$(BIN)/streamserve-loadgen bench --out bench-results

chaos: install ## Chaos (~2 min): 300k events, 5 SIGKILLs, 2 Redis outages, a rebalance, per guarantee; audit
	$(BIN)/streamserve-loadgen chaos --out chaos-results

soak: install ## Soak (10 min): steady 5k events/s through one worker, RSS sampled; audit
	$(BIN)/streamserve-loadgen soak --out soak-results

lint: install ## ruff format check, ruff lint, mypy
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	$(BIN)/mypy

format: install ## Apply ruff formatting and autofixes
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean: ## Remove the virtualenv and caches
	rm -rf $(VENV) $(FEAST_VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info
