"""The launch clock: the process start read from /proc, to 10 ms."""
from __future__ import annotations

import os
import subprocess
import sys

from conftest import ROOT

_AGE_AFTER_SLEEP = r'''
import time
time.sleep(0.6)
from pipeline.clock import now, process_start_time
print(now() - process_start_time())
'''


def test_process_start_time_is_when_the_process_began_not_when_it_was_asked():
    out = subprocess.run([sys.executable, '-c', _AGE_AFTER_SLEEP], cwd=ROOT, timeout=60,
                         env=dict(os.environ, PYTHONPATH=str(ROOT)), capture_output=True,
                         text=True)
    assert out.returncode == 0, out.stderr
    age = float(out.stdout)
    # The process slept 0.6 s before asking; Python's own start adds a little.
    assert 0.6 <= age < 5.0


def test_this_long_running_process_started_before_now():
    from pipeline.clock import now, process_start_time
    started = process_start_time()
    assert started is not None and started < now()
