"""Listing --input: folders, globs, prefixes and manifests -> distinct URIs or error rows."""
import os
import pathlib

import apache_beam as beam
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from conftest import write_jpeg
from transforms.listing import ListImages

TestPipeline.__test__ = False  # a Beam class, not a pytest test class


def test_list_images_expands_directories_globs_and_manifests(tmp_path):
    a = write_jpeg(tmp_path / 'photos' / 'a.jpg')
    b = write_jpeg(tmp_path / 'photos' / 'sub' / 'b.jpg', seed=1)
    (tmp_path / 'photos' / 'notes.txt').write_text('x')
    manifest = tmp_path / 'm.csv'
    manifest.write_text(f'uri,other\n{a},1\nphotos/sub/b.jpg,2\n{a},3\n')
    with TestPipeline() as p:
        by_dir = (p | 'Dir' >> ListImages(str(tmp_path / 'photos')))['uris']
        by_glob = (p | 'Glob' >> ListImages(str(tmp_path / 'photos' / '**' / '*.jpg')))['uris']
        by_csv = (p | 'Csv' >> ListImages(str(manifest)))['uris']
        assert_that(by_dir, equal_to([str(a), str(b), str(tmp_path / 'photos' / 'notes.txt')]),
                    label='dir')
        assert_that(by_glob, equal_to([str(a), str(b)]), label='glob')
        # relative URIs resolve against the manifest's folder; the duplicate is dropped
        assert_that(by_csv, equal_to([str(a), str(tmp_path / 'photos/sub/b.jpg')]), label='csv')


def test_relative_globs_list_from_the_working_folder_as_the_user_spelled_them(tmp_path,
                                                                             monkeypatch):
    # Beam's local match finds nothing for a pattern without a folder to start from.
    write_jpeg(tmp_path / 'a.jpg')
    write_jpeg(tmp_path / 'photos' / 'b.jpg', seed=1)
    monkeypatch.chdir(tmp_path)
    with TestPipeline() as p:
        here = (p | 'Here' >> ListImages('*.jpg'))['uris']
        below = (p | 'Below' >> ListImages('**/*.jpg'))['uris']
        folder = (p | 'Folder' >> ListImages('photos/*.jpg'))['uris']
        assert_that(here, equal_to(['a.jpg']), label='here')
        assert_that(below, equal_to(['a.jpg', 'photos/b.jpg']), label='below')
        assert_that(folder, equal_to(['photos/b.jpg']), label='folder')


def _run(input_spec, out):
    """`imagelabel run` with the real MobileNet; its rows and summary.json."""
    import json
    import os
    from conftest import read_parquet_rows, run_cli
    model = os.path.join(os.environ['IMAGELABEL_ASSETS'], 'models',
                         'mobilenet_v2_1.0_224_quant.tflite')
    result = run_cli('run', '--input', input_spec, '--output', out, '--model', model)
    assert result.code == 0, result.err
    summary = json.loads(next(pathlib.Path(out).glob('**/summary.json')).read_text())
    return read_parquet_rows(out, 'labels'), read_parquet_rows(out, 'errors'), summary


def test_a_file_named_in_another_encoding_is_one_error_row_and_the_rest_are_labeled(tmp_path):
    write_jpeg(tmp_path / 'in' / 'good.jpg')
    write_jpeg(tmp_path / 'in' / 'also good.jpg', seed=1)
    latin1 = os.fsencode(str(tmp_path / 'in')) + b'/caf\xe9.jpg'
    with open(latin1, 'wb') as f:  # a real JPEG, whose name is Latin-1, not UTF-8
        f.write((tmp_path / 'in' / 'good.jpg').read_bytes())
    labels, errors, summary = _run(tmp_path / 'in', tmp_path / 'out')
    assert sorted(pathlib.Path(r['uri']).name for r in labels) == ['also good.jpg', 'good.jpg']
    assert [(e['uri'], e['stage'], e['error']) for e in errors] == [
        (str(tmp_path / 'in' / 'caf\\xe9.jpg'), 'read', 'bad_name')]
    assert (summary['inputs'], summary['labeled'], summary['errors']) == (3, 2, 1)
    assert summary['balanced']


def test_a_manifest_line_that_is_not_utf8_past_the_first_mebibyte_is_one_error_row(tmp_path):
    good = write_jpeg(tmp_path / 'good.jpg')
    manifest = tmp_path / 'big.txt'
    padding = b''.join(b'# padding line %07d\n' % i for i in range(60_000))  # > 1 MiB
    manifest.write_bytes(f'{good}\n'.encode() + padding + b'caf\xe9.jpg\n')
    assert len(padding) > 1 << 20
    labels, errors, summary = _run(manifest, tmp_path / 'out')
    assert [r['uri'] for r in labels] == [str(good)]
    assert [(e['uri'], e['error']) for e in errors] == [(str(tmp_path / 'caf\\xe9.jpg'),
                                                         'bad_name')]
    assert summary['balanced'] and summary['inputs'] == 2


def test_a_named_pipe_in_the_input_folder_is_an_error_row_not_a_hang(tmp_path):
    write_jpeg(tmp_path / 'in' / 'good.jpg')
    os.mkfifo(tmp_path / 'in' / 'pipe.jpg')  # opening it would wait for a writer forever
    labels, errors, summary = _run(tmp_path / 'in', tmp_path / 'out')
    assert len(labels) == 1
    assert [(pathlib.Path(e['uri']).name, e['error']) for e in errors] == [('pipe.jpg',
                                                                            'not_a_file')]
    assert summary['balanced']


def test_a_broken_symbolic_link_in_the_input_is_a_not_found_row_not_left_out(tmp_path):
    good = write_jpeg(tmp_path / 'in' / 'good.jpg')
    (tmp_path / 'in' / 'sub').mkdir()
    (tmp_path / 'in' / 'gone.jpg').symlink_to(tmp_path / 'moved' / 'gone.jpg')
    (tmp_path / 'in' / 'sub' / 'alias.jpg').symlink_to(good)  # a working link is an image
    (tmp_path / 'in' / 'sub' / 'gone.png').symlink_to('nowhere.png')
    (tmp_path / 'in' / 'loop.jpg').symlink_to('loop.jpg')  # a link to itself: no file either
    labels, errors, summary = _run(tmp_path / 'in', tmp_path / 'out')
    assert sorted(pathlib.Path(r['uri']).name for r in labels) == ['alias.jpg', 'good.jpg']
    assert sorted((pathlib.Path(e['uri']).name, e['stage'], e['error']) for e in errors) == [
        ('gone.jpg', 'read', 'not_found'), ('gone.png', 'read', 'not_found'),
        ('loop.jpg', 'read', 'not_found')]
    assert (summary['inputs'], summary['labeled'], summary['errors']) == (5, 2, 3)
    assert summary['balanced']
    # A glob lists the broken links it matches, and only those.
    labels, errors, summary = _run(str(tmp_path / 'in' / '**' / '*.png'), tmp_path / 'glob')
    assert labels == [] and [pathlib.Path(e['uri']).name for e in errors] == ['gone.png']


def test_a_folder_whose_name_has_glob_characters_is_listed_as_a_folder(tmp_path):
    folder = tmp_path / 'photos [2024] *best?'
    a = write_jpeg(folder / 'a.jpg')
    b = write_jpeg(folder / 'sub' / 'b.jpg', seed=1)
    write_jpeg(tmp_path / 'photos 2' / 'c.jpg', seed=2)  # what the unescaped pattern matches
    with TestPipeline() as p:
        listed = (p | ListImages(str(folder)))['uris']
        assert_that(listed, equal_to([str(a), str(b)]))


def test_spellings_of_one_relative_path_in_a_manifest_are_one_image(tmp_path):
    a = write_jpeg(tmp_path / 'a.jpg')
    manifest = tmp_path / 'm.txt'
    manifest.write_text('a.jpg\n./a.jpg\nsub/../a.jpg\n')
    with TestPipeline() as p:
        listed = (p | ListImages(str(manifest)))['uris']
        assert_that(listed, equal_to([str(a)]))


def test_a_pattern_of_folders_ending_in_a_slash_lists_every_matching_folder(tmp_path):
    a = write_jpeg(tmp_path / 'months' / '2024-01' / 'a.jpg')
    b = write_jpeg(tmp_path / 'months' / '2024-02' / 'sub' / 'b.jpg', seed=1)
    write_jpeg(tmp_path / 'months' / '2023-12' / 'c.jpg', seed=2)
    with TestPipeline() as p:
        listed = (p | ListImages(f'{tmp_path}/months/2024-*/'))['uris']
        assert_that(listed, equal_to([str(a), str(b)]))


def test_an_output_is_refused_only_where_the_input_would_list_its_files(tmp_path,
                                                                         monkeypatch):
    import pytest
    from transforms.listing import check_output_outside
    monkeypatch.chdir(tmp_path)
    write_jpeg(tmp_path / 'photos' / 'a.jpg')
    refused = [('photos', 'photos/labels'), ('photos/**', 'photos/labels'),
               ('gs://b/photos/', 'gs://b/photos/out'), ('photos/*/*/*', 'photos/out')]
    allowed = [('photos/**/*.jpg', 'photos/labels'), ('photos', 'labels'),
               ('gs://b/photos/*.jpg', 'gs://b/photos/out'), ('photos/m.csv', 'photos/out')]
    for src, output in refused:
        with pytest.raises(ValueError, match='is inside --input'):
            check_output_outside(src, output)
    for src, output in allowed:
        check_output_outside(src, output)


def test_a_name_that_is_not_utf8_listed_twice_is_one_error_row(tmp_path):
    good = write_jpeg(tmp_path / 'good.jpg')
    manifest = tmp_path / 'm.txt'
    manifest.write_bytes(f'{good}\n'.encode() + b'caf\xe9.jpg\ncaf\xe9.jpg\n')
    with TestPipeline() as p:
        listed = p | ListImages(str(manifest))
        assert_that(listed['uris'], equal_to([str(good)]), label='uris')
        assert_that(listed['errors'] | 'Uri' >> beam.Map(lambda f: f.uri),
                    equal_to([str(tmp_path / 'caf\\xe9.jpg')]), label='errors')


def test_a_manifest_in_the_working_folder_spells_uris_as_the_folders_listing(tmp_path,
                                                                            monkeypatch):
    write_jpeg(tmp_path / 'photos' / 'b.jpg')
    (tmp_path / 'm.txt').write_text('photos/b.jpg\n')
    monkeypatch.chdir(tmp_path)
    with TestPipeline() as p:
        by_manifest = (p | 'Manifest' >> ListImages('m.txt'))['uris']
        by_folder = (p | 'Folder' >> ListImages('photos'))['uris']
        assert_that(by_manifest, equal_to(['photos/b.jpg']), label='manifest')
        assert_that(by_folder, equal_to(['photos/b.jpg']), label='folder')
