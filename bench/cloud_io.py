"""gs:// against local disk, on the real GCS emulator: wall time and storage clients.

    .venv/bin/python bench/cloud_io.py [--images 20] [--objects 1000]

Prints (and writes bench/out/cloud_io.json):
- the wall time of `python -m pipeline.run` over the same N photos, from local disk and
  from the emulator (input, model and output gs://), each a fresh process, start-up included,
  with STORAGE_EMULATOR_HOST the only setting;
- how many google-cloud-storage clients reading M small objects creates through Beam's
  `FileSystems.open` (what imagelabel did before) and through our `ObjectReader`.
The machine's CPU is printed beside the figures. Needs `make install` (the emulator).
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [str(ROOT), str(ROOT / 'tests')]


def _run(argv, env) -> float:
    start = time.monotonic()
    proc = subprocess.run([sys.executable, '-m', 'pipeline.run', *argv], env=env, cwd=ROOT,
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(proc.stderr[-2000:])
    return time.monotonic() - start


def count_clients(objects: list[str], read) -> int:
    from google.cloud import storage
    made = []
    real = storage.Client.__init__

    def counting(self, *a, **k):
        made.append(1)
        real(self, *a, **k)
    storage.Client.__init__ = counting
    try:
        for uri in objects:
            read(uri)
    finally:
        storage.Client.__init__ = real
    return len(made)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--images', type=int, default=20)
    parser.add_argument('--objects', type=int, default=1000)
    parser.add_argument('--assets', default=os.environ.get(
        'IMAGELABEL_ASSETS', str(ROOT.parent / 'shared' / 'assets')))
    args = parser.parse_args()
    from emulators import BUCKET, GcsEmulator
    from transforms.cpu import this_cpu

    assets = pathlib.Path(args.assets)
    model = assets / 'models' / 'mobilenet_v2_1.0_224_quant.tflite'
    photos = sorted((assets / 'imagenet_sample' / 'images').glob('*.JPEG'))[:args.images]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = pathlib.Path(tmp)
        gcs = GcsEmulator(tmp / 'gcs')
        try:
            local_in = tmp / 'in'
            local_in.mkdir()
            bucket = gcs.client().bucket(BUCKET)
            for p in photos:
                (local_in / p.name).write_bytes(p.read_bytes())
                bucket.blob(f'bench/in/{p.name}').upload_from_filename(str(p))
            bucket.blob('bench/m.tflite').upload_from_filename(str(model))
            env = dict(os.environ, PYTHONPATH=str(ROOT), TF_CPP_MIN_LOG_LEVEL='2')
            env.pop('STORAGE_EMULATOR_HOST', None)
            local_s = _run(['--input', str(local_in), '--output', str(tmp / 'out'),
                            '--model', str(model)], env)
            env['STORAGE_EMULATOR_HOST'] = gcs.url
            gcs_s = _run(['--input', f'gs://{BUCKET}/bench/in/', '--output',
                          f'gs://{BUCKET}/bench/out/', '--model', f'gs://{BUCKET}/bench/m.tflite'],
                         env)

            os.environ['STORAGE_EMULATOR_HOST'] = gcs.url
            from transforms.gcp import configure_emulators
            configure_emulators()
            for i in range(args.objects):
                bucket.blob(f'bench/many/{i:05d}').upload_from_string(b'x' * 64)
            objects = [f'gs://{BUCKET}/bench/many/{i:05d}' for i in range(args.objects)]
            from transforms.storage import ObjectReader, open_raw

            def beam_read(uri):
                with open_raw(uri) as f:
                    f.read()
            reader = ObjectReader()
            beam_clients = count_clients(objects, beam_read)
            our_clients = count_clients(objects, lambda u: reader.read(u, 1 << 20))
        finally:
            gcs.stop()
    cpu = this_cpu().describe()
    results = {'cpu': cpu, 'images': len(photos), 'local_run_s': round(local_s, 2),
               'gcs_run_s': round(gcs_s, 2), 'objects': args.objects,
               'clients_beam_filesystems_open': beam_clients, 'clients_object_reader': our_clients}
    print(f'CPU: {cpu}')
    print(f'{len(photos)}-image run, fresh process each: local {local_s:.1f} s, '
          f'gs:// (emulator) {gcs_s:.1f} s')
    print(f'storage clients to read {args.objects} objects: Beam FileSystems.open '
          f'{beam_clients}, imagelabel ObjectReader {our_clients}')
    out = HERE / 'out'
    out.mkdir(exist_ok=True)
    (out / 'cloud_io.json').write_text(json.dumps(results, indent=2))


if __name__ == '__main__':
    main()
