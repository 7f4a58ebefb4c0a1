# Keel: every target creates and uses .venv/ at the repo root (python3 and make are all a fresh clone needs).
SHELL := bash
.DEFAULT_GOAL := help
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
UV_VERSION := 0.13.8
INSTALLED := $(VENV)/.installed
BASE ?= .git\#branch=main
export PATH := $(CURDIR)/$(BIN):$(PATH)
export UV_NO_PROGRESS := 1

.PHONY: help install gen gen-keel lint breaking test run bench fmt check golden lock clean

help: ## list the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/:.*## /\t/'

$(BIN)/uv:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet uv==$(UV_VERSION)

$(INSTALLED): Makefile $(BIN)/uv requirements.lock pyproject.toml tools/keel/pyproject.toml services/*/pyproject.toml
	$(BIN)/uv pip sync --quiet --python $(BIN)/python requirements.lock
	$(BIN)/uv pip install --quiet --python $(BIN)/python --no-deps -e tools/keel \
	  $(addprefix -e ,$(patsubst %/,%,$(dir $(wildcard services/*/pyproject.toml))))
	@# gen/ is an import root for everything in this repository's venv, whatever its package names
	@# (keel_genroot: a generated test/ folder is merged into the standard library's package test).
	$(BIN)/python -m keel_genroot "$(CURDIR)/gen" > "$$($(BIN)/python -c 'import sysconfig; print(sysconfig.get_path("purelib"))')/keel-gen.pth"
	touch $@

install: $(INSTALLED) ## create .venv and install the locked dependencies

lock: $(BIN)/uv ## re-resolve requirements.lock from the pins in the pyproject.toml files
	$(BIN)/uv pip compile pyproject.toml --group dev --generate-hashes --no-header \
	  --python-version 3.11 --universal --no-emit-package keel -o requirements.lock

gen: $(INSTALLED) ## regenerate gen/ (and Keel's own option/validation modules) and docs/architecture.md from the protos
	$(BIN)/keel gen --workspace tools/keel/keel/protos --out tools/keel --path keel/options --path buf/validate
	$(BIN)/keel gen --workspace . --out gen
	$(BIN)/keel graph --write docs/architecture.md --mermaid gen/system.mmd

lint: $(INSTALLED) ## buf lint + buf format check on proto/
	$(BIN)/buf lint
	$(BIN)/buf format proto --diff --exit-code
	$(BIN)/buf format tools/keel/keel/protos --path tools/keel/keel/protos/keel --diff --exit-code
	$(BIN)/buf format tests/conformance/proto --diff --exit-code

breaking: $(INSTALLED) ## buf breaking against BASE (default .git#branch=main)
	$(BIN)/keel breaking --against '$(BASE)'

fmt: $(INSTALLED) ## format Python and protos
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .
	$(BIN)/buf format -w

check: $(INSTALLED) ## static checks: ruff, mypy --strict, gen drift
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports
	$(BIN)/keel graph --check docs/architecture.md
	$(BIN)/mypy tools/keel/keel tools/keel/keel_genroot.py tools/keel/scripts gen tests/*.py tests/servers/*.py bench/*.py \
	  services/*/src services/*/tests

test: $(INSTALLED) ## run the whole test suite (static checks included)
	$(MAKE) --no-print-directory check lint
	$(BIN)/pytest

golden: $(INSTALLED) ## refresh the generator's golden files (tests/golden/out)
	$(BIN)/python tests/golden/refresh.py

run: gen ## generate, then run every service with readable logs until Ctrl-C; a saved file reloads what it touches
	@$(BIN)/python -m keel.summary gen
	@echo
	@$(BIN)/keel dev --watch

bench: $(INSTALLED) ## benchmarks: codegen, messages, server, gateway, REST in the service, events, gRPC transports and the dev loop (prints ratios)
	$(BIN)/python bench/gen_bench.py
	$(BIN)/python bench/message_bench.py
	command -v h2load >/dev/null && command -v wrk >/dev/null && command -v valgrind >/dev/null || \
	  (apt-get update -qq && apt-get install -y -qq nghttp2-client wrk valgrind)
	$(BIN)/python bench/server_bench.py
	$(BIN)/python bench/server_instructions.py
	$(BIN)/python bench/gateway_bench.py
	$(BIN)/python bench/rest_bench.py
	$(BIN)/python bench/events_bench.py
	$(BIN)/python bench/transport_bench.py
	$(BIN)/python bench/devloop_bench.py

.PHONY: webui
webui: $(INSTALLED) ## fetch the /docs page's browser files again (npm pack at the pinned versions, integrity checked)
	$(BIN)/python tools/keel/scripts/vendor_webui.py

clean: ## remove the virtualenv and caches
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache bench/_work
