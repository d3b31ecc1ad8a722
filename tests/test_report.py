"""`imagelabel report` over real runs: the page in headless Chromium, report.json's figures,
sampling, unreadable images, partitioned outputs, and one-line errors."""
from __future__ import annotations

import collections
import json
import pathlib
import re
import shutil

import numpy as np
import pyarrow.parquet as pq
import pytest

from conftest import read_parquet_rows, run_cli
from report_runs import HOSTILE_NAME, mixed_photos, mixed_run, without_top_label  # noqa: F401
from pipeline.report import figures

CHROMIUM = pathlib.Path('/usr/bin/chromium')
CHROMIUM_FLAGS = ['--no-sandbox', '--disable-gpu', '--disable-background-networking',
                  '--disable-component-update', '--disable-sync', '--no-first-run',
                  '--disable-quic']


def make_report(output: pathlib.Path, folder: pathlib.Path, *flags: str) -> tuple[str, dict]:
    out = folder / 'report.html'
    result = run_cli('report', '--output', output, '--out', out, *flags)
    assert result.code == 0, result.err
    return out.read_text(), json.loads((folder / 'report.json').read_text())


@pytest.fixture(scope='module')
def mixed_report(mixed_run, tmp_path_factory) -> pathlib.Path:
    folder = tmp_path_factory.mktemp('report')
    make_report(mixed_run, folder)
    return folder / 'report.html'


def launch_chromium(playwright):
    if not CHROMIUM.exists():
        pytest.fail(f'{CHROMIUM} not found: the browser test needs Debian\'s chromium; install '
                    'it with `apt-get install -y --no-install-recommends chromium`')
    return playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_FLAGS)


def test_the_report_opens_offline_in_chromium_with_a_tile_per_image_and_an_error_row_per_error(
        mixed_run, mixed_report, tmp_path):
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail('the browser test drives chromium with playwright: pip install playwright '
                    '(no `playwright install`: it uses /usr/bin/chromium)')
    labeled = read_parquet_rows(mixed_run, 'labels')
    errors = read_parquet_rows(mixed_run, 'errors')
    console, page_errors, requests, dialogs = [], [], [], []
    with sync_playwright() as p:
        browser = launch_chromium(p)
        page = browser.new_page(viewport={'width': 1100, 'height': 900})
        page.on('console', lambda m: console.append(f'{m.type}: {m.text}'))
        page.on('pageerror', lambda e: page_errors.append(str(e)))
        page.on('request', lambda r: requests.append(r.url))
        page.on('dialog', lambda d: (dialogs.append(d.message), d.dismiss()))
        page.goto(mixed_report.as_uri(), wait_until='load')
        page.wait_for_timeout(300)  # let any late request or error show up
        tiles = page.locator('.tile').count()
        error_rows = page.locator('#errors tr.error-row').count()
        hostile_text = page.get_by_text(HOSTILE_NAME, exact=True).count()
        injected = page.evaluate(
            "Array.from(document.querySelectorAll('img')).filter("
            "i => !i.getAttribute('src').startsWith('data:image/') || i.hasAttribute('onerror'))"
            ".length")
        scripts = page.evaluate("document.querySelectorAll('script').length")
        unloaded = page.evaluate(
            "Array.from(document.images).filter(i => !i.complete || i.naturalWidth === 0).length")
        shot = tmp_path / 'report.png'
        page.screenshot(path=str(shot), full_page=True)
        browser.close()
    print(f'screenshot of the report: {shot}')
    assert [c for c in console if c.startswith('error')] == [] and page_errors == []
    assert requests == [mixed_report.as_uri()], 'the page must make no request but its own'
    assert dialogs == []
    assert tiles == len(labeled) and len(labeled) == 12
    assert error_rows == len(errors) == 1
    assert hostile_text >= 1, 'the hostile file name shows as text'
    assert injected == 0 and scripts == 0 and unloaded == 0
    assert shot.stat().st_size > 10_000


def test_report_json_holds_the_figures_of_the_tables(mixed_run, tmp_path):
    page, figures_json = make_report(mixed_run, tmp_path, '--low_confidence', '0.9')
    labeled = read_parquet_rows(mixed_run, 'labels')
    errors = read_parquet_rows(mixed_run, 'errors')
    tops = collections.Counter(r['labels'][0]['label'] for r in labeled)
    scores = np.array([r['labels'][0]['score'] for r in labeled])
    assert figures_json['labels'] == dict(tops)
    assert figures_json['counts'] == {'listed': 13, 'inputs': 13, 'skipped': 0, 'labeled': 12,
                                      'reused': 0, 'errors': 1}
    assert sum(figures_json['scores']['counts']) == len(labeled)
    assert figures_json['low_confidence'] == {
        'threshold': 0.9, 'images': int((scores < 0.9).sum()),
        'share': pytest.approx((scores < 0.9).mean())}
    assert figures_json['errors_by_class'] == {errors[0]['error']: 1} == {'not_an_image': 1}
    assert figures_json['run']['run_ids'] == [labeled[0]['run_id']]
    assert figures_json['run']['model_ids'] == [labeled[0]['model_id']]
    assert figures_json['tiles'] == {'shown': 12, 'labeled': 12, 'sampled': False,
                                     'max_tiles': 500, 'unreadable': 0}
    assert figures_json['drift'] is None
    assert 'all 12 labeled images' in page


def test_the_page_escapes_every_string_from_the_data(mixed_run, tmp_path):
    page, _ = make_report(mixed_run, tmp_path)
    assert HOSTILE_NAME not in page
    assert '&lt;img src=x onerror=alert(1)&gt;.jpg' in page
    assert '<script' not in page.lower()
    assert 'content="default-src &#x27;none&#x27;; img-src data:' in page  # CSP: no request


def test_a_large_run_samples_the_contact_sheet_by_label_and_says_so(mixed_run, tmp_path):
    page, figures_json = make_report(mixed_run, tmp_path, '--max_tiles', '4')
    assert figures_json['tiles']['shown'] == 4 and figures_json['tiles']['sampled'] is True
    assert page.count('<figure class="tile"') == 4
    assert 'showing 4 of 12 labeled images: a sample stratified by top label' in page
    # More labels than tiles: one tile for each of the most frequent labels.
    tops = [re.search(r'class="lbl">([^<]*)<', f).group(1)
            for f in page.split('<figure class="tile"')[1:]]
    assert len(set(tops)) == 4
    assert {'ambulance', 'goldfish'} <= set(tops)  # the two labels with two images each
    assert [figures_json['labels'][t] for t in tops] == sorted(
        (figures_json['labels'][t] for t in tops), reverse=True)


def test_an_image_gone_since_the_run_is_a_grey_tile_with_the_reason(mixed_run, tmp_path):
    output = tmp_path / 'out'
    shutil.copytree(mixed_run, output)
    (labels_file,) = output.rglob('labels-*.parquet')
    table = pq.read_table(labels_file)
    uris = table.column('uri').to_pylist()
    gone = [u for u in uris if u.endswith('tench.JPEG')][0]
    damaged = tmp_path / 'damaged.jpg'
    damaged.write_bytes(pathlib.Path(gone).read_bytes()[:2000])
    moved = [str(tmp_path / 'vanished.jpg') if u == gone else str(damaged)
             if u.endswith('goldfish.JPEG') else u for u in uris]
    pq.write_table(table.set_column(0, 'uri', [moved]), labels_file)
    page, figures_json = make_report(output, tmp_path)
    assert figures_json['tiles']['unreadable'] == 2
    assert page.count('class="grey"') == 2
    assert 'read/not_found' in page and 'decode/truncated' in page
    assert '2 could not be read for a thumbnail (grey tiles)' in page


def test_runs_in_dated_subfolders_are_found(mixed_run, tmp_path):
    partition = tmp_path / 'out' / 'run_date=2026-11-23'
    shutil.copytree(mixed_run, partition)
    _, figures_json = make_report(tmp_path / 'out', tmp_path)
    assert figures_json['counts']['labeled'] == 12 and figures_json['counts']['errors'] == 1
    assert figures_json['run']['summaries'] == 1


@pytest.mark.parametrize('flags, message', [
    (['--low_confidence', '2'], '--low_confidence is a score between 0 and 1'),
    (['--max_tiles', '-1'], '--max_tiles must be 0 or more'),
    (['--max_tile', '3'], 'unrecognized arguments: --max_tile'),
])
def test_a_bad_flag_is_refused_with_one_line(mixed_run, tmp_path, flags, message):
    result = run_cli('report', '--output', mixed_run, '--out', tmp_path / 'r.html', *flags)
    assert result.code == 2 and result.out == ''
    assert result.err.startswith('imagelabel: error: ') and message in result.err
    assert len(result.err.strip().splitlines()) == 1


def test_a_folder_without_a_run_is_refused_with_one_line(tmp_path):
    result = run_cli('report', '--output', tmp_path, '--out', tmp_path / 'r.html')
    assert result.code == 2
    assert 'holds no labels-*.parquet or errors-*.parquet' in result.err
    assert len(result.err.strip().splitlines()) == 1


def test_quotas_keep_every_label_while_the_budget_allows_and_stay_proportional():
    assert figures.quotas([5, 3, 1], 100) == [5, 3, 1]
    assert figures.quotas([91, 7, 1, 1], 10) == [7, 1, 1, 1]
    assert figures.quotas([50, 30, 20], 2) == [1, 1, 0]
    assert figures.quotas([3, 0, 2], 4) == [2, 0, 2]  # an empty label gets no tile
    q = figures.quotas([600, 300, 100], 100)
    assert sum(q) == 100 and q == [60, 30, 10]


def test_a_stratified_sample_has_the_quota_of_every_label_and_no_duplicate():
    rng = np.random.default_rng(1)
    codes = rng.choice(5, size=10_000, p=[0.6, 0.2, 0.1, 0.0999, 0.0001])
    chosen = figures.stratified_sample(codes, 500)
    assert len(chosen) == len(set(chosen.tolist())) == 500
    sizes = np.bincount(codes, minlength=5)
    assert np.bincount(codes[chosen], minlength=5).tolist() == figures.quotas(
        sizes.tolist(), 500)
    assert np.array_equal(chosen, figures.stratified_sample(codes, 500))  # seeded


def test_a_run_where_every_image_failed_still_has_a_report(mixed_run, tmp_path):
    output = tmp_path / 'out'
    output.mkdir()
    for f in mixed_run.rglob('errors-*.parquet'):
        shutil.copy(f, output)
    page, figures_json = make_report(output, tmp_path)
    assert figures_json['counts'] == {'listed': 1, 'inputs': 1, 'skipped': 0, 'labeled': 0,
                                      'reused': 0, 'errors': 1}
    assert figures_json['labels'] == {} and figures_json['tiles']['shown'] == 0
    assert figures_json['run']['summaries'] == 0  # counts from the tables, as on Dataflow
    assert page.count('class="error-row"') == 1
    result = run_cli('report', '--output', output, '--compare', mixed_run,
                     '--out', tmp_path / 'r.html')
    assert result.code == 2 and 'has no labeled image' in result.err


def test_the_readme_screenshot_is_a_small_png_that_is_not_package_data():
    import tomllib
    from conftest import ROOT
    png = ROOT / 'pipeline' / 'report' / 'example.png'
    assert png.read_bytes()[:8] == b'\x89PNG\r\n\x1a\n' and png.stat().st_size < 160_000
    assert '](pipeline/report/example.png)' in (ROOT / 'README.md').read_text()
    config = tomllib.loads((ROOT / 'pyproject.toml').read_text())['tool']['setuptools']
    data = config.get('package-data', {})
    assert not any('png' in p or p == '*' for p in data.get('pipeline.report', []) +
                   data.get('pipeline', []) + data.get('*', []))


def test_an_output_older_than_the_top_label_column_reads_it_from_the_labels(mixed_run, tmp_path):
    from pipeline.report import data
    old = data.find_run(str(without_top_label(mixed_run, tmp_path / 'old')))
    new = data.find_run(str(mixed_run))
    assert 'top_label' not in pq.read_schema(old.labels[0]).names
    got = data.read_labels(old, ['uri', 'top_label']).sort_by('uri').to_pylist()
    want = data.read_labels(new, ['uri', 'top_label']).sort_by('uri').to_pylist()
    assert got == want and all(r['top_label'] for r in got)
