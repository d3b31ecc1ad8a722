"""Precision hints: a faster precision for this CPU, only where the model can use it."""
from __future__ import annotations


from conftest import run_cli, write_jpeg
from pipeline.hints import precision_hint
from transforms.cpu import parse_cpuinfo
from pipeline.summary import read_summary

ZEN3 = parse_cpuinfo('processor: 0\nmodel name: AMD EPYC 7B13\nflags: fpu sse avx avx2 fma\n')
ZEN4 = parse_cpuinfo('processor: 0\nmodel name: AMD EPYC 9B14\n'
                     'flags: avx2 avx512f avx512_vnni avx512_bf16\n')
# The lent GPU host of 2026-11-24 (Intel Xeon, family 6 model 207), as /proc/cpuinfo spells it.
AMX = parse_cpuinfo('processor: 0\nmodel name: Intel(R) Xeon(R) Processor\n'
                    'flags: avx2 avx512f avx512_vnni avx512_bf16 amx_bf16 amx_tile amx_int8\n')
OLD = parse_cpuinfo('processor: 0\nmodel name: Old Xeon\nflags: sse4_2 avx\n')


def test_a_cpu_with_bf16_units_is_told_about_bf16_first():
    hint = precision_hint(ZEN4, 'float32', {'bf16', 'int8'})
    assert hint.startswith('--precision bf16 may be faster on this CPU: measured 2.1x')


def test_a_cpu_with_amx_is_told_about_int8_on_openvino_first_with_its_own_measurement():
    hint = precision_hint(AMX, 'float32', {'bf16', 'int8', 'float32-litert'})
    assert hint.startswith('--precision int8 --int8_runtime openvino may be faster on this '
                           'CPU: measured 4.1x')
    assert 'Intel Xeon with AMX' in hint and 'Zen 3' not in hint
    assert 'litert:' not in hint  # float32 on LiteRT is offered only where bf16 is not
    # A model that cannot be quantized (bf16 only) is told about bf16 on the same CPU.
    assert precision_hint(AMX, 'float32', {'bf16'}).startswith(
        '--precision bf16 may be faster on this CPU: measured 3.0x')


def test_an_avx2_only_cpu_is_told_about_int8():
    assert precision_hint(ZEN3, 'float32', {'bf16', 'int8'}).startswith('--precision int8')


def test_a_keras_model_on_an_avx2_only_cpu_is_also_told_about_litert_float32():
    keras_model = {'bf16', 'int8', 'float32-litert'}
    hint = precision_hint(ZEN3, 'float32', keras_model)
    assert hint.startswith('--precision int8') and hint.endswith(
        '; or, keeping float32, --float_runtime litert: measured 1.3x TensorFlow end to end on '
        'AMD Zen 3 (AVX2 only)')
    assert precision_hint(ZEN3, 'float32', {'float32-litert'}) == (
        '--float_runtime litert: measured 1.3x TensorFlow end to end on AMD Zen 3 (AVX2 only) '
        'for Inception-v3')
    assert 'litert' not in precision_hint(ZEN4, 'float32', keras_model)  # bf16 is there
    assert 'litert' not in precision_hint(ZEN3, 'float32', {'int8'})  # cannot convert to it


def test_no_hint_without_a_usable_faster_precision():
    assert precision_hint(ZEN3, 'float32', set()) is None  # e.g. a .tflite model
    assert precision_hint(OLD, 'float32', {'bf16', 'int8'}) is None
    assert precision_hint(ZEN4, 'int8', {'bf16', 'int8'}) is None  # already reduced


def test_summary_names_the_cpu_its_units_and_the_precision_used(tiny_keras_model, tmp_path):
    from transforms.cpu import this_cpu
    write_jpeg(tmp_path / 'in' / 'a.jpg')
    r = run_cli('run', '--input', tmp_path / 'in', '--output', tmp_path / 'out',
                '--model', tiny_keras_model)
    assert r.code == 0, r.err
    summary = read_summary(str(tmp_path / 'out'))
    assert summary['cpu'] == this_cpu().model and summary['cpu_units'] == this_cpu().units
    assert summary['precision'] == 'float32' and summary['agreement'] is None
    assert summary['precision_hint'] == precision_hint(this_cpu(), 'float32',
                                                       {'bf16', 'int8', 'float32-litert'})
    assert f'cpu        {this_cpu().model}' in r.out


def test_a_quantized_tflite_reports_the_integer_precision_it_computes_in(mobilenet_v2_quant,
                                                                         tmp_path):
    write_jpeg(tmp_path / 'in' / 'a.jpg')
    r = run_cli('run', '--input', tmp_path / 'in', '--output', tmp_path / 'out',
                '--model', mobilenet_v2_quant)
    assert r.code == 0, r.err
    summary = read_summary(str(tmp_path / 'out'))
    assert summary['precision'] == 'uint8' and summary['precision_hint'] is None
    assert 'precision uint8' in r.out
