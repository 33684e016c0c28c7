# Two commands for a fresh machine, each doing its own set-up:
#   make run    runs the embedded default (no network, no API key, CPU)
#   make test   runs the test suite
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip

.PHONY: setup run test test-fast browser bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q torch==2.13.0          # the CPU build; any other version pulls CUDA wheels
	$(PIP) install -q -e '.[all]'
	touch $@

run: setup
	$(VENV)/bin/webtune run $(ARGS)

# Debian's chromium + chromedriver for the report's browser test (skipped where they cannot be installed).
browser:
	@if [ ! -x /usr/bin/chromium ] && [ "$$(id -u)" = "0" ] && command -v apt-get >/dev/null; then \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null) \
		|| echo "chromium could not be installed: the browser test will be skipped"; fi

test: setup browser
	$(PY) -m pytest -q

test-fast: setup
	$(PY) -m pytest -q -m "not slow"

clean:
	rm -rf $(VENV) runs/* .pytest_cache
