# Targets: env (create .venv, install editable with test extras from the lock), check, test (lint
# and every test), test-fast (lint and the tests not marked slow), both in TEST_WORKERS parallel
# pytest-xdist workers (make test TEST_WORKERS=0 runs in one process),
# lock (re-resolve setup.py's ranges in a scratch venv and pin the result), demo, paper, bench, bench-gpu, pretrain,
# standin.
# DEMO_ARGS passes options to the demo, e.g. make demo DEMO_ARGS="--task slu".
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# Every package of the tested environment, pinned; `make env` installs with it as constraints.
LOCK := espnet_prune/constraints.txt
# pytest-xdist workers, one per core of the 2-core test machine; --dist loadfile keeps each test
# file in one worker, so its module-scoped fixtures (ESPnet training runs) are built once; the
# files run in the order the conftest gives (those with slow tests first), not by test count; the
# 25 slowest tests are listed at the end (what to trim when the suite grows).
TEST_WORKERS ?= 2
PYTEST := $(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder --durations=25

.PHONY: env check test test-fast lock demo paper bench bench-gpu pretrain standin clean
DEMO_ARGS ?=

env: $(VENV)/.installed

$(VENV)/.installed: setup.py $(LOCK)
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -c $(LOCK) -e ".[test]"
	$(PY) -m espnet_prune --check
	touch $@

check: env
	$(PY) -m espnet_prune --check

test: env
	$(PY) -m espnet_prune --check
	$(VENV)/bin/ruff check .
	$(PYTEST) test

# The quick loop: lint and every test but the end-to-end ones (marked slow; see setup.cfg).
test-fast: env
	$(VENV)/bin/ruff check .
	$(PYTEST) -m "not slow" test

lock:
	rm -rf .lock-venv
	$(PYTHON) -m venv .lock-venv
	.lock-venv/bin/python -m pip install -e ".[test]"
	.lock-venv/bin/python -m espnet_prune --check
	{ echo "# espnet_prune's tested environment: every package pinned (written by 'make lock' from"; \
	  echo "# setup.py's ranges, Python $$(.lock-venv/bin/python -c 'import platform; print(platform.python_version())'))."; \
	  echo "# Install with: pip install -c espnet_prune/constraints.txt -e '.[test]'"; \
	  .lock-venv/bin/python -m pip freeze --exclude-editable; } > $(LOCK).new
	mv $(LOCK).new $(LOCK)
	rm -rf .lock-venv

demo: env
	$(PY) -m espnet_prune.bin.demo --output_dir demo $(DEMO_ARGS)

# The HJ-Pruning paper's comparison: every method at MAC ratios 0.9/0.7/0.5, several seeds.
paper: env
	$(PY) -m espnet_prune.bin.demo --output_dir demo_paper --size paper $(DEMO_ARGS)

# The demo's self-supervised SSL stand-in, committed in $(STANDIN) (CI does not rerun this): unlabelled
# audio apart from the default demo corpus, then HuBERT-style pretraining on one thread (the same
# torch version gives the same file).
STANDIN := egs2/espeak_demo/ssl_standin
PRETRAIN_ARGS ?= --steps 1200
pretrain: env
	rm -rf $(STANDIN)/audio
	$(PY) -m espnet_prune.demo.corpus --unlabelled 3000 --output_dir $(STANDIN)/audio
	$(PY) -m espnet_prune.bin.pretrain_ssl --arch egs2/espeak_demo/asr1/conf/train_asr_ssl_standin.yaml \
		--data_dir $(STANDIN)/audio --output_dir $(STANDIN) --num_threads 1 $(PRETRAIN_ARGS)

# The default demo's CTC stand-in, committed in $(STANDIN)/ctc (CI does not rerun this): the stand-in
# stage of a default-corpus run with --standin ctc (one dense fine-tuning comes with it).
standin: env
	$(PY) -m espnet_prune.bin.demo --output_dir demo_standin --standin ctc --systems dense --lm_prunings "" \
		--save_standin $(STANDIN)/ctc

bench: env
	$(PY) -m espnet_prune.bin.benchmark_ssl

# On a GPU (under 5 minutes): frontend latency fp32/bf16 at batch 1 and 16, the whole decode,
# the training-step overhead of pruning; bench_gpu/results.json and bench_gpu/results.md.
bench-gpu: env
	$(PY) -m espnet_prune.bin.benchmark_gpu --device cuda --output_dir bench_gpu

clean:
	rm -rf $(VENV) .lock-venv *.egg-info
