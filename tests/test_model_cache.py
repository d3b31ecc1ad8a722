"""The model cache: an entry's files, written beside-files first and its record last, read
back checked against the record, with one digest."""
from __future__ import annotations

import numpy as np
import pytest

from transforms.models.float_head import FloatHead
from transforms.models.model_cache import CachedModel, read_conversion, store


def _head_npz(scale: float = 1.0) -> bytes:
    return FloatHead(np.eye(3, dtype=np.float32) * scale, np.zeros(3, np.float32)).to_bytes()


def test_an_entry_is_complete_once_its_record_is_written(tmp_path):
    files = CachedModel.at(str(tmp_path / 'cache'), 'm-float32-litert-abc', '.tflite')
    assert files.head.endswith('m-float32-litert-abc.head.npz') and not files.exists()
    assert files.beside('.agreement.json').endswith('m-float32-litert-abc.agreement.json')
    store(files, b'model-bytes', {files.head: _head_npz(), files.beside('.empty'): b''})
    assert files.exists()
    names = sorted(p.name for p in (tmp_path / 'cache').iterdir())
    assert names == ['m-float32-litert-abc.entry.json', 'm-float32-litert-abc.head.npz',
                     'm-float32-litert-abc.tflite']  # no empty file
    content, head, digest = read_conversion(files.model, '.tflite')
    assert content == b'model-bytes' and np.array_equal(head.kernel, np.eye(3))
    (tmp_path / 'cache' / 'm-float32-litert-abc.entry.json').unlink()  # a store cut short
    assert not files.exists()


def test_the_digest_covers_the_head_so_another_head_is_another_model(tmp_path):
    files = CachedModel.at(str(tmp_path), 'k', '.tflite')
    store(files, b'same model', {files.head: _head_npz(1.0)})
    first = read_conversion(files.model, '.tflite')[2]
    store(files, b'same model', {files.head: _head_npz(2.0)})
    second = read_conversion(files.model, '.tflite')[2]
    store(CachedModel.at(str(tmp_path), 'bare', '.tflite'), b'same model')
    content, head, without = read_conversion(str(tmp_path / 'bare.tflite'), '.tflite')
    assert head is None and content == b'same model'
    assert len({first, second, without}) == 3


@pytest.mark.parametrize('damage, message', [
    (lambda d: (d / 'k.head.npz').unlink(), 'lost .*k.head.npz'),
    (lambda d: (d / 'k.head.npz').write_bytes(_head_npz()[:500]), 'damaged .*k.head.npz'),
    (lambda d: (d / 'k.tflite').write_bytes(b'other model'), 'damaged .*k.tflite'),
    (lambda d: (d / 'k.entry.json').write_text('{'), 'no readable record'),
])
def test_an_entry_that_lost_or_damaged_a_file_is_refused_in_one_line(tmp_path, damage,
                                                                     message):
    # Without its head, the embedding would be read as the scores: wrong labels, no error.
    files = CachedModel.at(str(tmp_path), 'k', '.tflite')
    store(files, b'model', {files.head: _head_npz()})
    damage(tmp_path)
    with pytest.raises(ValueError, match=message) as e:
        read_conversion(files.model, '.tflite')
    assert 'to convert again' in str(e.value) and '\n' not in str(e.value)


def test_a_damaged_entry_is_not_usable_so_the_launch_makes_it_again(tmp_path):
    # Two launches storing one key at once can leave one's record over the other's model.
    files = CachedModel.at(str(tmp_path), 'k', '.tflite')
    store(files, b'model', {files.head: _head_npz(), files.beside('.agreement.json'): b'{}'})
    assert files.usable()
    (tmp_path / 'k.agreement.json').write_text('{"top1": 0.5}')  # any file the record names
    assert files.exists() and not files.usable()
    store(files, b'model', {files.head: _head_npz(), files.beside('.agreement.json'): b'{}'})
    assert files.usable()
