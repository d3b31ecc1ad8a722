"""`imagelabel train-head`: a softmax for your own classes, on the embeddings a run stored.

The transfer-learning recipe of the Inception tutorial: keep the base model's
penultimate layer (already in every labels row as `embedding`), and train a
small softmax on top of it. The embeddings are read back from the Parquet files,
never recomputed, and joined to LABELS.csv (`uri`, `label`) on `uri`. A stratified,
seeded split is held out for testing; train and test accuracy are printed per epoch,
as in the CIFAR-10 tutorial. The head is saved with its class names, the embedding
width and the base model's `model_id` inside the file (see transforms.head), and
the test accuracy and confusion matrix go to a JSON report beside it.

    imagelabel train-head --embeddings 'out/**/labels-*.parquet' --labels classes.csv \\
        --output head.keras
"""
from __future__ import annotations

import argparse
import csv
import dataclasses
import io
import json
import sys
from typing import Sequence

import numpy as np
from apache_beam.io.filesystems import FileSystems

from pipeline.accuracy import confusion_matrix, majority_rate, stratified_split
from pipeline.usage import HelpFormatter, UsageError, raise_usage, setup_logging, usage_error


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog='imagelabel train-head', formatter_class=HelpFormatter, allow_abbrev=False,
        description='Train a softmax classifier for your own classes on the embeddings '
                    'stored by imagelabel run; label with it through imagelabel run --head.')
    p.add_argument('--embeddings', required=True,
                   help='Labels Parquet files of one model\'s run(s): a glob such as '
                   '\'out/**/labels-*.parquet\' (** includes out/ itself), or a run\'s '
                   'output folder; local or gs://.')
    p.add_argument('--labels', required=True,
                   help='CSV with a uri column and a label column (your class name per image); '
                   'relative URIs are relative to the CSV\'s folder, as in manifests.')
    p.add_argument('--output', required=True,
                   help='The head to write, a .keras file; its report goes beside it (.json).')
    p.add_argument('--hidden', type=int, default=0,
                   help='Units of one hidden ReLU layer before the softmax; 0: none.')
    p.add_argument('--epochs', type=int, default=30, help='Passes over the training split.')
    p.add_argument('--batch_size', type=int, default=32, help='Examples per gradient step.')
    p.add_argument('--learning_rate', type=float, default=1e-3, help='Adam\'s step size.')
    p.add_argument('--test_fraction', type=float, default=0.2,
                   help='Share of each class held out for testing (stratified).')
    p.add_argument('--seed', type=int, default=0, help='Seed of the split and of training.')
    p.add_argument('--overwrite', action='store_true', help='Replace an existing head.')
    p.error = raise_usage
    return p


@dataclasses.dataclass
class Embeddings:
    """Stored embeddings of one base model, one per distinct URI."""
    uris: list[str]
    vectors: np.ndarray   # (n, d) float32
    model: str
    base_model_id: str


def read_embeddings(pattern: str) -> Embeddings:
    """Every labels row the pattern names; ValueError if they are not one model's embeddings."""
    from pipeline.report.data import read_columns
    from transforms.head import base_model_id
    from transforms.listing import SourceKind, expand_source, same_image, source_kind
    from transforms.schema import LABELS_SCHEMA
    from transforms.sinks.layout import is_staged
    if source_kind(pattern) is SourceKind.DIRECTORY:  # a run's folder: its labels files
        pattern = FileSystems.join(pattern.rstrip('/'), '**/labels-*.parquet')
    # The same globbing as run's --input, less what a run has staged and not put in place.
    paths = sorted(p for p in set(expand_source(pattern)) if not is_staged(p))
    if not paths:
        raise ValueError(f'--embeddings {pattern} matches no files')
    seen: dict[str, int] = {}
    uris, vectors, ids, models = [], [], set(), set()
    for path in paths:
        columns = ['uri', 'embedding', 'model', 'model_id']
        try:
            table = read_columns([path], columns, LABELS_SCHEMA, required=columns)
        except Exception as e:  # noqa: BLE001 - not a labels file: one clear line
            why = str(e).removeprefix(f'{path} ') if isinstance(e, ValueError) else ''
            raise ValueError(f'{path} is not a labels Parquet file of imagelabel run '
                             f'({why or type(e).__name__})') from None
        if table.num_rows and table.column('embedding').null_count == table.num_rows:
            raise ValueError(f'{path} holds no embeddings (its model exposed none)')
        for row in table.to_pylist():
            ids.add(base_model_id(row['model_id']))  # every row: a re-labeled copy counts
            models.add(row['model'])
            key = same_image(row['uri'])
            if key in seen:
                continue  # the same image in two runs: one example, not two
            vector = row['embedding'] or []  # None in a file that has some: a width of 0
            if not np.all(np.isfinite(vector)):
                raise ValueError(f'{path}: the embedding of {row["uri"]} is not finite (NaN '
                                 'or infinity); a head cannot learn from it')
            seen[key] = len(uris)
            uris.append(row['uri'])
            vectors.append(vector)
    if len(ids) > 1:
        raise ValueError(f'--embeddings mixes {len(ids)} base models ({", ".join(sorted(ids))}); '
                         'a head learns from one model\'s embeddings: narrow the pattern')
    widths = {len(v) for v in vectors}
    if widths == {0}:
        raise ValueError(f'the rows in {pattern} have no embeddings (the model exposes none)')
    if len(widths) != 1:
        usual = max(widths, key=[len(v) for v in vectors].count)
        odd = next(u for u, v in zip(uris, vectors) if len(v) != usual)
        raise ValueError(f'--embeddings holds embeddings of several widths {sorted(widths)}: '
                         f'{odd} has {len(vectors[uris.index(odd)])} values, most have {usual}')
    return Embeddings(uris, np.asarray(vectors, np.float32), models.pop(), ids.pop())


def read_class_labels(path: str) -> dict[str, str]:
    """uri -> class name from LABELS.csv; ValueError naming the line of a bad row."""
    from transforms.listing import read_text, resolve_relative
    if not FileSystems.exists(path):
        raise ValueError(f'--labels {path} does not exist')
    reader = csv.DictReader(io.StringIO(read_text(path)))
    reader.fieldnames = [c.strip() for c in reader.fieldnames or []]
    if 'uri' not in reader.fieldnames or 'label' not in reader.fieldnames:
        raise ValueError(f'--labels {path} needs a uri and a label column '
                         f'(columns: {reader.fieldnames})')
    labels: dict[str, str] = {}
    for row in reader:
        uri, label = (row.get('uri') or '').strip(), (row.get('label') or '').strip()
        if not uri and not label:
            continue
        if not uri or not label:
            raise ValueError(f'--labels {path} line {reader.line_num}: needs both a uri and a '
                             'label')
        uri = resolve_relative(uri, path)
        if labels.get(uri, label) != label:
            raise ValueError(f'--labels {path} line {reader.line_num}: {uri} is labeled twice, '
                             f'as {labels[uri]!r} and {label!r}')
        labels[uri] = label
    if not labels:
        raise ValueError(f'--labels {path} labels no images')
    return labels


@dataclasses.dataclass
class TrainingSet:
    x: np.ndarray          # (n, d)
    y: np.ndarray          # (n,) class indices into class_names
    uris: list[str]
    class_names: list[str]
    missing: list[str]     # labeled URIs without an embedding
    unlabeled: int         # embeddings without a label (ignored)


def join(labels: dict[str, str], emb: Embeddings) -> TrainingSet:
    """Labeled URIs that have an embedding; the rest go to `missing`, never dropped silently."""
    from transforms.listing import same_image
    by_image = {same_image(uri): i for i, uri in enumerate(emb.uris)}
    row = {u: by_image[same_image(u)] for u in labels if same_image(u) in by_image}
    found = [u for u in labels if u in row]
    missing = sorted(u for u in labels if u not in row)
    if not found:
        raise ValueError(f'none of the {len(labels)} labeled URIs has an embedding (e.g. '
                         f'{missing[0]}); check that --labels and --embeddings name the same '
                         'images, written the same way')
    class_names = sorted({labels[u] for u in found})
    if len(class_names) < 2:
        raise ValueError(f'only one class ({class_names[0]!r}) has images with embeddings; '
                         'a classifier needs two or more')
    index = {c: i for i, c in enumerate(class_names)}
    y = np.array([index[labels[u]] for u in found], np.int64)
    small = [c for c in class_names if (y == index[c]).sum() < 2]
    if small:
        raise ValueError(f'class {small[0]!r} has fewer than 2 images with embeddings; the '
                         'stratified split needs 2 or more per class')
    return TrainingSet(emb.vectors[[row[u] for u in found]], y, found, class_names, missing,
                       unlabeled=len(emb.uris) - len(found))


def build_head(dim: int, classes: int, hidden: int):
    """Dense softmax (optionally after one ReLU layer): the tutorials' retraining head."""
    import keras
    layers = [keras.Input((dim,), name='embedding')]
    if hidden:
        layers.append(keras.layers.Dense(hidden, activation='relu', name='hidden'))
    layers.append(keras.layers.Dense(classes, activation='softmax', name='classes'))
    return keras.Sequential(layers, name='imagelabel_head')


def report_path(head_path: str) -> str:
    """head.keras -> head.json, beside it."""
    return head_path[:-len('.keras')] + '.json'


def train(args: argparse.Namespace) -> dict:
    from transforms.models.tf_import import import_tensorflow
    import_tensorflow()
    import keras
    from transforms.head import HeadInfo, load_head, save_head
    if not args.output.endswith('.keras'):
        raise UsageError(f'--output {args.output} must end in .keras')
    for name in ('epochs', 'batch_size'):
        if getattr(args, name) < 1:
            raise UsageError(f'--{name} must be a positive integer, got {getattr(args, name)}')
    if args.hidden < 0:
        raise UsageError(f'--hidden must be 0 (no hidden layer) or more, got {args.hidden}')
    if not 0 < args.test_fraction < 1:
        raise UsageError(f'--test_fraction must be between 0 and 1, got {args.test_fraction}')
    if FileSystems.exists(args.output) and not args.overwrite:
        raise UsageError(f'--output {args.output} exists; pass --overwrite to replace it')
    labels = read_class_labels(args.labels)  # first: a small file, the embeddings may be GBs
    emb = read_embeddings(args.embeddings)
    data = join(labels, emb)
    print(f'{len(data.uris)} labeled images with {data.x.shape[1]}-d embeddings of {emb.model} '
          f'in {len(data.class_names)} classes; {data.unlabeled} unlabeled embeddings ignored')
    if data.missing:
        print(f'{len(data.missing)} labeled URIs have no embedding in --embeddings, e.g. '
              f'{data.missing[0]} (all are listed in the report)')
    train_idx, test_idx = stratified_split(data.y, args.test_fraction, args.seed)
    x_train, y_train = data.x[train_idx], data.y[train_idx]
    x_test, y_test = data.x[test_idx], data.y[test_idx]
    print(f'train {len(train_idx)}, test {len(test_idx)} images (stratified, seed {args.seed}); '
          f'majority-class rate on test {majority_rate(y_test):.4f}')

    keras.utils.set_random_seed(args.seed)
    model = build_head(data.x.shape[1], len(data.class_names), args.hidden)
    model.compile(optimizer=keras.optimizers.Adam(args.learning_rate),
                  loss='sparse_categorical_crossentropy', metrics=['accuracy'])
    width = len(str(args.epochs))

    class PrintEpoch(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            logs = logs or {}
            print(f'epoch {epoch + 1:>{width}}/{args.epochs}  loss {logs["loss"]:.4f}  '
                  f'train accuracy {logs["accuracy"]:.4f}  test accuracy '
                  f'{logs["val_accuracy"]:.4f}', flush=True)

    history = model.fit(x_train, y_train, epochs=args.epochs, batch_size=args.batch_size,
                        validation_data=(x_test, y_test), shuffle=True, verbose=0,
                        callbacks=[PrintEpoch()])
    if not np.isfinite(history.history['loss'][-1]):
        raise ValueError(f'training diverged (loss {history.history["loss"][-1]}); nothing '
                         f'saved: try a smaller --learning_rate than {args.learning_rate}')
    info = HeadInfo(class_names=tuple(data.class_names), embedding_dim=int(data.x.shape[1]),
                    base_model_id=emb.base_model_id, base_model=emb.model,
                    hidden_units=args.hidden)
    sha = save_head(model, info, args.output)
    # Scored by the saved head's own numpy forward pass: the figures are the head run --head uses.
    head = load_head(args.output)
    test_pred = head.predict(x_test).argmax(axis=1)
    train_pred = head.predict(x_train).argmax(axis=1)
    report = {
        'head': args.output, 'head_sha256': sha,
        'test_accuracy': float((test_pred == y_test).mean()),
        'train_accuracy': float((train_pred == y_train).mean()),
        'majority_rate': majority_rate(y_test),
        'train_images': int(len(train_idx)), 'test_images': int(len(test_idx)),
        'confusion_matrix': confusion_matrix(y_test, test_pred, len(data.class_names)).tolist(),
        'confusion_matrix_axes': 'rows: true class, columns: predicted class, in class_names order',
        'class_images': {c: int((data.y == i).sum()) for i, c in enumerate(data.class_names)},
        'missing_embeddings': data.missing,
        'epochs': [{'epoch': i + 1, 'loss': history.history['loss'][i],
                    'train_accuracy': history.history['accuracy'][i],
                    'test_accuracy': history.history['val_accuracy'][i]}
                   for i in range(len(history.history['loss']))],
        'settings': {'hidden': args.hidden, 'epochs': args.epochs, 'batch_size': args.batch_size,
                     'learning_rate': args.learning_rate, 'test_fraction': args.test_fraction,
                     'seed': args.seed, 'embeddings': args.embeddings, 'labels': args.labels},
    } | info.to_json()
    with FileSystems.create(report_path(args.output)) as f:
        f.write(json.dumps(report, indent=2).encode())
    return report


def main(argv: Sequence[str]) -> int:
    setup_logging()
    try:
        args = parser().parse_args(list(argv))
        report = train(args)
    except ValueError as e:  # UsageError, and bad embeddings, labels or heads
        return usage_error(e)
    print(f'test accuracy {report["test_accuracy"]:.4f} on {report["test_images"]} images '
          f'(majority-class rate {report["majority_rate"]:.4f})')
    print(f'head   -> {args.output} (classes: {", ".join(report["class_names"])}; base '
          f'{report["base_model"]}, model_id {report["base_model_id"]})')
    print(f'report -> {report_path(args.output)}')
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
