# imagelabel developer targets.
#   make install                   everything the tests need (the README's first command)
#   make test                      the test suite (the README's second command)
#   make bench                     the throughput benchmark (bench/README.md); a few minutes
#   make bench BENCH_ARGS=--quick  a smoke test of the benchmark scripts
#   make metadata                  regenerate templates/metadata.json from pipeline/options.py
#   make lock                      regenerate templates/requirements.lock from the installed deps
#   make report-example            regenerate the README's report screenshot (docs extra + chromium)
PYTHON ?= python3
BENCH_ARGS ?=

.PHONY: install test bench metadata lock report-example

# .venv: imagelabel with its test tools (the GCS emulator among them) and OpenVINO.
# .venv-bq: the BigQuery emulator, whose exact pins clash with ours.
# chromium: Debian's, for the report's browser test (installed only where missing).
install:
	$(PYTHON) -m venv .venv && .venv/bin/pip install -e '.[test,openvino]'
	$(PYTHON) -m venv .venv-bq && .venv-bq/bin/pip install -r tests/bqemulator-requirements.txt
	.venv-bq/bin/python tests/install_duckdb_extensions.py
	command -v chromium >/dev/null || (apt-get update && apt-get install -y --no-install-recommends chromium)

test:
	.venv/bin/python -m pytest

# The bench extra: tensorflow-hub for the anchor (Beam's stock TF handler imports it).
# Installed only when one of its packages is missing (found without importing them).
bench:
	.venv/bin/python -c 'import importlib.util as u, sys; \
		sys.exit(any(u.find_spec(m) is None for m in ("tensorflow_hub", "openvino", "nncf")))' \
		|| .venv/bin/pip install -q -e '.[bench]'
	.venv/bin/python bench/bench.py $(BENCH_ARGS)

metadata:
	.venv/bin/python -m pipeline.template_metadata > templates/metadata.json

lock:
	.venv/bin/python templates/make_lock.py > templates/requirements.lock

report-example:
	.venv/bin/python -m pipeline.report.example
