"""Install the DuckDB extensions bqemulator needs from the wheels that ship them (offline).

Run with .venv-bq's python by `make install`; the tests never download anything.
"""
import glob
import os
import sys

import duckdb

site = os.path.dirname(os.path.dirname(duckdb.__file__))
for name in ('spatial', 'avro'):
    found = glob.glob(os.path.join(site, f'duckdb_extension_{name}', '**',
                                   f'{name}.duckdb_extension'), recursive=True)
    if not found:
        sys.exit(f'duckdb-extension-{name} is not installed in {site}')
    duckdb.execute(f"INSTALL '{found[0]}'")
print('duckdb extensions installed: spatial, avro')
