"""The sink contract: every output (Parquet, BigQuery, the next one) looks the same.

A sink takes the same common rows as every other sink (plain dicts, built by
`transforms.postprocess`, with numpy arrays and datetimes in them) and converts
them itself to what its store wants. The launcher only calls the methods below,
in this order: `from_options` (is it asked for? flags valid?), `check` on every
sink (at launch: create or check the destination, fail fast), then `clear` on
every sink (empty the date a re-run replaces; only once all passed, so a refused
launch deletes nothing; sinks whose clear may be refused go first), `expand`
inside the graph, and `written` after the run for the summary.

A sink that can replace the date's earlier rows once its own are written does so
inside `expand` and leaves `clear` alone (Parquet stages its files and moves them in:
`staging.publish_staged`), so a re-run that fails leaves the date as it was; `clear`
is for stores that cannot (BigQuery).
"""
from __future__ import annotations

import abc
import argparse
import dataclasses
from typing import Any, ClassVar

import apache_beam as beam

LABELS = 'labels'
ERRORS = 'errors'


@dataclasses.dataclass(frozen=True)
class RunInfo:
    """What every sink may need to know about the run, beyond the rows."""
    run_id: str
    run_date: str          # YYYY-MM-DD (UTC): the partition the rows go to
    local: bool            # a local runner (the launcher waits for the job)


class Sink(beam.PTransform, abc.ABC):
    """Writes {'labels': rows, 'errors': rows} somewhere, converting the rows itself."""

    #: The flag that turns this sink on (used in "give --output or ..." messages).
    enabling_flag: ClassVar[str]
    #: Whether `clear` may be refused after every `check` passed (a remote DELETE, e.g.
    #: BigQuery's while streamed rows are still buffered): such sinks clear first, so a
    #: refusal there costs no other sink its rows.
    clear_may_fail: ClassVar[bool] = False

    @classmethod
    @abc.abstractmethod
    def add_flags(cls, parser: argparse.ArgumentParser) -> None:
        """Declare this sink's flags (all of them, so --help and metadata.json list them)."""

    @classmethod
    @abc.abstractmethod
    def from_options(cls, flags: Any, run: RunInfo) -> 'Sink | None':
        """The sink, if its enabling flag is set; ValueError for contradictory flags."""

    def check(self) -> None:
        """At launch: create or check the destination; ValueError (one line) if unusable.

        Must change nothing a refused launch would regret: the launcher checks every
        sink before it clears any (`clear`), so one sink's refusal never costs another
        sink's earlier rows.
        """

    def clear(self) -> None:
        """At launch, once every sink passed `check`: empty what this run replaces (its
        date's partition), so a re-run of a date leaves no duplicates. Nothing by
        default: better, where the store allows, to replace after the write (above)."""

    @abc.abstractmethod
    def describe(self) -> str:
        """Where the rows go, for people."""

    def written(self) -> dict[str, list[str]]:
        """After a local run: table name -> the files or tables written."""
        return {}

    @abc.abstractmethod
    def expand(self, tables: dict[str, beam.PCollection]):
        """tables['labels'] and tables['errors'] -> written."""
