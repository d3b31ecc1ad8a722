"""Drift between runs: the pure math, and `report --compare` over real runs."""
from __future__ import annotations

import json

import pytest

from conftest import run_cli
from report_runs import fish_run, vehicle_run  # noqa: F401 - fixtures
from pipeline.report.drift import compare, shares, total_variation


def test_a_distribution_against_itself_has_no_drift():
    d = compare({'tench': 3, 'goldfish': 1}, {'tench': 6, 'goldfish': 2})
    assert d.total_variation == 0.0
    assert d.risers == d.fallers == d.appeared == d.vanished == []


def test_total_variation_is_half_the_l1_distance_and_names_what_moved():
    d = compare({'a': 2, 'b': 2}, {'a': 1, 'b': 3})
    assert d.total_variation == pytest.approx(0.25)
    assert [(c.label, c.points) for c in d.risers] == [('a', pytest.approx(25.0))]
    assert [(c.label, c.points) for c in d.fallers] == [('b', pytest.approx(-25.0))]


def test_disjoint_distributions_are_at_distance_one_with_every_label_appeared_or_vanished():
    d = compare({'x': 3, 'y': 1}, {'p': 1, 'q': 1})
    assert d.total_variation == pytest.approx(1.0)
    assert d.appeared == ['x', 'y'] and d.vanished == ['p', 'q']
    assert d.risers[0].label == 'x' and d.risers[0].points == pytest.approx(75.0)


def test_total_variation_is_symmetric_and_bounded():
    p, q = shares({'a': 5, 'b': 1, 'c': 4}), shares({'b': 7, 'd': 3})
    assert total_variation(p, q) == total_variation(q, p)
    assert 0.0 <= total_variation(p, q) <= 1.0


def test_a_run_without_labeled_images_has_no_distribution():
    with pytest.raises(ValueError, match='no labeled image'):
        shares({})


def drift_of(tmp_path, output, previous) -> dict:
    result = run_cli('report', '--output', output, '--compare', previous,
                     '--out', tmp_path / 'report.html')
    assert result.code == 0, result.err
    page = (tmp_path / 'report.html').read_text()
    assert 'Drift against the previous run' in page
    return json.loads((tmp_path / 'report.json').read_text())['drift']


def test_a_run_compared_with_itself_has_total_variation_zero(fish_run, tmp_path):
    drift = drift_of(tmp_path, fish_run, fish_run)
    assert drift['total_variation'] == 0.0
    assert drift['current_images'] == drift['previous_images'] == 16
    assert drift['appeared'] == drift['vanished'] == []


def test_runs_over_fish_and_over_vehicles_drift_apart(fish_run, vehicle_run, tmp_path):
    drift = drift_of(tmp_path, vehicle_run, fish_run)
    assert drift['total_variation'] > 0.9
    assert drift['previous_run']['output'] == str(fish_run)
    assert 'tench' in drift['vanished'] or 'tench' in [c['label'] for c in drift['fallers']]
    assert any(label in drift['appeared'] for label in ('ambulance', 'fire engine', 'cab'))


def test_drift_of_skip_existing_partitions_covers_the_new_images_and_a_quiet_night_is_no_error(
        assets, mobilenet_v2_quant, tmp_path):
    from report_runs import FISH, VEHICLES, copy_photos
    folder, out = copy_photos(assets, FISH[:8], tmp_path / 'bucket'), tmp_path / 'out'
    for date in ('2026-11-01', '2026-11-02', '2026-11-03'):
        if date == '2026-11-02':
            copy_photos(assets, VEHICLES[:4], folder)  # the only new images of the week
        result = run_cli('run', '--input', folder, '--output', out, '--model',
                         mobilenet_v2_quant, '--run_date', date, '--skip_existing')
        assert result.code == 0, result.err

    def report(date, previous):
        html = tmp_path / date / 'report.html'
        html.parent.mkdir()
        result = run_cli('report', '--output', out / f'run_date={date}', '--compare',
                         out / f'run_date={previous}', '--out', html)
        assert result.code == 0, result.err
        return json.loads((html.parent / 'report.json').read_text()), html.read_text()

    day2, _ = report('2026-11-02', '2026-11-01')
    # The partition holds the 4 new images; the 8 skipped ones are counted, not lost.
    assert day2['counts'] == {'listed': 12, 'inputs': 12, 'skipped': 8, 'labeled': 4,
                              'reused': 0, 'errors': 0}
    assert day2['drift']['current_images'] == 4 and day2['drift']['previous_images'] == 8
    assert 'skipped 8 unchanged images' in day2['drift_note']
    # Nothing new on day 3: no distribution, said so, and the report is still written.
    day3, page = report('2026-11-03', '2026-11-02')
    assert day3['drift'] is None and day3['counts']['skipped'] == 12
    assert day3['drift_note'].startswith('no drift:') and 'id="drift-note"' in page
    # Whole folders hold the rows earlier dates kept: compared as they are, with no note.
    html = tmp_path / 'all' / 'report.html'
    html.parent.mkdir()
    result = run_cli('report', '--output', out, '--compare', out / 'run_date=2026-11-01',
                     '--out', html)
    assert result.code == 0, result.err
    whole = json.loads((html.parent / 'report.json').read_text())
    assert whole['drift_note'] is None and whole['drift']['current_images'] == 12
    assert 'some in this report' in html.read_text()
