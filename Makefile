# Targets: env (create .venv, install editable with test extras), test, bench.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: env test bench clean

env: $(VENV)/.installed

$(VENV)/.installed: setup.py
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -e ".[test]"
	touch $@

test: env
	$(PY) -m pytest -q test

bench: env
	$(PY) -m espnet_prune.bin.benchmark_ssl

clean:
	rm -rf $(VENV) *.egg-info
