"""Data file paths: under the data root, HDF5 names, never an existing file; templates checked."""

from datetime import datetime

import pytest

from photonflow.errors import ConfigurationError, FilePathError
from photonflow.recording.paths import render_template, resolve_data_file, validate_template


def test_relative_names_resolve_under_the_root(tmp_path):
    assert resolve_data_file(tmp_path, "a/b/scan.h5") == tmp_path.resolve() / "a" / "b" / "scan.h5"


def test_absolute_paths_inside_the_root_are_fine(tmp_path):
    assert resolve_data_file(tmp_path, str(tmp_path / "x.nxs")) == tmp_path.resolve() / "x.nxs"


@pytest.mark.parametrize("name, complaint", [
    ("../x.h5", "outside the data root"),
    ("a/../../x.h5", "outside the data root"),
    ("scan.txt", "does not end in .h5"),
    ("", "the file name is empty"),
])
def test_bad_names_are_refused_with_what_to_do(tmp_path, name, complaint):
    with pytest.raises(FilePathError, match=complaint):
        resolve_data_file(tmp_path, name)


def test_a_symlink_out_of_the_root_is_refused(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    (root / "escape").symlink_to(tmp_path)
    with pytest.raises(FilePathError, match="outside the data root"):
        resolve_data_file(root, "escape/x.h5")


def test_templates_render_series_and_start_time():
    assert render_template("{start:%Y}/s{series_id:03d}.h5", 7, datetime(2026, 1, 2)) == "2026/s007.h5"


@pytest.mark.parametrize("template", ["{sample}.h5", "{}.h5", "{series_id:zz}.h5", "{series_id"])
def test_bad_templates_are_refused(template):
    with pytest.raises(ConfigurationError, match="template"):
        validate_template(template)
