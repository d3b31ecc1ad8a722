"""The reference accuracy of the assets' models, read from verify_output.txt.

The figures were measured by a direct interpreter run over the ImageNet sample
(see the assets' SOURCES.md); tests compare the pipeline's own figures with them.
They are parsed from the file, never copied into the tests, so a re-measured
asset folder is the one source of truth.
"""
from __future__ import annotations

import pathlib
import re

_ROW = re.compile(r'^(\S+\.tflite)\s+(plain|crop)\s+([\d.]+)%\s+([\d.]+)%')


def reference_accuracy(assets: pathlib.Path) -> dict[tuple[str, str], tuple[float, float]]:
    """{(model file name, 'plain' | 'crop'): (top-1, top-5) as fractions}."""
    figures = {}
    for line in (assets / 'verify_output.txt').read_text().splitlines():
        m = _ROW.match(line)
        if m:
            figures[(m[1], m[2])] = (float(m[3]) / 100, float(m[4]) / 100)
    if len(figures) != 6:
        raise AssertionError(f'expected 3 models x 2 recipes in verify_output.txt, got {figures}')
    return figures
