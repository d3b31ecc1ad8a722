"""The README's tables are the code's: schema and error classes cannot drift."""
from conftest import ROOT
from transforms.errors import ERROR_CLASSES
from transforms.schema import ERRORS_SCHEMA, LABELS_SCHEMA, schema_markdown

README = (ROOT / 'README.md').read_text()


def test_readme_schema_tables_match_the_code():
    assert schema_markdown(LABELS_SCHEMA) in README
    assert schema_markdown(ERRORS_SCHEMA) in README


def test_readme_lists_every_error_class_with_its_meaning():
    for name, meaning in ERROR_CLASSES.items():
        assert f'| `{name}` | {meaning} |' in README, name


def test_readme_has_exactly_the_two_setup_commands_that_ci_runs():
    ci = (ROOT / '.ci' / 'run').read_text()
    block = README.split('## Set up and test', 1)[1].split('```sh', 1)[1].split('```', 1)[0]
    commands = [line for line in block.strip().splitlines() if line.strip()]
    assert len(commands) == 2
    for command in commands:
        assert command in ci
