"""One module per pipeline stage: read, decode, label (with models), postprocess, sinks."""
