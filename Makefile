# imagelabel developer targets.
#   make test                      the test suite
#   make bench                     the throughput benchmark (bench/README.md); a few minutes
#   make bench BENCH_ARGS=--quick  a smoke test of the benchmark scripts
#   make report-example            regenerate the README's report screenshot (docs extra + chromium)
PYTHON ?= python3
BENCH_ARGS ?=

.PHONY: test bench report-example

test:
	$(PYTHON) -m pytest

bench:
	$(PYTHON) bench/bench.py $(BENCH_ARGS)

report-example:
	$(PYTHON) docs/report_example.py
