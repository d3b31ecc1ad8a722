"""The Flex Template launcher's entry point (FLEX_TEMPLATE_PYTHON_PY_FILE in the Dockerfile).

Thin on purpose: the launcher passes every template parameter as `--name=value`;
`template_argv` turns the store_true ones (`--overwrite=true`) into the flags
argparse takes, and `pipeline.run.main` (the same entry point as `python -m
pipeline.run` and `imagelabel run`) does the rest. On Dataflow it builds the job
and returns without waiting, as a Flex Template must.
"""
import sys

from pipeline import startup_gc

if __name__ == '__main__':
    startup_gc.pause()  # the launcher process, as `imagelabel run`: until the job is submitted

from pipeline.run import main  # noqa: E402 - after the pause: most of the launch's objects
from pipeline.template_metadata import template_argv  # noqa: E402

if __name__ == '__main__':
    sys.exit(main(template_argv(sys.argv[1:])))
