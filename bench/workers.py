"""bench's measurements that load TensorFlow or LiteRT: each runs in its own child process.

    python bench/workers.py NAME 'JSON ARGS'    # prints one line: BENCH_RESULT {json}

bench.py starts one child per measurement (so its peak RSS, read with os.wait4, is
its own) and never imports TensorFlow itself.
"""
from __future__ import annotations

import contextlib
import json
import os
import pathlib
import sys
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # numpy is imported where it is used, in the child processes
    import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
RESULT_MARK = 'BENCH_RESULT '


def _timed_passes(fn, items, passes: int) -> tuple[list[float], float, float]:
    """(wall times, median wall, least CPU seconds) of `passes` passes of fn over items."""
    import statistics
    times, cpu = [], []
    for _ in range(passes):
        start, start_cpu = time.perf_counter(), time.process_time()
        for item in items:
            fn(item)
        times.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return times, statistics.median(times), min(cpu)


def worker_save_model(args) -> dict[str, Any]:
    import keras
    keras.utils.set_random_seed(args['seed'])
    model = keras.applications.InceptionV3(weights=None)
    path = pathlib.Path(args['path'])
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f'.tmp-{os.getpid()}-{path.name}')
    model.save(tmp)
    tmp.replace(path)
    return {'path': str(path), 'params': int(model.count_params())}


def _predecode(paths, size) -> 'np.ndarray':
    import numpy as np
    from transforms.decode import ResizeRecipe, decode_image
    return np.stack([decode_image(pathlib.Path(p).read_bytes(), size, recipe=ResizeRecipe.CROP)[0]
                     for p in paths])


def _bf16_clone(model):
    """The same weights under Keras's mixed_bfloat16 policy (compute bf16, variables f32)."""
    import keras

    def clone(layer):
        config = layer.get_config()
        config['dtype'] = keras.DTypePolicy('mixed_bfloat16')
        return layer.__class__.from_config(config)

    copy = keras.models.clone_model(model, clone_function=clone)
    copy.set_weights(model.get_weights())
    return copy


def worker_ceiling(args) -> dict[str, Any]:
    import keras
    import numpy as np
    model = keras.models.load_model(args['model'], compile=False)
    if args['precision'] == 'bf16':
        model = _bf16_clone(model)
    # bf16_onednn: the float32 model under oneDNN's bf16 graph rewrite, the mechanism
    # `imagelabel run --precision bf16` uses (transforms.models.keras.onednn_bf16_calls).
    scope = contextlib.nullcontext
    if args['precision'] == 'bf16_onednn':
        from transforms.models.keras import onednn_bf16_calls as scope
    size = tuple(int(d) for d in model.inputs[0].shape[1:3])
    pixels = _predecode(args['images'], size)
    x_all = pixels.astype(np.float32) / 127.5 - 1.0  # Inception preprocessing, outside the clock
    out: dict[str, Any] = {'images': len(x_all), 'input_size': size,
                           'precision': args['precision'], 'by_batch_size': {}}
    call = {'call': lambda x: model(x, training=False).numpy(),  # eager
            'predict_on_batch': model.predict_on_batch}[args['method']]  # compiled tf.function

    def fn(x):
        with scope():
            return call(x)
    for bs in args['batch_sizes']:
        reps = -(-max(len(x_all), bs) // bs)
        idx = np.arange(reps * bs) % len(x_all)  # whole batches; wrap around when N < bs
        batches = [np.ascontiguousarray(x_all[idx[i * bs:(i + 1) * bs]]) for i in range(reps)]
        for b in batches[:2]:  # warm up: tracing, oneDNN primitive caches
            fn(b)
        times, median, cpu = _timed_passes(fn, batches, args['passes'])
        n = reps * bs
        out['by_batch_size'][str(bs)] = {
            'images_per_s': round(n / min(times), 3), 'median_images_per_s': round(n / median, 3),
            'images_per_cpu_s': round(n / cpu, 3), 'images': n, 'passes': args['passes']}
    return out


def worker_tflite_bare(args) -> dict[str, Any]:
    import concurrent.futures

    import numpy as np
    from ai_edge_litert.interpreter import Interpreter

    from transforms.decode import ResizeRecipe, decode_image
    datas = [pathlib.Path(p).read_bytes() for p in args['images']]
    probe = Interpreter(model_path=args['model'])
    size = tuple(int(d) for d in probe.get_input_details()[0]['shape'][1:3])
    del probe

    def decode(data):
        return decode_image(data, size, recipe=ResizeRecipe.CROP)[0]

    out: dict[str, Any] = {'images': len(datas), 'input_size': size, 'decode': {},
                           'interpreter': {}}
    for threads in (1, 2):
        with concurrent.futures.ThreadPoolExecutor(threads) as pool:
            list(pool.map(decode, datas[:16]))  # warm up
            times, cpu = [], []
            for _ in range(args['passes']):
                start, start_cpu = time.perf_counter(), time.process_time()
                pixels = list(pool.map(decode, datas))
                times.append(time.perf_counter() - start)
                cpu.append(time.process_time() - start_cpu)
        out['decode'][f'threads_{threads}'] = {
            'images_per_s': round(len(datas) / min(times), 3),
            'images_per_cpu_s': round(len(datas) / min(cpu), 3), 'passes': args['passes']}
    pixels = np.stack(pixels)
    for threads in (None, 2):  # None: LiteRT's own default (imagelabel passes the core count)
        interp = Interpreter(model_path=args['model'], num_threads=threads)
        interp.allocate_tensors()
        inp, outp = interp.get_input_details()[0], interp.get_output_details()[0]

        def invoke(x):
            interp.set_tensor(inp['index'], x[None])
            interp.invoke()
            return interp.get_tensor(outp['index'])

        for x in pixels[:8]:
            invoke(x)
        times, median, cpu = _timed_passes(invoke, pixels, args['passes'])
        out['interpreter'][str(threads if threads else 'default')] = {
            'images_per_s': round(len(pixels) / min(times), 3),
            'images_per_cpu_s': round(len(pixels) / cpu, 3),
            'median_images_per_s': round(len(pixels) / median, 3), 'passes': args['passes']}
    return out


WORKERS = {'save_model': worker_save_model, 'ceiling': worker_ceiling,
           'tflite_bare': worker_tflite_bare}


def main(argv=None) -> int:
    name, args = (argv or sys.argv[1:])[:2]
    os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
    sys.path.insert(0, str(ROOT))
    result = WORKERS[name](json.loads(args))
    print(RESULT_MARK + json.dumps(result), flush=True)
    return 0


if __name__ == '__main__':
    sys.exit(main())
