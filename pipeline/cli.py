"""The `imagelabel` console command: a thin dispatcher over the commands.

Each command lives in its own module with a `main(argv) -> int`; this file only
names them (`COMMANDS`) and imports the chosen one lazily, so `imagelabel --help`
does not import TensorFlow. `imagelabel run ...` is exactly `python -m
pipeline.run ...` (the launcher Dataflow's Flex Template calls).
"""
from __future__ import annotations

import argparse
import dataclasses
import importlib
import sys
from typing import Sequence

from pipeline import startup_gc
from pipeline.clock import process_start_time
from pipeline.usage import EXIT_USAGE, UsageError, setup_logging, usage_error


@dataclasses.dataclass(frozen=True)
class Command:
    """A subcommand: where its `main(argv) -> int` lives, and one line of help."""
    target: str   # 'module:function'
    help: str
    # Its main takes `started` (summary.json's start-up clock) and its launch calls
    # pipeline.startup_gc.resume(), so as the process's own command it starts with
    # collection paused.
    reports_start_up: bool = False

    def main(self, argv: Sequence[str], started: float | None = None,
             own_process: bool = False) -> int:
        if self.reports_start_up and own_process:
            startup_gc.pause()  # before the command's imports: they are most of the garbage
        module, func = self.target.split(':')
        main = getattr(importlib.import_module(module), func)
        if self.reports_start_up:
            return main(list(argv), started=started)
        return main(list(argv))


#: Every `imagelabel` subcommand. A new command is one module and one line here.
COMMANDS: dict[str, Command] = {
    'run': Command('pipeline.run:main', 'a Beam labeling job over many images',
                   reports_start_up=True),
    'classify': Command('pipeline.classify:main', 'print the labels of a few images'),
    'report': Command('pipeline.report:main', 'an HTML report of a run, with drift (--compare)'),
    'similar': Command('pipeline.similar:main', 'the nearest images to one, by embedding'),
    'eval': Command('pipeline.evaluate:main', 'label a labeled manifest and score top-1/top-5'),
    'models': Command('pipeline.models_table:main', 'the models as a table: size, speed, accuracy'),
    'train-head': Command('pipeline.train_head:main', 'train a softmax head for your own classes'),
}


def main(argv: Sequence[str] | None = None) -> int:
    started, own_process = None, argv is None
    if own_process:  # the process's own command: its start-up counts from the process start
        started = process_start_time()
    argv = list(sys.argv[1:] if argv is None else argv)
    top = argparse.ArgumentParser(
        prog='imagelabel', formatter_class=argparse.RawDescriptionHelpFormatter,
        description='Batch image labeling on Apache Beam and TensorFlow.',
        epilog='commands:\n' + '\n'.join(f'  {name:<12}{c.help}' for name, c in COMMANDS.items())
        + '\n\n`imagelabel COMMAND --help` shows each command\'s flags.')
    top.add_argument('command', choices=list(COMMANDS), help='what to do')
    if not argv or argv[0] in ('-h', '--help'):
        top.print_help()
        return 0 if argv else EXIT_USAGE
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        return usage_error(UsageError(
            f'unknown command {command!r}; use one of {", ".join(COMMANDS)}'))
    setup_logging()
    return COMMANDS[command].main(rest, started, own_process)


if __name__ == '__main__':
    sys.exit(main())
