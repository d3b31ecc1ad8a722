"""The anchor: Beam's stock TensorFlow RunInference, written as Beam's examples write it.

This is apache_beam/examples/inference/tensorflow_imagenet_segmentation.py with
Inception-v3's input size and preprocessing: a `read_image` preprocess function
(PIL open + resize, to a float32 tensor), `TFModelHandlerTensor(model_uri=...)`
with Beam's default (adaptive) batching, an argmax post-processing DoFn, and
optionally WriteToText of the top class. Nothing imagelabel-specific is used, so
`imagelabel run` can be compared against what a Beam user gets out of the box.

    python bench/anchor.py --input manifest.txt --model_path model.keras [--output DIR]

Needs `pip install -e '.[bench]'` (Beam's tensorflow_inference imports tensorflow_hub).
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from collections.abc import Iterable, Iterator

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')


import apache_beam as beam  # noqa: E402
import numpy  # noqa: E402
import tensorflow as tf  # noqa: E402
from apache_beam.ml.inference.base import PredictionResult, RunInference  # noqa: E402
from apache_beam.ml.inference.tensorflow_inference import TFModelHandlerTensor  # noqa: E402
from apache_beam.options.pipeline_options import PipelineOptions  # noqa: E402
from PIL import Image  # noqa: E402

IMAGE_SIZE = 299  # Inception-v3


class PostProcessor(beam.DoFn):
    """The predicted class index (the example maps it to a name; we skip the label file)."""

    def process(self, element: PredictionResult) -> Iterable[str]:
        yield str(int(numpy.argmax(element.inference, axis=-1)))


def filter_empty_lines(text: str) -> Iterator[str]:
    if len(text.strip()) > 0:
        yield text


def read_image(image_path: str):
    img = Image.open(image_path).convert('RGB').resize((IMAGE_SIZE, IMAGE_SIZE))
    img = numpy.array(img) / 127.5 - 1.0  # Inception's [-1, 1] (the example's model wants / 255)
    img_tensor = tf.cast(tf.convert_to_tensor(img[...]), dtype=tf.float32)
    return img_tensor


def run(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--input', required=True,
                        help='Text file, one image path per line.')
    parser.add_argument('--model_path', required=True, help='A .keras model (or SavedModel).')
    parser.add_argument('--output', default=None,
                        help='Write the top class of each image here (WriteToText); '
                        'default: write nothing.')
    known, pipeline_args = parser.parse_known_args(argv)

    model_handler = TFModelHandlerTensor(model_uri=known.model_path).with_preprocess_fn(
        read_image)
    start = time.monotonic()
    pipeline = beam.Pipeline(options=PipelineOptions(pipeline_args))
    image = (pipeline
             | 'ReadImageNames' >> beam.io.ReadFromText(known.input)
             | 'FilterEmptyLines' >> beam.ParDo(filter_empty_lines))
    predictions = (image
                   | 'RunInference' >> RunInference(model_handler)
                   | 'PostProcessOutputs' >> beam.ParDo(PostProcessor()))
    if known.output:
        _ = predictions | 'WriteOutput' >> beam.io.WriteToText(
            os.path.join(known.output, 'predictions'), shard_name_template='',
            append_trailing_newlines=True)
    else:
        _ = predictions | 'Count' >> beam.combiners.Count.Globally() | 'Print' >> beam.Map(
            lambda n: print(f'anchor predictions {n}', flush=True))
    result = pipeline.run()
    result.wait_until_finish()
    print(f'anchor pipeline seconds {time.monotonic() - start:.3f}',
          flush=True)
    return 0


if __name__ == '__main__':
    logging.getLogger().setLevel(logging.WARNING)
    sys.exit(run())
