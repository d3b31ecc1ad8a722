"""Sinks: row dicts -> Parquet files, with the one schema from transforms.schema.

Beam's file sinks write to a temporary folder and rename on success, so a
crashed run never leaves `labels-*` files that look complete.
"""
from __future__ import annotations

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.io.parquetio import WriteToParquet

from transforms.schema import ERRORS_SCHEMA, LABELS_SCHEMA

LABELS_PREFIX = 'labels'
ERRORS_PREFIX = 'errors'
SUFFIX = '.parquet'


def output_pattern(output_dir: str, prefix: str) -> str:
    return FileSystems.join(output_dir, f'{prefix}-*{SUFFIX}')


class _WriteTable(beam.PTransform):
    def __init__(self, output_dir: str, prefix: str, schema, num_shards: int = 0):
        super().__init__()
        self._path = FileSystems.join(output_dir, prefix)
        self._schema = schema
        self._num_shards = num_shards

    def expand(self, rows):
        return rows | 'WriteToParquet' >> WriteToParquet(
            self._path, self._schema, file_name_suffix=SUFFIX, num_shards=self._num_shards,
            record_batch_size=256)


class WriteLabels(_WriteTable):
    """Label rows -> DIR/labels-SSSSS-of-NNNNN.parquet."""

    def __init__(self, output_dir: str, num_shards: int = 0):
        super().__init__(output_dir, LABELS_PREFIX, LABELS_SCHEMA, num_shards)


class WriteErrors(_WriteTable):
    """Error rows -> DIR/errors-SSSSS-of-NNNNN.parquet (a run with no errors writes an empty file)."""

    def __init__(self, output_dir: str, num_shards: int = 0):
        super().__init__(output_dir, ERRORS_PREFIX, ERRORS_SCHEMA, num_shards)
