"""A TF SavedModel's serving_default signature as a runtime (TensorFlow imported lazily)."""
from __future__ import annotations

import numpy as np

from transforms.models.files import file_fingerprint, localized
from transforms.models.runtime import (Pixels, Scores, as_batch, looks_like_probabilities,
                                       pick_outputs, softmax)
from transforms.models.spec import PREPROCESSORS, ModelSpec


class SavedModelRuntime:
    """A TF SavedModel's serving_default signature.

    Outputs are chosen by width: the scores are the output with one column per
    class (or per class plus background); a second rank-2 output, if there is
    exactly one, is the embedding.
    """

    def __init__(self, spec: ModelSpec, *, num_classes: int):
        import tensorflow as tf
        with localized(spec.path) as local:  # TF's own gs:// ignores the emulator setting
            try:
                loaded = tf.saved_model.load(local)
                sig = loaded.signatures['serving_default']
            except Exception as e:  # noqa: BLE001
                raise ValueError(f'{spec.path} is not a loadable SavedModel with a '
                                 f'serving_default signature: {type(e).__name__}') from e
            fingerprint = file_fingerprint(local)  # the local copy: gs:// is read once
        (arg_name, arg_spec), = sig.structured_input_signature[1].items()
        if len(arg_spec.shape) != 4 or arg_spec.shape[-1] != 3:
            raise ValueError(f'{spec.name}: expected an image input (batch, height, width, 3), '
                             f'got {arg_spec.shape}')
        h, w = spec.input_size or tuple(arg_spec.shape[1:3])
        if h is None or w is None:
            raise ValueError(f'{spec.name}: the model does not fix its input size')
        outputs = {k: v for k, v in sig.structured_outputs.items() if len(v.shape) == 2}
        widths = {k: v.shape[-1] for k, v in outputs.items()}
        picked = pick_outputs(widths, num_classes)
        if picked is None:
            raise ValueError(f'{spec.name}: cannot tell which output holds the {num_classes} '
                             f'class scores (rank-2 outputs and widths: {widths}); pass --labels '
                             'with one name per class')
        self._loaded, self._sig, self._arg = loaded, sig, arg_name
        self._scores_key, self._emb_key = picked
        # Both read by the launch-time conversions (int8, float32 LiteRT): no second load.
        self.input_dtype = arg_spec.dtype
        self.preprocess = spec.preprocess or ('raw' if arg_spec.dtype.is_integer else 'inception')
        self.name = spec.name
        self.weights_sha256 = fingerprint
        self.precision = 'float32'
        self.input_size = (int(h), int(w))
        self.num_outputs = int(widths[self._scores_key])
        self.embedding_dim = int(widths[self._emb_key]) if self._emb_key else 0
        self.output_kind = spec.outputs
        if self.output_kind == 'auto':  # decide once, on a probe, never per batch
            probe = self._raw_scores(np.full((1, *self.input_size, 3), 128, np.uint8))[0]
            self.output_kind = 'probabilities' if looks_like_probabilities(probe) else 'logits'
        self.description = (f'{spec.name}: SavedModel, input {h}x{w}, {self.num_outputs} '
                            f'{self.output_kind}, embedding {self.embedding_dim}-d')

    def _raw_scores(self, pixels: np.ndarray):
        import tensorflow as tf
        x = tf.cast(PREPROCESSORS[self.preprocess](tf.cast(pixels, tf.float32)), self.input_dtype)
        out = self._sig(**{self._arg: x})
        return out[self._scores_key].numpy().astype(np.float32), out

    def parameters(self) -> int:
        """Weights in the model's variables (imagelabel models counts them)."""
        return int(sum(np.prod(v.shape) for v in self._loaded.variables))

    def predict(self, pixels: Pixels) -> Scores:
        pixels = as_batch(pixels)
        scores, out = self._raw_scores(pixels)
        if self.output_kind == 'logits':
            scores = softmax(scores)
        emb = (out[self._emb_key].numpy().reshape(len(pixels), -1).astype(np.float32)
               if self._emb_key else np.zeros((len(pixels), 0), np.float32))
        return Scores(scores, emb)
