"""One module per pipeline stage: read, decode, label (with models), postprocess, sinks."""

from transforms.gcp import configure_emulators as _configure_emulators

# Every process that runs our code (the launcher, each worker) honours
# STORAGE_EMULATOR_HOST / BIGQUERY_EMULATOR_HOST before it builds a client.
try:
    _configure_emulators()
except ValueError:  # a malformed setting: the launcher says so in one line (launch.prepare)
    pass
