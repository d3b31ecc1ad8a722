"""The README's tables are the code's: schema and error classes cannot drift."""
from conftest import ROOT
from transforms.errors import ERROR_CLASSES
from transforms.schema import ERRORS_SCHEMA, LABELS_SCHEMA, schema_markdown

README = (ROOT / 'README.md').read_text()


def readme_sql_blocks(dialect: str) -> list[str]:
    """The statements of the README's ```sql DIALECT blocks, comments dropped."""
    statements = []
    for block in README.split(f'```sql {dialect}\n')[1:]:
        body = block.split('```', 1)[0]
        code = '\n'.join(line for line in body.splitlines() if not line.strip().startswith('--'))
        statements.extend(s.strip() for s in code.split(';') if s.strip())
    return statements


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


def test_the_readme_duckdb_queries_run_on_a_real_run(tmp_path, mobilenet_v2_quant, assets):
    """Every ```sql duckdb statement of the README, over a real run's Parquet files."""
    import shutil

    import duckdb

    from conftest import run_cli
    images = tmp_path / 'photos'
    images.mkdir()
    for p in sorted((assets / 'imagenet_sample' / 'images').glob('n0210*.JPEG'))[:16]:
        shutil.copy(p, images / p.name)  # dog breeds among them: the README's second query
    (images / 'broken.jpg').write_bytes(b'not an image')
    out = tmp_path / 'out'
    assert run_cli('run', '--input', images, '--output', out, '--model', mobilenet_v2_quant).code == 0
    statements = readme_sql_blocks('duckdb')
    assert len(statements) >= 3
    con = duckdb.connect()
    results = [con.execute(s.replace("'out/", f"'{out}/")).fetchall() for s in statements]
    assert all(results), [s for s, r in zip(statements, results) if not r]
    top = results[0]
    assert sum(n for _, n in top) <= 16 and top == sorted(top, key=lambda r: -r[1])
    errors = [r for r in results if any(isinstance(c, str) and c == 'not_an_image' for c in r[0])]
    assert errors and errors[0][0][-1] == 1
