"""Peak memory of a 2-process DirectRunner run, one model per process vs one per machine.

    python bench/shared_model_rss.py                # N=128 photos, Inception-v3, 1 rep each
    python bench/shared_model_rss.py --n 64 --reps 2

Runs `python -m pipeline.run --direct_running_mode=multi_processing
--direct_num_workers=2` over the same photos, without and with `--share_model`,
and samples the whole process tree (launcher, SDK workers, anything they start)
every 0.2 s from /proc: the peak of the summed RSS, and the peak of the summed
PSS (shared pages such as TensorFlow's code split between the processes that
map them, so the sum does not count them twice). The model is a seeded
random-weight Keras Inception-v3 (about 92 MB of weights; values do not change
memory). Everything goes under bench/out/ (git-ignored); nothing is downloaded.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import pathlib
import subprocess
import sys
import time

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import make_images  # noqa: E402
from children import child_env, cpu_name  # noqa: E402

MODES = {'one model per process': [], 'one model per machine (--share_model)': ['--share_model']}


def descendants(root: int) -> list[int]:
    """root and every process below it, from /proc/*/stat's parent ids."""
    parent: dict[int, int] = {}
    for entry in os.scandir('/proc'):
        if entry.name.isdigit():
            try:
                with open(f'/proc/{entry.name}/stat') as f:
                    stat = f.read()
                parent[int(entry.name)] = int(stat.rsplit(')', 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue  # exited while we looked
    tree, frontier = [root], [root]
    while frontier:
        frontier = [pid for pid, ppid in parent.items() if ppid in frontier]
        tree.extend(frontier)
    return tree


def memory_kb(pid: int) -> tuple[int, int]:
    """(RSS, PSS) of one process in kB; (0, 0) if it is gone."""
    rss = pss = 0
    try:
        with open(f'/proc/{pid}/status') as f:
            rss = next((int(line.split()[1]) for line in f if line.startswith('VmRSS:')), 0)
        with open(f'/proc/{pid}/smaps_rollup') as f:
            pss = next((int(line.split()[1]) for line in f if line.startswith('Pss:')), 0)
    except (OSError, ValueError):
        pass
    return rss, pss


@dataclasses.dataclass
class TreePeak:
    wall_s: float
    peak_rss_mb: float
    peak_pss_mb: float
    peak_process_rss_mb: float
    processes_seen: int
    returncode: int


def run_sampled(argv: list[str], log: pathlib.Path, interval_s: float = 0.2) -> TreePeak:
    log.parent.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    with open(log, 'w') as out:
        child = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=child_env())
        peak_rss = peak_pss = peak_one = 0
        seen: set[int] = set()
        while child.poll() is None:
            pids = descendants(child.pid)
            seen.update(pids)
            mem = [memory_kb(pid) for pid in pids]
            peak_rss = max(peak_rss, sum(r for r, _ in mem))
            peak_pss = max(peak_pss, sum(p for _, p in mem))
            peak_one = max([peak_one, *(r for r, _ in mem)])
            time.sleep(interval_s)
    return TreePeak(round(time.monotonic() - start, 1), round(peak_rss / 1024, 1),
                    round(peak_pss / 1024, 1), round(peak_one / 1024, 1), len(seen),
                    child.returncode)


def ensure_model(out: pathlib.Path) -> pathlib.Path:
    path = out / 'models' / 'inception_v3_random_seed0.keras'
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, '-c', 'import sys, keras; keras.utils.set_random_seed(0); '
                        'keras.applications.InceptionV3(weights=None).save(sys.argv[1])',
                        str(path)], check=True, env=child_env())
    return path


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--n', type=int, default=128, help='photos per run')
    ap.add_argument('--reps', type=int, default=1, help='runs per mode (alternating)')
    ap.add_argument('--batch_size', type=int, default=32)
    ap.add_argument('--workdir', default=str(HERE / 'out' / 'shared_model'))
    args = ap.parse_args(argv)
    out = pathlib.Path(args.workdir).resolve()
    images = make_images.ensure_images(make_images.default_folder(out / 'images'), args.n)
    manifest = make_images.write_manifest(images, out / f'photos-{args.n}.txt')
    model = ensure_model(out)
    print(f'CPU: {cpu_name()}; '
          f'load average before: {os.getloadavg()[0]:.2f}', flush=True)
    results: dict[str, list[dict]] = {mode: [] for mode in MODES}
    for rep in range(args.reps):
        for mode, extra in MODES.items():
            dest = out / 'runs' / f'{"shared" if extra else "per_process"}-{rep}'
            argv = [sys.executable, '-m', 'pipeline.run', '--input', str(manifest),
                    '--output', str(dest), '--model', str(model),
                    '--batch_size', str(args.batch_size),
                    '--direct_running_mode=multi_processing', '--direct_num_workers=2', *extra]
            peak = run_sampled(argv, out / 'logs' / f'{dest.name}.log')
            if peak.returncode != 0:
                print(f'{mode}: exit {peak.returncode}; see {out / "logs" / dest.name}.log')
                return 1
            results[mode].append(dataclasses.asdict(peak))
            print(f'{mode:40s} peak tree RSS {peak.peak_rss_mb:8.1f} MB  PSS '
                  f'{peak.peak_pss_mb:8.1f} MB  largest process {peak.peak_process_rss_mb:7.1f} MB  '
                  f'{peak.processes_seen} processes  {peak.wall_s:6.1f} s', flush=True)
    print(f'load average after: {os.getloadavg()[0]:.2f}')
    (out / 'results.json').write_text(json.dumps(
        {'cpu': cpu_name(), 'n': args.n, 'batch_size': args.batch_size, 'results': results},
        indent=2))
    return 0


if __name__ == '__main__':
    sys.exit(main())
