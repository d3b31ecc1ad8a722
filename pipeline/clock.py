"""The launch clock: wall-clock seconds, and when this process started.

Kept free of Beam and TensorFlow imports: `imagelabel` reads the process start
before it imports anything heavy.
"""
from __future__ import annotations

import os
import time


def now() -> float:
    """Wall-clock seconds: the start-up clock is compared with worker timestamps."""
    return time.time()


def process_start_time() -> float | None:
    """When this process started, in wall-clock seconds (Linux /proc); None elsewhere.

    `imagelabel run` counts start-up from here, so Python's and Beam's imports
    (about 1 s) are part of it, as they are part of the user's wait. The process
    age comes from /proc/uptime (10 ms resolution), not /proc/stat's whole-second
    boot time.
    """
    try:
        with open('/proc/self/stat') as f:
            ticks = int(f.read().rsplit(')', 1)[1].split()[19])  # field 22: starttime
        with open('/proc/uptime') as f:
            uptime = float(f.read().split()[0])
        age = uptime - ticks / os.sysconf('SC_CLK_TCK')
    except (OSError, ValueError, IndexError):
        return None
    return now() - max(age, 0.0)
