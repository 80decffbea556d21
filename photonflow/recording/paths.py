"""Where data files may go: under the Recorder's data root, never over an existing file."""

from __future__ import annotations

import string
from datetime import datetime
from pathlib import Path

from photonflow.errors import ConfigurationError, FilePathError

DATA_FILE_SUFFIXES = (".h5", ".hdf5", ".nxs")
DEFAULT_FILE_TEMPLATE = "series_{series_id:05d}_{start:%Y%m%d_%H%M%S}.h5"
TEMPLATE_FIELDS = {"series_id", "start"}


def validate_template(template: str) -> str:
    """Refuse a file path template with fields photonflow cannot fill."""
    try:
        fields = {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}
    except ValueError as error:
        raise ConfigurationError(f"file path template {template!r} is malformed: {error}") from None
    unknown = fields - TEMPLATE_FIELDS
    if unknown or "" in fields:
        raise ConfigurationError(
            f"file path template {template!r} uses unknown field(s) "
            f"{', '.join(sorted(f or '{}' for f in unknown | ({''} & fields)))}; "
            f"available: {{series_id}}, {{start}} (a datetime, e.g. {{start:%Y%m%d}})"
        )
    try:
        template.format(series_id=1, start=datetime.now())
    except (ValueError, TypeError) as error:
        raise ConfigurationError(f"file path template {template!r} cannot be rendered: {error}") from None
    return template


def render_template(template: str, series_id: int, start: datetime) -> str:
    return validate_template(template).format(series_id=series_id, start=start)


def resolve_data_file(data_root: str | Path, requested: str) -> Path:
    """The absolute path of a new data file, or FilePathError saying what to change."""
    if not isinstance(requested, str) or not requested.strip():
        raise FilePathError("the file name is empty; give a file name such as 'sample1/scan_001.h5'")
    root = Path(data_root).resolve()
    path = Path(requested)
    if not path.is_absolute():
        path = root / path
    path = path.resolve()
    if root not in path.parents:
        raise FilePathError(
            f"{path} is outside the data root {root}; give a path under the data root "
            "(relative paths are taken from it)",
            reason="FileOutsideDataRoot",
        )
    if path.suffix.lower() not in DATA_FILE_SUFFIXES:
        raise FilePathError(
            f"{path.name} does not end in {', '.join(DATA_FILE_SUFFIXES)}; "
            "name the file as an HDF5/NeXus file"
        )
    if path.exists():
        raise FilePathError(
            f"{path} already exists; photonflow never overwrites data, choose another file name",
            reason="FileExists",
        )
    return path
