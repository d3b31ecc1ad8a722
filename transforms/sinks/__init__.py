"""Where rows go: a registry of sinks, chosen by the options.

Each sink (one module each) takes the same common rows and converts them
itself. Adding a sink is one module and one line in `SINKS`.
"""
from __future__ import annotations

import argparse
from typing import Any

from transforms.sinks.base import ERRORS, LABELS, RunInfo, Sink
from transforms.sinks.bigquery import BigQuerySink
from transforms.sinks.parquet import ParquetSink

#: Every sink, in the order they are described. A run writes to each one asked for.
SINKS: tuple[type[Sink], ...] = (
    ParquetSink,
    BigQuerySink,
)


def add_sink_flags(parser: argparse.ArgumentParser) -> None:
    for sink in SINKS:
        sink.add_flags(parser)


def sinks_for(flags: Any, run: RunInfo) -> list[Sink]:
    """The sinks the flags ask for; ValueError if none is."""
    chosen = [s for s in (cls.from_options(flags, run) for cls in SINKS) if s is not None]
    if not chosen:
        raise ValueError('nowhere to write: give ' + ' or '.join(
            cls.enabling_flag for cls in SINKS))
    return chosen


__all__ = ['ERRORS', 'LABELS', 'SINKS', 'RunInfo', 'Sink', 'add_sink_flags', 'sinks_for']
