"""The Flex Template's metadata.json, generated from the flags: they cannot drift apart.

    python -m pipeline.template_metadata > templates/metadata.json     # or: make metadata

Every flag the launcher declares (`pipeline.options.add_launcher_flags`: ours,
each sink's, and Beam's --dry_run) becomes one template parameter with its help
text, whether it is optional, its default, and a validation regex derived from
the flag itself: its choices, its type, or a store_true flag's true/false. A few
string flags have a known shape (a date, a gs:// path, a model name or path);
those shapes are listed here, once. tests/test_template.py fails when the
checked-in file is not what this module prints.

The Flex Template launcher passes each parameter as `--name=value`; argparse
refuses a value on a store_true flag, so `template_argv` turns `--flag=true` into
`--flag` and drops `--flag=false` before the launcher parses them.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from typing import Any, Sequence

from pipeline.options import RUN_ID_SHAPE, add_launcher_flags
from transforms.models import REGISTRY

NAME = 'imagelabel'
DESCRIPTION = ('Batch image labeling on Apache Beam and TensorFlow: top-k ImageNet labels '
               'and an embedding per image, to Parquet; one errors row per image that '
               'cannot be labeled.')
#: The launcher refuses to start without these (each sink's enabling flag is checked too).
REQUIRED = ('input',)

GCS_PATH = r'^gs://[a-z0-9][-_.a-z0-9]*[a-z0-9](/.*)?$'
BOOLEAN = r'^(true|false)$'
INTEGER = r'^[0-9]+$'
FLOAT = r'^[0-9]+(\.[0-9]+)?$'
#: String flags with a known shape. On Dataflow every path must be gs:// (the launcher
#: refuses a local one anyway, but the console can say so before the launch).
STRING_SHAPES: dict[str, str] = {
    'input': GCS_PATH,
    'output': GCS_PATH,
    'weights': GCS_PATH,
    'labels_file': GCS_PATH,
    'model': '^(' + '|'.join(re.escape(name) for name in sorted(REGISTRY)) + '|gs://.+)$',
    'run_date': r'^[0-9]{4}-[0-9]{2}-[0-9]{2}$',
    'run_id': RUN_ID_SHAPE,
    'bigquery_table': r'^([a-z][-a-z0-9.:]{4,61}[a-z0-9][:.])?[A-Za-z0-9_]+\.[A-Za-z0-9_$-]+$',
    'bigquery_temp': GCS_PATH,
    'model_cache': GCS_PATH,
}
#: Examples for the parameters without a default (shown in the console).
EXAMPLES: dict[str, str] = {
    'input': 'gs://my-bucket/photos/**/*.jpg',
    'output': 'gs://my-bucket/labels',
    'weights': 'gs://my-bucket/models/inception_v3_weights_tf_dim_ordering_tf_kernels.h5',
    'labels_file': 'gs://my-bucket/models/labels.txt',
    'run_date': '2026-11-23',
    'run_id': 'nightly-20261123',
    'model_copies': '1',
    'bigquery_table': 'my-project:imagelabel.labels',
    'bigquery_temp': 'gs://my-bucket/tmp',
    'model_cache': 'gs://my-bucket/imagelabel-cache',
}


def launcher_actions() -> list[argparse.Action]:
    """The launcher's flags, in declaration order (argparse's help action left out)."""
    parser = argparse.ArgumentParser(add_help=False)
    add_launcher_flags(parser)
    return list(parser._actions)  # noqa: SLF001 - the flags as declared


def is_boolean(action: argparse.Action) -> bool:
    return isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction))  # noqa: SLF001


def validation_regex(action: argparse.Action) -> str:
    """One regex per flag: from its choices, its type, or a known string shape."""
    if action.choices:
        return '^(' + '|'.join(re.escape(str(c)) for c in action.choices) + ')$'
    if is_boolean(action):
        return BOOLEAN
    if action.type is int:
        return INTEGER
    if action.type is float:
        return FLOAT
    return STRING_SHAPES.get(action.dest, r'^.+$')


#: Flags whose default is this machine's (a per-user folder): on Dataflow it must be given.
MACHINE_DEFAULTS = frozenset({'model_cache'})


def default_text(action: argparse.Action) -> str | None:
    if action.dest in MACHINE_DEFAULTS:
        return None
    if is_boolean(action):
        return 'true' if action.default else 'false'
    return None if action.default is None else str(action.default)


def label(name: str) -> str:
    return name.replace('_', ' ').capitalize()


def parameter(action: argparse.Action) -> dict[str, Any]:
    """One ParameterMetadata of the Dataflow API, from one flag."""
    name = action.option_strings[0].removeprefix('--')
    help_text = (action.help or '').replace('%%', '%')
    default = default_text(action)
    if default is not None:
        help_text += f' Default: {default}.'
    p: dict[str, Any] = {
        'name': name,
        'label': label(name),
        'helpText': help_text,
        'isOptional': name not in REQUIRED,
        'regexes': [validation_regex(action)],
    }
    if default is not None:
        p['defaultValue'] = default
    if name in EXAMPLES:
        p['customMetadata'] = {'example': EXAMPLES[name]}
    return p


def metadata() -> dict[str, Any]:
    return {'name': NAME, 'description': DESCRIPTION,
            'parameters': [parameter(a) for a in launcher_actions()]}


def render() -> str:
    return json.dumps(metadata(), indent=2, ensure_ascii=False) + '\n'


def template_argv(argv: Sequence[str]) -> list[str]:
    """The launcher's `--flag=true|false` for store_true flags, as argparse takes them."""
    booleans = {a.option_strings[0] for a in launcher_actions() if is_boolean(a)}
    out = []
    for arg in argv:
        flag, eq, value = arg.partition('=')
        if eq and flag in booleans:
            if value.lower() not in ('true', 'false'):
                out.append(arg)  # let the parser say what is wrong
            elif value.lower() == 'true':
                out.append(flag)
            continue
        out.append(arg)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    sys.stdout.write(render())
    return 0


if __name__ == '__main__':
    sys.exit(main())
