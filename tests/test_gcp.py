"""The standard emulator settings point every client at the emulators, with no credential lookup."""
from __future__ import annotations

import pytest

from transforms import gcp


def test_no_setting_means_no_emulator(monkeypatch):
    monkeypatch.delenv('STORAGE_EMULATOR_HOST', raising=False)
    monkeypatch.delenv('BIGQUERY_EMULATOR_HOST', raising=False)
    assert gcp.emulator_endpoints() == {} and not gcp.using_emulators()


def test_a_setting_without_a_scheme_is_a_clear_error(monkeypatch):
    monkeypatch.setenv('STORAGE_EMULATOR_HOST', '127.0.0.1:9023')
    with pytest.raises(ValueError, match='needs a scheme: http://127.0.0.1:9023'):
        gcp.emulator_endpoints()


def test_with_the_settings_beam_and_google_clients_use_anonymous_credentials_and_the_emulator(
        monkeypatch):
    monkeypatch.setenv('STORAGE_EMULATOR_HOST', 'http://127.0.0.1:1')
    monkeypatch.setenv('BIGQUERY_EMULATOR_HOST', 'http://127.0.0.1:2/')
    gcp._configured.clear()
    from apache_beam.internal.gcp import auth as beam_auth
    from apache_beam.io.gcp.internal.clients.bigquery import bigquery_v2_client
    from apache_beam.options.pipeline_options import PipelineOptions
    monkeypatch.setattr(bigquery_v2_client.BigqueryV2, 'BASE_URL',
                        bigquery_v2_client.BigqueryV2.BASE_URL)
    monkeypatch.setattr(beam_auth._Credentials, '_credentials_init', False)
    monkeypatch.setattr(beam_auth._Credentials, '_credentials', None)

    def no_lookup(*_):
        raise AssertionError('Beam looked credentials up (a ~26 s back-off without a server)')
    monkeypatch.setattr(beam_auth._Credentials, '_get_service_credentials', no_lookup)
    import google.auth
    monkeypatch.setattr(google.auth, 'default', google.auth.default)

    assert gcp.configure_emulators() == {'storage': 'http://127.0.0.1:1',
                                         'bigquery': 'http://127.0.0.1:2'}
    assert bigquery_v2_client.BigqueryV2.BASE_URL == 'http://127.0.0.1:2/bigquery/v2/'
    creds = beam_auth.get_service_credentials(PipelineOptions())
    from google.auth.credentials import AnonymousCredentials
    assert isinstance(creds.get_google_auth_credentials(), AnonymousCredentials)
    default_creds, project = google.auth.default()
    assert isinstance(default_creds, AnonymousCredentials) and project
    from google.cloud import bigquery, storage
    assert storage.Client().api_endpoint == 'http://127.0.0.1:1'
    assert bigquery.Client()._connection.API_BASE_URL.rstrip('/') == 'http://127.0.0.1:2'
    gcp._configured.clear()


def test_a_malformed_setting_is_one_line_at_launch_not_a_traceback(monkeypatch, tmp_path):
    from conftest import run_cli
    monkeypatch.setenv('STORAGE_EMULATOR_HOST', 'localhost:4443')
    r = run_cli('run', '--input', tmp_path, '--output', tmp_path / 'out')
    assert r.code == 2
    assert r.err.strip() == ('imagelabel: error: STORAGE_EMULATOR_HOST=localhost:4443 needs a '
                             'scheme: http://localhost:4443')
