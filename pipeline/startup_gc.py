"""No cyclic garbage collection while a run launches; the launch's objects frozen after.

Launching a Keras run creates about 700,000 long-lived Python objects (Beam's,
TensorFlow's and Keras's modules, the model's layers). CPython's cyclic
collector walks all of them in each full collection, and the imports allocate
enough to trigger several: about 0.7 s of Inception-v3's 6.4 s start-up on AMD
EPYC Zen 3. Those objects live for the whole process, so the walks find almost
nothing: a `gc.collect()` after the launch found 23,000 unreachable objects and
freed no measurable memory (RSS 864 MB before and after).

So `imagelabel run` and the Flex Template's `main.py` (the process's own command,
not a library call) call `pause()` before their imports (`python -m pipeline.run`
as its `main` starts, after its module's imports), and the launcher calls
`resume()` just before the pipeline runs. `resume()` freezes what exists (`gc.freeze()`: later collections
never walk it again, which also makes them cheaper during the run) and turns
collection back on. The price is that cyclic garbage made during the launch is
kept, a one-off of the size measured above. Models loaded at launch only to
convert or compare are big cyclic garbage, so the launch collects them itself
first (`pipeline.model_prep._free_launch_only_models`). This is CPython's
documented pattern for pre-fork servers (`gc.disable()` early, `gc.freeze()` later).
"""
from __future__ import annotations

import gc

_paused = False


def pause() -> None:
    """Turn cyclic collection off until `resume()`, unless someone else already has."""
    global _paused
    if gc.isenabled():
        gc.disable()
        _paused = True


def resume() -> None:
    """Freeze the objects that exist now and turn collection back on, if `pause()` turned it off.

    A no-op otherwise: a library caller's own GC settings are left alone.
    """
    global _paused
    if _paused:
        gc.freeze()
        gc.enable()
        _paused = False


def paused() -> bool:
    """Whether `pause()` turned collection off and `resume()` has not yet run."""
    return _paused
