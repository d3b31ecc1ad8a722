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


def worker_cores_bound(args) -> dict[str, Any]:
    """Single-thread decode and invoke rates (the two-core bound), and what each step costs.

    All on one thread, bytes already in memory unless the step is the read itself:
    `steps_ms` is CPU milliseconds per image of every step the pipeline does, so
    their sum against the pipeline's own CPU per image shows Beam's share. With
    `rates_only`, just the two rates (the bound taken again after a round's runs).
    """
    import hashlib
    import io
    import pickle
    from concurrent.futures import ThreadPoolExecutor

    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq
    from ai_edge_litert.interpreter import Interpreter
    from PIL import Image

    from transforms.decode import DecodedImage, ResizeRecipe, crop_box, decode_image
    from transforms.models.interpreters import InterpreterPool, Layout, choose_layout
    from transforms.models.litert import expose_penultimate
    from transforms.postprocess import label_row
    from transforms.label import ImageInfo, ImageScores
    from transforms.schema import LABELS_SCHEMA
    from transforms.sinks.parquet import dictionary_columns, rows_to_batch
    from transforms.read import DEFAULT_MAX_BYTES
    from transforms.storage import ObjectReader
    from apache_beam.ml.inference.base import PredictionResult

    paths = args['images']
    content = expose_penultimate(pathlib.Path(args['model']).read_bytes()).content
    probe = Interpreter(model_content=content)
    size = tuple(int(d) for d in probe.get_input_details()[0]['shape'][1:3])
    del probe

    def cpu_rate(fn, items) -> tuple[float, list]:
        start = time.process_time()
        out = [fn(x) for x in items]
        return len(items) / (time.process_time() - start), out

    def ms(fn, items) -> float:
        # Results are dropped as they come, as the pipeline drops them: holding 1000 reads
        # (110 MB) made every read fault in fresh pages, 0.15 ms per photo instead of 0.05.
        start = time.process_time()
        for x in items:
            fn(x)
        return round(1000.0 * (time.process_time() - start) / len(items), 4)

    datas = [pathlib.Path(p).read_bytes() for p in paths]
    steps: dict[str, float] = {}
    rates_only = bool(args.get('rates_only'))  # the bound again, after a round's runs
    if not rates_only:
        reader = ObjectReader()  # the read stage's own call, under the default --max_bytes
        reader.read(paths[0], DEFAULT_MAX_BYTES)  # one call outside the timing, as for the rest
        steps['read file (page cache)'] = ms(lambda p: reader.read(p, DEFAULT_MAX_BYTES), paths)
        steps['sha256 of the bytes'] = ms(lambda d: hashlib.sha256(d).hexdigest(), datas)

        def jpeg_only(d):
            im = Image.open(io.BytesIO(d))
            im.draft('RGB', (size[1], size[0]))
            im.load()
            return im
        for d in datas[:8]:  # warm up
            jpeg_only(d)
        steps['JPEG decode (DCT-scaled draft)'] = ms(jpeg_only, datas)
        loaded = [jpeg_only(d) for d in datas]
        steps['crop and resize to the model input'] = ms(
            lambda im: np.asarray(im.convert('RGB').resize(
                (size[1], size[0]), Image.BILINEAR,
                box=crop_box(im.width, im.height, size[1], size[0])), np.uint8), loaded)
        del loaded

    def decode(d):
        return decode_image(d, size, recipe=ResizeRecipe.CROP)[0]
    for d in datas[:8]:  # warm up
        decode(d)
    decode_ms = ms(decode, datas)  # the single-thread decode the bound uses
    decode_rate = 1000.0 / decode_ms
    steps['decode_image (all of the above but the read)'] = decode_ms
    pixels = [decode(d) for d in datas[:max(args['invoke_n'], 200)]]  # for the steps below

    one = Interpreter(model_content=content, num_threads=1)
    one.allocate_tensors()
    inp, outs = one.get_input_details()[0], one.get_output_details()

    def invoke(x, interp=one):
        interp.set_tensor(inp['index'], x[None])
        interp.invoke()
        return [interp.get_tensor(o['index']) for o in outs]
    sample = pixels[:args['invoke_n']]
    for x in sample[:8]:
        invoke(x)
    invoke_rate, outputs = cpu_rate(invoke, sample)
    steps['invoke, 1 interpreter x 1 thread'] = round(1000.0 / invoke_rate, 4)
    if rates_only:
        return {'decode_images_per_s': round(decode_rate, 3),
                'invoke_images_per_s': round(invoke_rate, 3)}

    decoded = [DecodedImage(uri=p, content_sha256='0' * 64, width=500, height=375, pixels=x)
               for p, x in zip(paths, pixels)]
    steps['pickle a decoded image (a stage boundary)'] = ms(
        lambda d: pickle.loads(pickle.dumps(d, protocol=4)), decoded[:200])
    n_classes = int(outs[0]['shape'][-1]) - 1
    labels = [f'class {i}' for i in range(n_classes)]
    results = [PredictionResult(ImageInfo(p, '0' * 64, 500, 375),
                                ImageScores(np.random.default_rng(i).random(n_classes, np.float32),
                                            o[-1].reshape(-1).astype(np.float32)), 'm')
               for i, (p, o) in enumerate(zip(paths, outputs))]
    rows = []
    steps['label row (top-5, dict)'] = ms(
        lambda r: rows.append(label_row(r, k=5, labels=labels, model='m', run_id='r')), results)

    def write(batch_rows):
        pq.write_table(pa.Table.from_batches([rows_to_batch(batch_rows, LABELS_SCHEMA)]),
                       io.BytesIO(), use_compliant_nested_type=False,  # as the sink writes
                       use_dictionary=dictionary_columns(LABELS_SCHEMA))
    start = time.process_time()
    for i in range(0, len(rows), 256):
        write(rows[i:i + 256])
    steps['Parquet: rows to Arrow (numpy embeddings) and write'] = round(
        1000.0 * (time.process_time() - start) / len(rows), 4)

    layouts = {}
    for layout in (Layout(1, 2), Layout(2, 1)):
        pool = InterpreterPool(content, layout)
        pool.run(8, lambda interp, i: invoke(sample[i], interp))
        start, start_cpu = time.perf_counter(), time.process_time()
        pool.run(len(sample), lambda interp, i: invoke(sample[i], interp))
        wall = time.perf_counter() - start
        layouts[str(layout)] = {'images_per_s': round(len(sample) / wall, 3),
                                'images_per_cpu_s': round(
                                    len(sample) / (time.process_time() - start_cpu), 3)}

    # The same decode and invoke on the same threads, without Beam: what the
    # threads alone reach, so the pipeline's figure splits into threads and Beam.
    without_beam = {}
    pool = InterpreterPool(content, choose_layout(None, None))  # the pipeline's default
    pool.run(8, lambda interp, i: invoke(sample[i], interp))
    start = time.perf_counter()
    pool.run(len(datas), lambda interp, i: invoke(decode(datas[i]), interp))
    without_beam['each interpreter thread decodes, then invokes'] = round(
        len(datas) / (time.perf_counter() - start), 3)
    with ThreadPoolExecutor(2) as decoders:  # the pipeline's default --decode_threads
        start = time.perf_counter()
        futures = [decoders.submit(decode, d) for d in datas]
        pool.run(len(datas), lambda interp, i: invoke(futures[i].result(), interp))
        without_beam['2 decode threads feed the interpreters'] = round(
            len(datas) / (time.perf_counter() - start), 3)
    return {'photos': len(paths), 'input_size': size, 'invoked': len(sample),
            'decode_images_per_s': round(decode_rate, 3),
            'invoke_images_per_s': round(invoke_rate, 3),
            'steps_ms': steps, 'invoke_layouts': layouts, 'without_beam': without_beam}


WORKERS = {'save_model': worker_save_model, 'ceiling': worker_ceiling,
           'tflite_bare': worker_tflite_bare, 'cores_bound': worker_cores_bound}


def main(argv=None) -> int:
    name, args = (argv or sys.argv[1:])[:2]
    os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
    sys.path.insert(0, str(ROOT))
    result = WORKERS[name](json.loads(args))
    print(RESULT_MARK + json.dumps(result), flush=True)
    return 0


if __name__ == '__main__':
    sys.exit(main())
