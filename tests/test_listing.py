"""Listing --input: folders, globs, prefixes and manifests -> distinct URIs or error rows."""
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
        by_dir = p | 'Dir' >> ListImages(str(tmp_path / 'photos'))
        by_glob = p | 'Glob' >> ListImages(str(tmp_path / 'photos' / '**' / '*.jpg'))
        by_csv = p | 'Csv' >> ListImages(str(manifest))
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
        here = p | 'Here' >> ListImages('*.jpg')
        below = p | 'Below' >> ListImages('**/*.jpg')
        folder = p | 'Folder' >> ListImages('photos/*.jpg')
        assert_that(here, equal_to(['a.jpg']), label='here')
        assert_that(below, equal_to(['a.jpg', 'photos/b.jpg']), label='below')
        assert_that(folder, equal_to(['photos/b.jpg']), label='folder')
