"""The output tables, defined once.

Every sink (Parquet, BigQuery) and the README's schema table are
derived from these pyarrow schemas, so a column cannot be added in one place and
forgotten in another. Field descriptions live in the schema metadata so they
travel with the files and feed the docs.
"""
from __future__ import annotations

import pyarrow as pa

LABEL_STRUCT = pa.struct([
    pa.field('index', pa.int32(), nullable=False),
    pa.field('label', pa.string(), nullable=False),
    pa.field('score', pa.float32(), nullable=False),
])


def _field(name: str, type_: pa.DataType, doc: str, nullable: bool = False) -> pa.Field:
    return pa.field(name, type_, nullable=nullable, metadata={'doc': doc})


LABELS_SCHEMA = pa.schema([
    _field('uri', pa.string(), 'The image URI: as listed in a manifest (relative ones '
           'joined to the manifest\'s folder), or as matched by a directory or glob.'),
    _field('labels', pa.list_(pa.field('item', LABEL_STRUCT, nullable=False)),
           'Top-k classes, best first: class index (0-999 for ImageNet), '
           'human-readable name, probability.'),
    _field('top_label', pa.string(), 'The best label (labels[0].label), for grouping and '
           'clustering.'),
    _field('embedding', pa.list_(pa.field('item', pa.float32(), nullable=False)),
           'The penultimate layer (Inception-v3: 2048-d avg_pool).'),
    _field('model', pa.string(), 'Model name (registry name or file name).'),
    _field('model_id', pa.string(),
           'Fingerprint of the weights and of the settings that change outputs '
           '(resize recipe, precision).'),
    _field('content_sha256', pa.string(), 'SHA-256 of the image bytes.'),
    _field('width', pa.int32(), 'Original width in pixels (after EXIF rotation).'),
    _field('height', pa.int32(), 'Original height in pixels (after EXIF rotation).'),
    _field('run_id', pa.string(), 'Identifier of the run that wrote the row.'),
    _field('processed_at', pa.timestamp('us', tz='UTC'), 'When the row was made.'),
    _field('source_size', pa.int64(), 'Size of the object when it was listed (--skip_existing '
           'runs; else null).', nullable=True),
    _field('source_updated', pa.timestamp('us', tz='UTC'), 'Modification time of the object '
           'when it was listed (--skip_existing runs; else null).', nullable=True),
])

ERRORS_SCHEMA = pa.schema([
    _field('uri', pa.string(), 'The image URI: as listed in a manifest (relative ones '
           'joined to the manifest\'s folder), or as matched by a directory or glob.'),
    _field('stage', pa.string(), 'read, decode, inference or write.'),
    _field('error', pa.string(), 'Stable error class (see the README table).'),
    _field('message', pa.string(), 'Human explanation, with the cause.'),
    _field('content_sha256', pa.string(),
           'SHA-256 of the bytes when they were read, else null.', nullable=True),
    _field('model_id', pa.string(), 'Model fingerprint, as in the labels table.'),
    _field('run_id', pa.string(), 'Identifier of the run that wrote the row.'),
    _field('processed_at', pa.timestamp('us', tz='UTC'), 'When the row was made.'),
    _field('source_size', pa.int64(), 'Size of the object when it was listed (--skip_existing '
           'runs; else null).', nullable=True),
    _field('source_updated', pa.timestamp('us', tz='UTC'), 'Modification time of the object '
           'when it was listed (--skip_existing runs; else null).', nullable=True),
])


def schema_markdown(schema: pa.Schema) -> str:
    """A Markdown table of a schema, for the README."""
    lines = ['| column | type | meaning |', '| --- | --- | --- |']
    for f in schema:
        doc = (f.metadata or {}).get(b'doc', b'').decode()
        lines.append(f'| `{f.name}` | `{f.type}` | {doc} |')
    return '\n'.join(lines)
