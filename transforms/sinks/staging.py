"""Publishing a run's tables: they are written into a hidden staging folder of the date
and moved in once every table is written, and only then are the earlier run's files of
the date deleted.

Why not clear the date at launch (as before) or replace table by table: a re-run that
fails (a worker lost, a quota, a bug) then leaves the date as the earlier run left it,
and what is left to chance is a few renames and deletes after all the data is written.
"""
from __future__ import annotations

import json
import logging
import os
import time

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems

from transforms.sinks.layout import STAGING_PREFIX, partition_files, table_files

_PUBLISHING = '_publishing.json'
#: How long a staging folder left by a run that failed must have been still before a
#: later run of the date deletes it: a younger one may be a run of the date still going.
#: A day, and an hour more: Beam reads a GCS object's time an hour early on a launcher in
#: a time zone with summer time (gcsio's mktime of a UTC time tuple).
LEFTOVER_AGE_S = 25 * 3600.0
_log = logging.getLogger('imagelabel')


def publish_staged(folder: str, staging: str, *,
                   leftover_age_s: float = LEFTOVER_AGE_S) -> list[str]:
    """Move this run's staged tables into the date, then delete the date's other files
    (an earlier run's tables, of any shard count, and its summary.json and eval.json,
    which describe rows that are gone) and the staging folders that runs which failed
    left behind over `leftover_age_s` ago; return the date's tables.

    Safe to run again after a crash at any point, as a retried step is: the list of
    what moves is written first (`_publishing.json` in the staging folder) and read
    back by a retry, so files already moved are never taken for an earlier run's; this
    run's staging folder goes last, and once it is gone there is nothing left to do.
    """
    staged = _table_names(staging)
    ours = _staged_names(staging, staged)
    if not ours:  # published already, by an earlier attempt of this step
        return sorted(p for paths in table_files(folder).values() for p in paths)
    moves = [name for name in ours if name in staged]  # not moved by an earlier attempt
    if moves:  # a rename replaces an earlier run's file of the same name
        FileSystems.rename([FileSystems.join(staging, name) for name in moves],
                           [FileSystems.join(folder, name) for name in moves])
    stale = [path for path in partition_files(folder) if FileSystems.split(path)[1] not in ours]
    if stale:
        FileSystems.delete(stale)
    try:  # housekeeping: the date is already this run's, so a failure here is only said
        _drop_leftovers(folder, keep=staging, older_than_s=leftover_age_s)
    except Exception as e:  # noqa: BLE001 - e.g. another run of the date deleting them too
        _log.warning('%s: leftover staging folders not cleaned up: %s: %s', folder,
                     type(e).__name__, e)
    _delete_folder(staging)
    _log.info('%s: %d files of this run in place, %d of an earlier run removed', folder,
              len(ours), len(stale))
    return sorted(FileSystems.join(folder, name) for name in ours)  # the date's tables now


def _table_names(folder: str) -> set[str]:
    """The names of the table shards in FOLDER (one listing)."""
    return {FileSystems.split(p)[1] for paths in table_files(folder).values() for p in paths}


def _staged_names(staging: str, staged: set[str]) -> list[str]:
    """The names of this run's staged tables: the record of an earlier attempt, else
    `staged` (the staging folder's listing), recorded before anything moves ([] once
    all is done).

    A record that cannot be read (a crash while writing it) is listed again, which is
    safe: it is written before the first file moves.
    """
    record = FileSystems.join(staging, _PUBLISHING)
    if FileSystems.exists(record):
        try:
            with FileSystems.open(record) as f:
                return json.loads(f.read().decode())
        except ValueError:  # truncated or empty: nothing had moved yet
            pass
    names = sorted(staged)
    if names:
        with FileSystems.create(record) as f:
            f.write(json.dumps(names).encode())
    return names


def _drop_leftovers(folder: str, *, keep: str, older_than_s: float) -> None:
    """Delete the staging folders of runs of this date that failed before publishing,
    once nothing in them has changed for `older_than_s`; name the younger ones, which
    may belong to a run of the same date that is still going."""
    newest: dict[str, float] = {}
    for path, updated in _staged_files(folder):
        top = path.split('/')[0]
        newest[top] = max(newest.get(top, 0.0), updated)
    now = time.time()
    for name, updated in sorted(newest.items()):
        leftover = FileSystems.join(folder, name)
        if leftover.rstrip('/') == keep.rstrip('/'):
            continue
        if now - updated >= older_than_s:
            _delete_folder(leftover)
        else:
            _log.warning('%s: kept %s, changed %.0f s ago: a run of this date that failed, '
                         'or one still going (delete it by hand once none is)', folder,
                         name, now - updated)


def _staged_files(folder: str) -> list[tuple[str, float]]:
    """(path below the date, last change) of everything in the date's staging folders.

    An object store is listed through its objects, at any depth (a run that failed
    while writing left only Beam's beam-temp-* folder); a local disk is walked, so
    that empty folders count too.
    """
    if '://' in folder:
        prefix = folder.rstrip('/') + '/'
        return [(m.path[len(prefix):], m.last_updated_in_seconds) for r in FileSystems.match(
            [FileSystems.join(folder, f'{STAGING_PREFIX}*', '**')]) for m in r.metadata_list
            if m.path.startswith(prefix)]
    found = []
    with os.scandir(folder) as entries:
        for entry in entries:
            if entry.is_dir(follow_symlinks=False) and entry.name.startswith(STAGING_PREFIX):
                for root, dirs, files in os.walk(entry.path):
                    rel = os.path.relpath(root, folder).replace(os.sep, '/')
                    for path, shown in [(root, rel)] + [(os.path.join(root, name),
                                                         f'{rel}/{name}') for name in files]:
                        try:
                            found.append((shown, os.stat(path).st_mtime))
                        except FileNotFoundError:  # a run still going renamed it meanwhile
                            continue
    return found


def _delete_folder(path: str) -> None:
    """Delete a folder whole: Beam takes a local one by its name, and an object store's
    by its name and a '/' (without, it looks for an object; a local name with one
    lists the files and leaves the folder)."""
    FileSystems.delete([path.rstrip('/') + '/' if '://' in path else path.rstrip('/')])


class PublishStaged(beam.PTransform):
    """The names of the files this run wrote (only a signal that every table is written)
    -> the staged tables moved into the date, and the date's other files deleted.

    The names themselves are not trusted: a retried finalize outputs only the files it
    renamed itself, so the staging folder is listed instead.
    """

    def __init__(self, folder: str, staging: str):
        super().__init__()
        self._folder = folder
        self._staging = staging

    def expand(self, written):
        return (written
                | 'AllTablesWritten' >> beam.combiners.Count.Globally()
                | 'MoveIntoTheDate' >> beam.Map(_publish_once_written, self._folder,
                                                 self._staging))


def _publish_once_written(_files: int, folder: str, staging: str) -> list[str]:
    return publish_staged(folder, staging)
