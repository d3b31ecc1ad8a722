"""Tell users what their CPU can do: a faster precision, with the factor we measured.

The factors are the README's performance table ("Precision by CPU"), end to end or
bare model against float32 on the same CPU; data here, so a new measurement is a
one-line change. A hint is only a hint: the run still says how well the faster
precision agrees with float32 once it is tried (--min_agreement).
"""
from __future__ import annotations

import dataclasses
from typing import Callable

from transforms.cpu import CpuInfo


@dataclasses.dataclass(frozen=True)
class PrecisionHint:
    precision: str
    applies: Callable[[CpuInfo], bool]
    measured: str  # the factor over float32, and where it was measured
    flags: str = ''  # more flags that go with it


#: Best first: the first that applies to the CPU and the model is the one suggested, so a
#: CPU family with its own measurement comes before the broader rule (AMX before bf16
#: before AVX2). Factors are over the float32 bare-model ceiling on the same CPU, end to
#: end from the first batch on (README "Precision by CPU"), except Zen 4's, which is issue
#: 13's bare model against bare model (no such CPU was lent).
HINTS = (
    PrecisionHint('int8', lambda cpu: 'AMX-INT8' in cpu.units,
                  '4.1x the float32 bare model end to end with OpenVINO, 3.1x with LiteRT, '
                  'on Intel Xeon with AMX (Emerald Rapids; bf16 3.0x)',
                  flags='--int8_runtime openvino'),
    PrecisionHint('bf16', lambda cpu: 'AMX-BF16' in cpu.units,
                  '3.0x the float32 bare model end to end on Intel Xeon with AMX '
                  '(Emerald Rapids)'),
    PrecisionHint('bf16', lambda cpu: cpu.has_bf16,
                  '2.1x on AMD Zen 4 (AVX512-BF16), bare model against bare model'),
    PrecisionHint('int8', lambda cpu: 'AVX2' in cpu.units,
                  '2.3x the float32 bare model end to end with OpenVINO, 1.2x with LiteRT, '
                  'on AMD Zen 3 (AVX2 only)', flags='--int8_runtime openvino'),
)


#: Keeping float32 on a CPU without bf16 units: the same arithmetic on LiteRT
#: (`available` holds 'float32-litert' for a Keras model or SavedModel run on TensorFlow).
FLOAT_LITERT = PrecisionHint('float32-litert',
                             lambda cpu: 'AVX2' in cpu.units and not cpu.has_bf16,
                             '1.3x TensorFlow end to end on AMD Zen 3 (AVX2 only)',
                             flags='--float_runtime litert')


def precision_hint(cpu: CpuInfo, used: str, available: set[str]) -> str | None:
    """'--precision bf16 ...' when a faster precision than `used` exists for this CPU and model
    (and, where bf16 is not, --float_runtime litert for the same float32 on LiteRT)."""
    if used != 'float32':
        return None
    keep = (f'{FLOAT_LITERT.flags}: measured {FLOAT_LITERT.measured}'
            if FLOAT_LITERT.precision in available and FLOAT_LITERT.applies(cpu) else '')
    for hint in HINTS:
        if hint.precision in available and hint.applies(cpu):
            flags = f'--precision {hint.precision}' + (f' {hint.flags}' if hint.flags else '')
            return (f'{flags} may be faster on this CPU: measured '
                    f'{hint.measured} for Inception-v3; the run checks its agreement with '
                    'float32 at launch' + (f'; or, keeping float32, {keep}' if keep else ''))
    return f'{keep} for Inception-v3' if keep else None
