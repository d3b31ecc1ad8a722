"""Failure vocabulary shared by every stage.

A scheduled job over millions of user images must account for every input, so a
failure is data, not an exception that escapes a DoFn: each stage catches
`ImageError` and emits a `Failure` row instead. The classes are stable strings
because users query and alert on them (`WHERE error = 'truncated'`).
"""
from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from transforms.incremental import Listed

#: Tag of each stage's side output of Failures.
ERRORS_TAG = 'errors'

#: Stage names, in pipeline order.
STAGES = ('read', 'decode', 'inference', 'write')

#: Every error class, with what it means and what to do. A test checks that the
#: README's table says exactly this, so the two cannot drift apart.
ERROR_CLASSES: dict[str, str] = {
    'not_found': 'The URI does not exist (or vanished before it was read, or is a '
                 'symbolic link to a missing file or a loop). Check the path or the manifest.',
    'permission_denied': 'The worker may not read the URI. Grant the job\'s '
                         'service account read access.',
    'not_a_file': 'The URI names a directory or other non-file (a named pipe, '
                  'a socket, a device). List files, not folders, in manifests.',
    'bad_name': 'The name is not valid UTF-8 (a file named in another encoding, '
                'or a manifest line that is not text); the uri column shows '
                'its other bytes as \\xNN. Rename the file or fix the manifest.',
    'read_failed': 'Reading kept failing after the retries (timeouts, 429 or '
                   '5xx from the store), or failed in an unexpected way. '
                   'Re-run later; the message has the last cause.',
    'empty_file': 'The object has zero bytes. Re-upload the image.',
    'too_large': 'The image declares more pixels than --max_pixels (a '
                 'decompression bomb or a huge scan), or more bytes than '
                 '--max_bytes. Raise the limit if the image is genuine.',
    'not_an_image': 'The bytes are not an image format at all (text, HTML, '
                    'random data), whatever the file extension says.',
    'unsupported_format': 'A real format this installation cannot decode '
                          '(SVG, PDF, HEIC/AVIF without a Pillow plugin), '
                          'or will not (EPS: Pillow would run Ghostscript on it). '
                          'Convert it, or install the Pillow plugin.',
    'truncated': 'The image data ends early (an interrupted upload). '
                 'Re-upload the image.',
    'corrupt': 'The decoder rejected the image data part-way (broken '
               'compressed stream, bad header values).',
    'model_error': 'The model raised on this image alone (it was retried on '
                   'its own after its batch failed). The message has the '
                   'model\'s error.',
}


class ImageError(Exception):
    """A classified failure of one image at one stage."""

    def __init__(self, stage: str, error: str, message: str):
        if stage not in STAGES:
            raise ValueError(f'unknown stage {stage!r}; expected one of {STAGES}')
        if error not in ERROR_CLASSES:
            raise ValueError(f'unknown error class {error!r}')
        super().__init__(f'{stage}/{error}: {message}')
        self.stage = stage
        self.error = error
        self.message = message


@dataclasses.dataclass(frozen=True)
class Failure:
    """One image that will not be labeled: becomes one row of errors-*.parquet."""
    uri: str
    stage: str
    error: str
    message: str
    content_sha256: str | None = None
    source: Listed | None = None  # the listing's size and time, on incremental runs

    @classmethod
    def from_error(cls, uri: str, err: ImageError, content_sha256: str | None = None,
                   source: Listed | None = None) -> 'Failure':
        return cls(uri=uri, stage=err.stage, error=err.error,
                   message=err.message, content_sha256=content_sha256, source=source)
