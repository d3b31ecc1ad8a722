"""Google Cloud endpoints and credentials, with the standard emulator settings honoured.

`STORAGE_EMULATOR_HOST=http://HOST:PORT` and `BIGQUERY_EMULATOR_HOST=http://HOST:PORT`
are the settings Google's own client libraries read. Set, they must point the
*whole* run at the emulators, and the run must not wait on a credential lookup
(the metadata-server probe and Beam's credential retries cost about 26 s):

- google-cloud-storage and google-cloud-bigquery read the variables themselves;
  we only give them anonymous credentials (`google.auth.default`).
- Beam's own credential cache is marked initialised with no credentials, so Beam
  builds anonymous storage clients instead of backing off.
- Beam's apitools BigQuery client (tables, datasets, load jobs) ignores
  BIGQUERY_EMULATOR_HOST; its class-level BASE_URL is pointed at the emulator.

`configure_emulators()` runs when `transforms` is imported, in the launcher and
in every worker process that unpickles our code, so no flag is needed.
"""
from __future__ import annotations

import logging
import os

_log = logging.getLogger('imagelabel.gcp')

STORAGE_EMULATOR_HOST = 'STORAGE_EMULATOR_HOST'
BIGQUERY_EMULATOR_HOST = 'BIGQUERY_EMULATOR_HOST'
#: Project id the emulators are used with when no --project is given.
EMULATOR_PROJECT = 'imagelabel-local'

_configured: dict[str, str] = {}


def emulator_endpoints() -> dict[str, str]:
    """The emulator settings in force: {'storage': url, 'bigquery': url}, each if set."""
    out = {}
    for key, var in (('storage', STORAGE_EMULATOR_HOST), ('bigquery', BIGQUERY_EMULATOR_HOST)):
        value = os.environ.get(var, '').strip()
        if value:
            if not value.startswith(('http://', 'https://')):
                raise ValueError(f'{var}={value} needs a scheme: http://{value}')
            out[key] = value.rstrip('/')
    return out


def using_emulators() -> bool:
    return bool(emulator_endpoints())


def configure_emulators() -> dict[str, str]:
    """Point every client at the emulators named by the environment (idempotent)."""
    endpoints = emulator_endpoints()
    if not endpoints or endpoints == _configured:
        return endpoints
    os.environ.setdefault('NO_GCE_CHECK', 'true')  # no metadata-server probe
    _anonymous_default_credentials()
    if 'bigquery' in endpoints:
        from apache_beam.io.gcp.internal.clients.bigquery import bigquery_v2_client
        bigquery_v2_client.BigqueryV2.BASE_URL = f'{endpoints["bigquery"]}/bigquery/v2/'
        bigquery_v2_client.BigqueryV2.MTLS_BASE_URL = bigquery_v2_client.BigqueryV2.BASE_URL
    _configured.clear()
    _configured.update(endpoints)
    _log.info('using emulators: %s', ', '.join(f'{k} at {v}' for k, v in endpoints.items()))
    return endpoints


def _anonymous_default_credentials() -> None:
    import google.auth
    from google.auth.credentials import AnonymousCredentials

    def anonymous(*_args, **_kwargs):
        project = (os.environ.get('GOOGLE_CLOUD_PROJECT') or os.environ.get('GCLOUD_PROJECT')
                   or EMULATOR_PROJECT)
        return AnonymousCredentials(), project

    google.auth.default = anonymous
    try:  # Beam's process-wide credential cache: pre-filled with anonymous credentials
        from apache_beam.internal.gcp import auth as beam_auth
        with beam_auth._Credentials._credentials_lock:  # noqa: SLF001
            beam_auth._Credentials._credentials = beam_auth._ApitoolsCredentialsAdapter(  # noqa: SLF001
                AnonymousCredentials())
            beam_auth._Credentials._credentials_init = True  # noqa: SLF001
    except (ImportError, AttributeError) as e:  # a Beam without this private cache
        _log.warning('could not pre-set Beam\'s credentials (%s); its first lookup may back '
                     'off for ~26 s', e)
