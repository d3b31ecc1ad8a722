"""What this machine's CPU can do, read from /proc/cpuinfo.

Dataflow workers come as AMD Zen 3 (AVX2 only), AMD Zen 4 (AVX-512 with VNNI
and BF16) and Intel Sapphire Rapids (AMX); which precision pays off depends on
which one a job landed on. Every figure we print names the CPU beside it.
"""
from __future__ import annotations

import dataclasses
import functools
import platform

#: The units that decide which precision is fast, by their /proc/cpuinfo flag.
UNITS = {
    'AVX2': 'avx2',
    'AVX512F': 'avx512f',
    'AVX512-VNNI': 'avx512_vnni',
    'AVX512-BF16': 'avx512_bf16',
    'AMX-BF16': 'amx_bf16',
    'AMX-INT8': 'amx_int8',
}


@dataclasses.dataclass(frozen=True)
class CpuInfo:
    model: str
    cores: int
    flags: frozenset[str]

    @property
    def units(self) -> list[str]:
        """The relevant units present, e.g. ['AVX2', 'AVX512F', 'AVX512-VNNI']."""
        return [name for name, flag in UNITS.items() if flag in self.flags]

    @property
    def has_bf16(self) -> bool:
        """bf16 arithmetic units: without them oneDNN does not rewrite a graph to bf16."""
        return bool({'avx512_bf16', 'amx_bf16'} & self.flags)

    @property
    def has_int8_dot(self) -> bool:
        """int8 dot-product units (VNNI or AMX)."""
        return bool({'avx512_vnni', 'avx_vnni', 'amx_int8'} & self.flags)

    def describe(self) -> str:
        return f'{self.model} ({self.cores} cores; {", ".join(self.units) or "no AVX2"})'


def parse_cpuinfo(text: str, cores: int | None = None) -> CpuInfo:
    """CpuInfo from the text of /proc/cpuinfo (the first processor's entry)."""
    model, flags, count = '', frozenset(), 0
    for line in text.splitlines():
        key, _, value = line.partition(':')
        key = key.strip()
        if key == 'processor':
            count += 1
        elif key == 'model name' and not model:
            model = value.strip()
        elif key == 'flags' and not flags:
            flags = frozenset(value.split())
    return CpuInfo(model=model or platform.processor() or 'unknown CPU',
                   cores=cores or count or 1, flags=flags)


@functools.lru_cache(maxsize=1)
def this_cpu() -> CpuInfo:
    try:
        with open('/proc/cpuinfo', encoding='utf-8', errors='replace') as f:
            text = f.read()
    except OSError:
        text = ''
    import os
    return parse_cpuinfo(text, cores=len(os.sched_getaffinity(0)) if hasattr(
        os, 'sched_getaffinity') else os.cpu_count())
