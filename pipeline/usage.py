"""What every `imagelabel` command shares about bad input: one line, exit 2.

A user who mistypes a flag fixes a flag, not our code, so validation errors are
printed as `imagelabel: error: ...` without a traceback. Kept apart from the
commands so that none of them imports another's private helpers.
"""
from __future__ import annotations

import argparse
import logging
import sys

EXIT_USAGE = 2


class UsageError(ValueError):
    """A mistake in the command line."""


def raise_usage(message: str):
    """argparse's `error` hook: raise instead of printing usage and exiting."""
    raise UsageError(message)


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """--help shows every default, and keeps the epilog's line breaks."""


def usage_error(e: Exception) -> int:
    print(f'imagelabel: error: {e}', file=sys.stderr)
    return EXIT_USAGE


def setup_logging() -> None:
    log = logging.getLogger('imagelabel')
    if log.handlers:  # main() may run many times in one process (tests, notebooks)
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter('%(asctime)s imagelabel: %(message)s', '%H:%M:%S'))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False
