"""The CPU reading that decides which precision is fast, and which we name beside figures."""
from transforms.cpu import parse_cpuinfo, this_cpu

ZEN3 = '''processor\t: 0
model name\t: AMD EPYC 7B13
flags\t\t: fpu sse2 avx avx2 fma
processor\t: 1
model name\t: AMD EPYC 7B13
flags\t\t: fpu sse2 avx avx2 fma
'''
SAPPHIRE = '''processor\t: 0
model name\t: Intel(R) Xeon(R) Platinum 8481C
flags\t\t: avx2 avx512f avx512_vnni avx512_bf16 amx_bf16 amx_tile amx_int8
'''


def test_an_avx2_only_cpu_has_neither_bf16_nor_int8_dot_units():
    cpu = parse_cpuinfo(ZEN3)
    assert cpu.model == 'AMD EPYC 7B13' and cpu.cores == 2
    assert cpu.units == ['AVX2']
    assert not cpu.has_bf16 and not cpu.has_int8_dot
    assert cpu.describe() == 'AMD EPYC 7B13 (2 cores; AVX2)'


def test_a_cpu_with_amx_has_bf16_and_int8_dot_units():
    cpu = parse_cpuinfo(SAPPHIRE)
    assert cpu.units == ['AVX2', 'AVX512F', 'AVX512-VNNI', 'AVX512-BF16', 'AMX-BF16', 'AMX-INT8']
    assert cpu.has_bf16 and cpu.has_int8_dot


def test_this_machine_is_read_with_a_model_name_and_cores():
    cpu = this_cpu()
    assert cpu.model and cpu.cores >= 1
    assert cpu.describe().startswith(cpu.model)
