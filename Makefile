# One command each: `make test` (set up + run the test suite), `make demo` (set up + main job).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: setup test demo

$(VENV)/.installed: pyproject.toml setup.py tokpack/_kernels.c
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev,metrics,plot,codecs,ray]'
	touch $@

setup: $(VENV)/.installed

test: setup
	$(PY) -m pytest -q

demo: setup
	PATH="$(abspath $(VENV))/bin:$$PATH" bash scripts/demo.sh
