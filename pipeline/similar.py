"""`imagelabel similar`: the k nearest images of a run to one image, by embedding cosine.

The embeddings are most of a run's bytes (a million 2048-d rows are 8 GB of
float32), so they are streamed in record batches and only a running top-k is
kept: memory is one Parquet row group plus one batch, whatever the run's size.
Embeddings from different models are not comparable, so only rows of the
query's base model are searched (a run through a `--head` stores its base
model's embedding, so its rows count as the base model's), and `--image` (a new
image, embedded on the fly) is refused unless the model given reproduces the
run's base model_id exactly. A row whose embedding is not finite is not a
neighbour of anything: it is left out and counted.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from typing import Iterable, Iterator, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.report import data
from pipeline.usage import HelpFormatter, UsageError, raise_usage, usage_error
from transforms.decode import ResizeRecipe
from transforms.head import HEAD_MARK, base_model_id
from transforms.listing import same_image

BATCH_ROWS = 4096
COLUMNS = ['uri', 'embedding', 'top_label', 'model_id']


@dataclasses.dataclass(frozen=True)
class Neighbour:
    rank: int
    uri: str
    similarity: float
    top_label: str


@dataclasses.dataclass(frozen=True)
class Query:
    """What to search for: an embedding, the model it came from, and what to leave out."""
    label: str              # the URI, or the --image path
    vector: np.ndarray      # (d,) float32
    model_id: str
    top_label: str
    exclude_uri: str | None  # the query's own row, when it is one


@dataclasses.dataclass(frozen=True)
class Chunk:
    """A batch of candidate rows of one model: URIs, top labels, embeddings (n, d)."""
    uris: list[str]
    top_labels: list[str]
    embeddings: np.ndarray


def embedding_matrix(column: pa.Array) -> np.ndarray:
    """A list<float> column of equal-length rows -> (n, d) float32, without a Python loop
    and, for a plain float32 column, without a copy."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    n = len(column)
    if n == 0:
        return np.zeros((0, 0), np.float32)
    offsets = column.offsets.to_numpy()
    lengths = np.diff(offsets)
    d = int(lengths[0])
    if (lengths != d).any():
        raise ValueError(f'embeddings of one model have different lengths ({sorted(set(lengths))})')
    values = np.asarray(column.flatten().to_numpy(zero_copy_only=False), dtype=np.float32)
    return values.reshape(n, d)


def cosine(matrix: np.ndarray, query: np.ndarray) -> np.ndarray:
    """Cosine similarity of each row to `query`; 0 for a zero row or query, NaN for a row
    that is not finite. One pass over the matrix (a product and the row norms), no
    normalised copy of it."""
    q_norm = float(np.linalg.norm(query))
    with np.errstate(over='ignore', invalid='ignore'):
        norms = np.sqrt(np.einsum('ij,ij->i', matrix, matrix))
        dots = matrix @ np.asarray(query, np.float32)
    with np.errstate(divide='ignore', invalid='ignore'):
        sims = np.where(norms > 0, dots / (norms * q_norm), 0.0) if q_norm > 0 else \
            np.zeros(len(matrix))
    sims[~np.isfinite(norms)] = np.nan  # NaN > 0 is False: without this, it would score 0
    return np.clip(sims, -1.0, 1.0)  # float rounding gives 1.0000001


def nearest(query: np.ndarray, chunks: Iterable[Chunk], k: int,
            exclude_uri: str | None = None, not_finite: list[int] | None = None
            ) -> list[Neighbour]:
    """The k images most cosine-similar to `query`, best first (ties: by URI).

    An image with several rows (labeled on several dates, or through a head and without)
    is listed once, with its best row (the first read, among equals). Pure over its
    chunks: keeps only the best k images seen so far between chunks. Rows whose
    embedding is not finite are left out, and counted in `not_finite[0]`.
    """
    q = np.asarray(query, np.float32)
    if not np.all(np.isfinite(q)):
        raise ValueError('the query\'s embedding is not finite (NaN or infinity): it is '
                         'similar to nothing')
    best_sim = np.zeros(0, np.float32)
    best_uri: list[str] = []
    best_label: list[str] = []
    for chunk in chunks:
        if not len(chunk.uris):
            continue
        if chunk.embeddings.shape[1] != q.shape[0]:
            raise ValueError(f'the run\'s embeddings are {chunk.embeddings.shape[1]}-d but the '
                             f'query\'s is {q.shape[0]}-d')
        sims = cosine(chunk.embeddings, q)
        keep = np.isfinite(sims)
        if not_finite is not None:
            not_finite[0] += int((~keep).sum())
        if exclude_uri is not None:
            keep &= np.asarray([u != exclude_uri for u in chunk.uris])
        idx = np.flatnonzero(keep)
        if len(idx) > k:  # the rows of the k best images, and every row tied with the k-th
            images: set[str] = set()
            for i in idx[np.argsort(-sims[idx], kind='stable')]:
                images.add(chunk.uris[i])
                if len(images) == k:
                    idx = idx[sims[idx] >= sims[i]]
                    break
        sim = np.concatenate([best_sim, sims[idx]])
        uris = best_uri + [chunk.uris[i] for i in idx]
        labels = best_label + [chunk.top_labels[i] for i in idx]
        order, listed = [], set()
        for i in sorted(range(len(sim)), key=lambda i: (-float(sim[i]), uris[i], i)):
            if uris[i] not in listed:  # an image's best row, the first read among equals
                listed.add(uris[i])
                order.append(i)
                if len(order) == k:
                    break
        best_sim = sim[order]
        best_uri = [uris[i] for i in order]
        best_label = [labels[i] for i in order]
    return [Neighbour(rank + 1, u, float(s), l)
            for rank, (u, s, l) in enumerate(zip(best_uri, best_sim, best_label))]


def chunks_of(files: data.RunFiles, model_id: str, skipped: list[int]) -> Iterator[Chunk]:
    """Rows of base model `model_id`, through a head or not, in batches; counts the rows
    of other models in `skipped`."""
    for batch in data.iter_label_batches(files, COLUMNS, BATCH_ROWS):
        table = pa.Table.from_batches([batch])
        if 'top_label' in table.column_names:
            top = table.column('top_label')
        else:  # an output older than the column
            top = data.top_label_from_labels(table.column('labels'))
        table = table.append_column('top', top)
        ids = table.column('model_id')
        same = pc.or_(pc.equal(ids, model_id), pc.starts_with(ids, model_id + HEAD_MARK))
        mine = table if pc.all(same).as_py() else table.filter(same)  # filtering copies
        skipped[0] += table.num_rows - mine.num_rows
        yield Chunk(mine.column('uri').to_pylist(), mine.column('top').to_pylist(),
                    embedding_matrix(mine.column('embedding')))


def find_row(files: data.RunFiles, uri: str) -> dict | None:
    """The labels row of `uri` (exactly as stored, or as an absolute, normal local path)."""
    candidates = [uri] + ([same_image(uri)] if '://' not in uri else [])
    return data.find_label_row(files, candidates, COLUMNS)


def query_from_uri(files: data.RunFiles, uri: str) -> Query:
    row = find_row(files, uri)
    if row is None:
        errors = data.read_errors(files, ['uri', 'stage', 'error'])
        failed = errors.filter(pc.equal(errors.column('uri'), uri)).to_pylist()
        if failed:
            raise UsageError(f'{uri} failed in the run ({failed[0]["stage"]}/'
                             f'{failed[0]["error"]}), so it has no embedding')
        raise UsageError(f'{uri} is not a labeled image of the run in {files.output}; '
                         'give a URI exactly as in the labels table\'s uri column')
    vector = np.asarray(row['embedding'], np.float32)
    if vector.size == 0:
        raise UsageError('the run\'s model wrote no embedding (0-d); similar needs one')
    return Query(uri, vector, base_model_id(row['model_id']), row.get('top_label') or '',
                 row['uri'])


def run_models(files: data.RunFiles) -> tuple[list[str], list[str]]:
    """(model names, model_ids) of the run: summary.json, else the rows' own columns."""
    summaries = data.read_summaries(files)
    table = data.read_labels(files, ['model', 'model_id'])
    names = {s['model'] for s in summaries if s.get('model')} | {
        v for v in pc.unique(table.column('model')).to_pylist() if v}
    ids = {v for v in pc.unique(table.column('model_id')).to_pylist() if v}
    return sorted(names), sorted(ids)


def query_from_image(files: data.RunFiles, args: argparse.Namespace) -> Query:
    """Embed a new image with the run's model; refuse any model that is not the run's."""
    from transforms.decode import decode_image
    from transforms.errors import ImageError
    from transforms.label import load_labeled_model
    from transforms.models import REGISTRY, resolve_spec
    from transforms.read import DEFAULT_MAX_BYTES, read_image_bytes

    names, ids = run_models(files)
    model = args.model
    if model is None:
        named = [n for n in names if n in REGISTRY]
        if len(names) != 1 or not named:
            raise UsageError(f'the run used {", ".join(names) or "an unknown model"}, a model '
                             'file: pass --model PATH to that same file')
        model = named[0]
    spec = resolve_spec(model, weights=args.weights, labels=args.labels)
    loaded = load_labeled_model(spec, batch_size=1, precision=args.precision, threads=None,
                                recipe=args.resize)
    bases = sorted({base_model_id(i) for i in ids})  # a head keeps its base's embedding
    if loaded.model_id not in bases:
        raise UsageError(f'--model {model} with --resize {args.resize} --precision '
                         f'{args.precision} has model_id {loaded.model_id}, but the run\'s rows '
                         f'have {", ".join(bases)}: embeddings of different models are not '
                         'comparable; pass the model, --resize and --precision the run used')
    try:
        image = read_image_bytes(args.image, max_bytes=DEFAULT_MAX_BYTES)
        pixels = decode_image(image.data, loaded.runtime.input_size,
                              recipe=ResizeRecipe(args.resize)).pixels
    except ImageError as e:
        raise UsageError(f'--image {args.image}: {e.stage}/{e.error}: {e.message}') from e
    scores = loaded.predict(pixels[np.newaxis])
    vector = np.asarray(scores.embeddings[0], np.float32)
    if vector.size == 0:
        raise UsageError(f'{model} has no embedding output; similar needs one')
    top = loaded.labels[int(np.argmax(scores.probabilities[0]))]
    return Query(args.image, vector, loaded.model_id, top, None)


def parser() -> argparse.ArgumentParser:
    from pipeline.options import MODEL_HELP  # imports Beam's sinks: only when parsing
    p = argparse.ArgumentParser(
        prog='imagelabel similar', formatter_class=HelpFormatter, allow_abbrev=False,
        description='The k images of a run nearest to one image, by cosine similarity of '
                    'the embeddings: an image of the run (--uri), or a new one (--image, '
                    'embedded with the run\'s model).')
    p.add_argument('--output', required=True, help='The run\'s --output folder (local or gs://).')
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument('--uri', help='An image of the run, as in the labels table\'s uri column.')
    which.add_argument('--image', help='A new image (local or gs://), embedded on the fly.')
    p.add_argument('--k', type=int, default=10, help='How many neighbours.')
    p.add_argument('--format', choices=['text', 'json'], default='text', help='Output format.')
    p.add_argument('--model', default=None,
                   help='With --image: the run\'s model (default: the run\'s, when it is a '
                        'named model). ' + MODEL_HELP)
    p.add_argument('--weights', default=None, help='With --image: weights of a named model.')
    p.add_argument('--labels', default=None, help='With --image: the run\'s class names file.')
    p.add_argument('--resize', default=ResizeRecipe.CROP.value,
                   choices=[r.value for r in ResizeRecipe],
                   help='With --image: the resize recipe the run used (part of model_id).')
    p.add_argument('--precision', default='float32', choices=['float32', 'bf16'],
                   help='With --image: the precision the run used (part of model_id).')
    p.error = raise_usage
    return p


def render_text(query: Query, rows: Sequence[Neighbour], searched: int) -> str:
    width = max([len('top label')] + [len(r.top_label) for r in rows])
    lines = [f'nearest to {query.label} (top label {query.top_label}; {searched} rows of '
             f'model_id {query.model_id} searched)',
             f'{"rank":>4}  {"similarity":>10}  {"top label":<{width}}  uri']
    lines += [f'{r.rank:>4}  {r.similarity:>10.5f}  {r.top_label:<{width}}  {r.uri}'
              for r in rows]
    return '\n'.join(lines)


def main(argv: Sequence[str]) -> int:
    try:
        args = parser().parse_args(list(argv))
        if args.k < 1:
            raise UsageError(f'--k must be a positive integer, got {args.k}')
        files = data.find_run(args.output)
        if not files.labels:
            raise UsageError(f'--output {args.output} has no labels-*.parquet: nothing to search')
        data.check_label_files(files, ['uri', 'embedding', 'model_id', 'top_label'])
        query = query_from_uri(files, args.uri) if args.uri else query_from_image(files, args)
        skipped = [0]
        seen = [0]
        not_finite = [0]

        def counted(chunks: Iterable[Chunk]) -> Iterator[Chunk]:
            for c in chunks:
                seen[0] += len(c.uris)
                yield c

        rows = nearest(query.vector, counted(chunks_of(files, query.model_id, skipped)), args.k,
                       exclude_uri=query.exclude_uri, not_finite=not_finite)
    except ValueError as e:
        return usage_error(e)
    if skipped[0]:
        print(f'imagelabel: {skipped[0]} rows of other model_ids were not searched',
              file=sys.stderr)
    if not_finite[0]:
        print(f'imagelabel: {not_finite[0]} rows with an embedding that is not finite were '
              'left out', file=sys.stderr)
    if args.format == 'json':
        print(json.dumps([dataclasses.asdict(r) for r in rows], indent=2))
    else:
        print(render_text(query, rows, seen[0]))
    return 0
