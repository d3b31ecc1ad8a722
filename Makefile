# imagelabel developer targets.
#   make test                      the test suite
#   make bench                     the throughput benchmark (bench/README.md); a few minutes
#   make bench BENCH_ARGS=--quick  a smoke test of the benchmark scripts
#   make metadata                  regenerate templates/metadata.json from pipeline/options.py
#   make lock                      regenerate templates/requirements.lock from the installed deps
PYTHON ?= python3
BENCH_ARGS ?=

.PHONY: test bench metadata lock

test:
	$(PYTHON) -m pytest

bench:
	$(PYTHON) bench/bench.py $(BENCH_ARGS)

metadata:
	$(PYTHON) -m pipeline.template_metadata > templates/metadata.json

lock:
	$(PYTHON) templates/make_lock.py > templates/requirements.lock
