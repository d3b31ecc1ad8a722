"""Which int8 runtime is faster on this CPU: LiteRT (XNNPACK) or OpenVINO (NNCF PTQ)?

    python bench/int8_runtimes.py [--calibration 32] [--images 24] [--threads N]

Inception-v3 with random weights (seeded), 299x299, batch 1, same thread count for
every runtime. Figures, images/s on pre-decoded pixels (decode excluded):

  keras fp32    the bare Keras model (predict_on_batch, batch 1 and batch 8)
  litert int8   imagelabel's own int8 conversion (transforms.models.int8), bare interpreter
  openvino fp32 ov.convert_model of the same SavedModel
  openvino int8 nncf.quantize of it on the same calibration images

OpenVINO and NNCF are optional (pip install 'imagelabel[bench]'); without them those
rows say so. Prints one JSON line per figure and a table naming the CPU.
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys
import tempfile
import time

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


CPU_RATES: dict[str, float] = {}


def rate(fn, images: np.ndarray, warmup: int = 2) -> float:
    """images/s of fn over images, one at a time; images per CPU-second kept in CPU_RATES.

    On a shared machine the wall-clock rate mostly measures the neighbours; CPU-seconds
    are less disturbed (though a runtime that spins while waiting pays for it here).
    """
    for image in images[:warmup]:
        fn(image[None])
    start, cpu = time.perf_counter(), time.process_time()
    for image in images:
        fn(image[None])
    CPU_RATES['last'] = len(images) / (time.process_time() - cpu)
    return len(images) / (time.perf_counter() - start)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--calibration', type=int, default=32)
    p.add_argument('--images', type=int, default=24)
    p.add_argument('--threads', type=int, default=len(os.sched_getaffinity(0)))
    a = p.parse_args(argv)
    os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
    import keras
    import tensorflow as tf
    from transforms.cpu import this_cpu
    from transforms.models import int8
    from transforms.models.spec import ModelSpec
    tf.config.threading.set_intra_op_parallelism_threads(a.threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    rng = np.random.default_rng(0)
    # Photo-like inputs: smooth gradients plus noise, uint8, like bench/make_images.py.
    yy, xx = np.mgrid[0:299, 0:299]
    base = np.stack([xx, yy, (xx + yy) / 2], -1) * (255 / 598)
    pixels = np.clip(base[None] * rng.uniform(0.5, 2.0, (a.calibration + a.images, 1, 1, 3))
                     + rng.normal(0, 25, (a.calibration + a.images, 299, 299, 3)), 0, 255).astype(np.uint8)
    calib, test = pixels[:a.calibration], pixels[a.calibration:]
    pre = lambda x: x.astype(np.float32) / 127.5 - 1.0  # noqa: E731
    keras.utils.set_random_seed(0)
    model = keras.applications.InceptionV3(weights=None)
    results = {}

    per_cpu = {}

    def report(name, value, **extra):
        results[name] = round(value, 2) if value else None
        per_cpu[name] = round(CPU_RATES.pop('last'), 2) if value and 'last' in CPU_RATES else None
        print(json.dumps({'figure': name, 'images_per_s': results[name],
                          'images_per_cpu_s': per_cpu[name], **extra}), flush=True)

    report('keras fp32, batch 1', rate(lambda x: model.predict_on_batch(pre(x)), test))
    batched = test[:len(test) // 8 * 8].reshape(-1, 8, 299, 299, 3)
    model.predict_on_batch(pre(batched[0]))
    start, cpu = time.perf_counter(), time.process_time()
    for b in batched:
        model.predict_on_batch(pre(b))
    CPU_RATES['last'] = len(batched) * 8 / (time.process_time() - cpu)
    report('keras fp32, batch 8', len(batched) * 8 / (time.perf_counter() - start))

    spec = ModelSpec(name='inception_v3', format='keras', preprocess='inception',
                     embedding_layer='avg_pool')
    started = time.perf_counter()
    content, head = int8.convert_keras(model, spec, int8.Calibration(calib, 'bench'),
                                       'probabilities', spec.preprocess)  # ends in softmax
    convert_s = time.perf_counter() - started
    from ai_edge_litert.interpreter import Interpreter
    interp = Interpreter(model_content=content, num_threads=a.threads)
    interp.allocate_tensors()
    (inp,) = interp.get_input_details()
    scale, zero = inp['quantization']

    def litert(x):
        interp.set_tensor(inp['index'], np.clip(np.round(pre(x) / scale + zero), -128, 127).astype(np.int8))
        interp.invoke()
    report('litert int8 (XNNPACK), batch 1', rate(litert, test), convert_s=round(convert_s, 1))

    try:
        import nncf
        import openvino as ov
    except ImportError as e:
        report('openvino fp32, batch 1', None, note=f'not installed: {e}')
        report('openvino int8 (NNCF), batch 1', None, note=f'not installed: {e}')
    else:
        core = ov.Core()
        config = {'INFERENCE_NUM_THREADS': a.threads, 'PERFORMANCE_HINT': 'LATENCY'}
        with tempfile.TemporaryDirectory() as folder:
            model.export(folder, format='tf_saved_model', verbose=False,
                         input_signature=[tf.TensorSpec((1, 299, 299, 3), tf.float32)])
            ov_model = ov.convert_model(folder)
        fp32 = core.compile_model(ov_model, 'CPU', config)
        report('openvino fp32, batch 1', rate(lambda x: fp32(pre(x)), test))
        started = time.perf_counter()
        quantized = nncf.quantize(ov_model, nncf.Dataset([pre(c[None]) for c in calib]),
                                  subset_size=len(calib))
        q = core.compile_model(quantized, 'CPU', config)
        report('openvino int8 (NNCF), batch 1', rate(lambda x: q(pre(x)), test),
               convert_s=round(time.perf_counter() - started, 1),
               openvino=ov.__version__)
    cpu = this_cpu()
    load = ', '.join(f'{x:.1f}' for x in os.getloadavg())
    print(f'\nInception-v3 (random weights), {a.threads} threads, on {cpu.describe()}; '
          f'load average at the end {load}')
    base = results['keras fp32, batch 8'] or results['keras fp32, batch 1']
    base_cpu = per_cpu['keras fp32, batch 8']
    for name, value in results.items():
        c = per_cpu.get(name)
        print(f'  {name:<34} {value if value else "-":>8} images/s'
              + (f' ({value / base:.2f}x)' if value and base else '')
              + (f'  {c} images/CPU-s ({c / base_cpu:.2f}x)' if c and base_cpu else ''))
    return 0


if __name__ == '__main__':
    sys.exit(main())
