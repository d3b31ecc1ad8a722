"""A classifier head: a small softmax over a base model's embedding, for your own classes.

`imagelabel train-head` trains one on stored embeddings; `imagelabel run --head`
applies it inside the model call, right after the base model's forward pass,
so custom classes cost no second pass and no second pipeline.

A head is only meaningful on the embeddings it learned from, so it carries, inside
its own `.keras` file (an extra `imagelabel_head.json` entry in the zip, which Keras
ignores), its class names, the embedding width and the `model_id` of the base
model. Keeping them inside the file, not beside it, means a copied head cannot
lose or swap its class names. The launcher refuses a head whose base differs.

The head runs as plain numpy (Dense layers: relu, then softmax): it is a few
thousand multiply-adds per image, and numpy keeps it thread-safe and identical
under every runtime, including LiteRT workers that never start TensorFlow.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import tempfile
import zipfile
from typing import Sequence

import numpy as np
from apache_beam.io.filesystems import FileSystems

METADATA_ENTRY = 'imagelabel_head.json'
FORMAT_VERSION = 1
#: model_id of rows labeled through a head: BASE_MODEL_ID + HEAD_MARK + head file hash.
HEAD_MARK = '+head-'
_ACTIVATIONS = ('relu', 'softmax', 'linear')


@dataclasses.dataclass(frozen=True)
class HeadInfo:
    """What a head must agree with: the base model it learned from, and its classes."""
    class_names: tuple[str, ...]
    embedding_dim: int
    base_model_id: str
    base_model: str          # the base model's name, for messages
    hidden_units: int = 0    # 0: one Dense softmax layer

    def to_json(self) -> dict:
        return {'format_version': FORMAT_VERSION, 'class_names': list(self.class_names),
                'embedding_dim': self.embedding_dim, 'base_model_id': self.base_model_id,
                'base_model': self.base_model, 'hidden_units': self.hidden_units}

    @classmethod
    def from_json(cls, d: dict) -> 'HeadInfo':
        return cls(class_names=tuple(d['class_names']), embedding_dim=int(d['embedding_dim']),
                   base_model_id=str(d['base_model_id']), base_model=str(d['base_model']),
                   hidden_units=int(d.get('hidden_units', 0)))


@dataclasses.dataclass(frozen=True)
class DenseLayer:
    kernel: np.ndarray   # (inputs, units) float32
    bias: np.ndarray     # (units,) float32
    activation: str      # one of _ACTIVATIONS


def dense_forward(x: np.ndarray, layers: Sequence[DenseLayer]) -> np.ndarray:
    """Embeddings (n, d) -> the head's outputs (n, classes), float32; pure numpy."""
    x = np.asarray(x, np.float32)
    for layer in layers:
        x = x @ layer.kernel + layer.bias
        if layer.activation == 'relu':
            x = np.maximum(x, 0.0)
        elif layer.activation == 'softmax':
            z = np.exp(x - x.max(axis=-1, keepdims=True))
            x = z / z.sum(axis=-1, keepdims=True)
    return x.astype(np.float32)


@dataclasses.dataclass(frozen=True)
class Head:
    """A loaded head: its metadata, its weights as numpy, and the hash of its file."""
    info: HeadInfo
    layers: tuple[DenseLayer, ...]
    sha256: str
    path: str

    @property
    def class_names(self) -> list[str]:
        return list(self.info.class_names)

    def predict(self, embeddings: np.ndarray) -> np.ndarray:
        """Probabilities over the head's classes for a batch of base-model embeddings."""
        return dense_forward(embeddings, self.layers)


def base_model_id(model_id: str) -> str:
    """The base model's id of a row, whether or not it was labeled through a head."""
    return model_id.split(HEAD_MARK, 1)[0]


def head_model_id(base_id: str, head_sha256: str) -> str:
    """A head changes the outputs, so it changes the model_id; the base id stays readable."""
    return f'{base_id}{HEAD_MARK}{head_sha256[:12]}'


def check_head_fits(head: Head, *, model_id: str, embedding_dim: int, model: str) -> None:
    """ValueError, one line, if the head learned from another base model than this one."""
    info = head.info
    if embedding_dim == 0:
        raise ValueError(f'--head {head.path}: {model} exposes no embedding to feed a head')
    if info.embedding_dim != embedding_dim:
        raise ValueError(
            f'--head {head.path} was trained on {info.embedding_dim}-d embeddings of '
            f'{info.base_model}, but {model} gives {embedding_dim}-d embeddings; train a head '
            f'on this model\'s embeddings (imagelabel train-head)')
    if info.base_model_id != model_id:
        raise ValueError(
            f'--head {head.path} was trained on embeddings of {info.base_model} (model_id '
            f'{info.base_model_id}), but this run\'s model is {model} (model_id {model_id}); '
            'use the same model, --resize, --precision and --float_runtime, or train a head '
            'on this model\'s embeddings')


def save_head(model, info: HeadInfo, path: str) -> str:
    """Save a Keras head with its metadata inside the file; return the file's SHA-256.

    `path` may be any FileSystems URI (local or gs://); Keras writes a local file first.
    """
    fd, local = tempfile.mkstemp(suffix='.keras')
    os.close(fd)
    try:
        model.save(local)
        with zipfile.ZipFile(local, 'a') as z:
            z.writestr(METADATA_ENTRY, json.dumps(info.to_json(), indent=2))
        with open(local, 'rb') as f:
            data = f.read()
    finally:
        os.remove(local)
    with FileSystems.create(path) as out:
        out.write(data)
    return hashlib.sha256(data).hexdigest()


def read_head_info(local_path: str) -> HeadInfo:
    """The metadata inside a head file; ValueError if it is not an imagelabel head."""
    try:
        with zipfile.ZipFile(local_path) as z:
            raw = z.read(METADATA_ENTRY)
    except (zipfile.BadZipFile, KeyError, OSError) as e:
        raise ValueError(f'--head {local_path} is not a head made by imagelabel train-head '
                         f'(no {METADATA_ENTRY} inside: {type(e).__name__})') from None
    return HeadInfo.from_json(json.loads(raw))


def _dense_layers(model, path: str) -> tuple[DenseLayer, ...]:
    import keras
    layers = []
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        if not isinstance(layer, keras.layers.Dense):
            raise ValueError(f'--head {path}: a head is Dense layers only, found '
                             f'{type(layer).__name__}')
        activation = layer.get_config().get('activation')
        if activation not in _ACTIVATIONS:
            raise ValueError(f'--head {path}: unsupported activation {activation!r}')
        kernel, bias = layer.get_weights()
        layers.append(DenseLayer(kernel.astype(np.float32), bias.astype(np.float32), activation))
    return tuple(layers)


def load_head(path: str) -> Head:
    """Load a head (local or gs://); ValueError with one clear line if it is unusable."""
    from transforms.models.tf_import import import_tensorflow
    import_tensorflow()
    import keras

    from transforms.models import localized  # keeps gs:// (and its clean-up) in one place
    with localized(path) as local:
        with open(local, 'rb') as f:
            sha = hashlib.sha256(f.read()).hexdigest()
        info = read_head_info(local)
        try:
            model = keras.models.load_model(local, compile=False)
        except Exception as e:  # noqa: BLE001 - one clear line
            raise ValueError(f'--head {path} is not a loadable Keras model: '
                             f'{type(e).__name__}') from e
    layers = _dense_layers(model, path)
    if not layers or layers[0].kernel.shape[0] != info.embedding_dim \
            or layers[-1].kernel.shape[1] != len(info.class_names) \
            or layers[-1].activation != 'softmax':
        raise ValueError(f'--head {path}: its layers do not match its metadata ('
                         f'{info.embedding_dim}-d in, {len(info.class_names)} softmax classes out)')
    return Head(info, layers, sha, path)
