# Two commands for a fresh machine, each doing its own set-up:
#   make run    runs the embedded default (no network at run time, no API key, CPU)
#   make test   runs the test suite
# The set-up installs the exact versions in requirements/cpu.lock (regenerate: `make lock`).
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip

.PHONY: setup run test test-fast lock lock-check browser bench clean llamacpp vllm

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml requirements/cpu.lock requirements/nodeps.txt
	python3 -m venv $(VENV)
	$(PIP) install -q -r requirements/cpu.lock   # torch==2.13.0 is the local CPU build; any other pulls CUDA
	$(PIP) install -q --no-deps -r requirements/nodeps.txt
	$(PIP) install -q --no-deps -e .
	$(VENV)/bin/webtune fetch-base               # the default's base model, converted once into the model cache
	touch $@

run: setup
	$(VENV)/bin/webtune run $(ARGS)

lock: setup
	scripts/lock.sh

lock-check: setup
	scripts/lock.sh --check

# Debian's chromium + chromedriver for the report's browser test (skipped where they cannot be installed).
browser:
	@if { [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; } && [ "$$(id -u)" = "0" ] && command -v apt-get >/dev/null; then \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null) \
		|| echo "chromium could not be installed: the browser test will be skipped"; fi

# llama.cpp itself (prebuilt node-llama-cpp, ~20 s, 85 MB, Node 20+) that reads GGUF exports back.
llamacpp: setup
	$(PY) -m webtune.deploy.llamacpp

# vLLM in its own environment (.venv-vllm; its pins clash with ours), reused when present.
vllm:
	scripts/vllm_env.sh

test: setup browser lock-check llamacpp
	$(PY) -m pytest -q

test-fast: setup
	$(PY) -m pytest -q -m "not slow"

clean:
	rm -rf $(VENV) runs/* .pytest_cache
