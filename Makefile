# Targets: env (create .venv, install editable with test extras), test, demo, bench.
# DEMO_ARGS passes options to the demo, e.g. make demo DEMO_ARGS="--task slu".
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: env test demo bench clean
DEMO_ARGS ?=

env: $(VENV)/.installed

$(VENV)/.installed: setup.py
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -e ".[test]"
	touch $@

test: env
	$(PY) -m pytest -q test

demo: env
	$(PY) -m espnet_prune.bin.demo --output_dir demo $(DEMO_ARGS)

bench: env
	$(PY) -m espnet_prune.bin.benchmark_ssl

clean:
	rm -rf $(VENV) *.egg-info
