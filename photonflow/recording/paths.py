"""Where data files may go: under the Recorder's data root, never over an existing file, never
through a symbolic link (Linux: files are opened through /proc/self/fd)."""

from __future__ import annotations

import errno
import os
import re
import string
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import TypeVar

from photonflow.errors import ConfigurationError, FilePathError

DATA_FILE_SUFFIXES = (".h5", ".hdf5", ".nxs")
DEFAULT_FILE_TEMPLATE = "series_{series_id:05d}_{start:%Y%m%d_%H%M%S}.h5"
TEMPLATE_FIELDS = {"series_id", "start"}
T = TypeVar("T")
MAX_FIELD_WIDTH = 64  # characters a template field may be padded to
MAX_NAME_LENGTH = 4096  # PATH_MAX
MAX_SERIES_NUMBER = 2**63 - 1


def validate_template(template: str) -> str:
    """Refuse a file path template with fields photonflow cannot fill."""
    try:
        fields = {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}
    except ValueError as error:
        raise ConfigurationError(f"file path template {template!r} is malformed: {error}") from None
    for _, name, spec, _ in string.Formatter().parse(template):
        widths = [int(number) for number in re.findall(r"\d+", spec or "")] if name != "start" else []
        if any(width > MAX_FIELD_WIDTH for width in widths):
            raise ConfigurationError(
                f"file path template {template!r} pads {{{name}}} to {max(widths)} characters; "
                f"at most {MAX_FIELD_WIDTH} (e.g. {{series_id:05d}})"
            )
    unknown = fields - TEMPLATE_FIELDS
    if unknown or "" in fields:
        raise ConfigurationError(
            f"file path template {template!r} uses unknown field(s) "
            f"{', '.join(sorted(f or '{}' for f in unknown | ({''} & fields)))}; "
            f"available: {{series_id}}, {{start}} (a datetime, e.g. {{start:%Y%m%d}})"
        )
    try:
        template.format(series_id=1, start=datetime.now())
    except (ValueError, TypeError, OverflowError, MemoryError) as error:
        raise ConfigurationError(f"file path template {template!r} cannot be rendered: {error}") from None
    if len(template.format(series_id=MAX_SERIES_NUMBER, start=datetime.now())) > MAX_NAME_LENGTH:
        raise ConfigurationError(
            f"file path template {template!r} makes names longer than {MAX_NAME_LENGTH} characters"
        )
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


def refuse_symlinked_root(root: Path) -> None:
    """A data root must be the path the operator configured: refuse one reached through a
    symbolic link (a link swapped in above the root would move every file elsewhere)."""
    checked = Path(root.anchor)
    for part in root.parts[1:]:
        checked = checked / part
        if checked.is_symlink():
            raise ConfigurationError(
                f"the data root {root} is reached through the symbolic link {checked} -> "
                f"{os.readlink(checked)}; configure the real path {Path(os.path.realpath(root))} instead",
                reason="DataRootIsLinked",
            )
        if not checked.exists():
            return


class DataRoot:
    """The data root, held open by a descriptor: every directory and file of a series is opened
    relative to it, one level at a time and never through a symbolic link, so nothing swapped
    in under the root between a check and a write can send a file outside it."""

    def __init__(self, path: str | Path):
        self.path = Path(os.path.abspath(path))
        refuse_symlinked_root(self.path)
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            self.fd = os.open(self.path, os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError as error:
            raise ConfigurationError(f"cannot open the data root {self.path}: {error.strerror or error}") from None

    def close(self) -> None:
        os.close(self.fd)

    def contains(self, real_path: str | Path) -> bool:
        return Path(real_path) == self.path or self.path in Path(real_path).parents

    def open_directory(self, path: Path) -> SeriesDirectory:
        """The directory ``path`` (under the root), made where missing, opened without following links."""
        fd = os.dup(self.fd)
        try:
            for part in path.relative_to(self.path).parts:
                try:
                    os.mkdir(part, 0o775, dir_fd=fd)
                except FileExistsError:
                    pass
                try:
                    child = os.open(part, os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
                except OSError as error:
                    if error.errno != errno.ELOOP:
                        raise
                    raise FilePathError(
                        f"cannot use {part!r} in {path}: it is a symbolic link, and photonflow never follows "
                        "a link under the data root; remove the link or choose another directory",
                        reason="FileOutsideDataRoot",
                    ) from None
                os.close(fd)
                fd = child
        except BaseException:
            os.close(fd)
            raise
        return SeriesDirectory(self, fd)


class SeriesDirectory:
    """An open directory under the data root where a series creates its files."""

    def __init__(self, root: DataRoot, fd: int):
        self.root = root
        self.fd = fd

    @property
    def path(self) -> Path:
        """Where the directory is now (it is held by descriptor, wherever it is moved)."""
        return Path(os.readlink(f"/proc/self/fd/{self.fd}"))

    def writable(self) -> bool:
        return os.access(f"/proc/self/fd/{self.fd}", os.W_OK | os.X_OK)

    def create(self, name: str, open_file: Callable[[str], T]) -> tuple[T, Path]:
        """Create the new file ``name`` here and open it with ``open_file(path)``; returns what
        ``open_file`` returned and the file's real path.

        The file is made with O_EXCL|O_NOFOLLOW (never an existing file or a planted link) and
        ``open_file`` gets its ``/proc/self/fd`` path, so HDF5 opens exactly that inode whatever
        happens to the names meanwhile; a directory moved out of the root is refused.
        """
        where = self.path
        if not self.root.contains(where):
            raise FilePathError(
                f"the directory for {name} is now {where}, outside the data root {self.root.path}",
                reason="FileOutsideDataRoot",
            )
        try:
            fd = os.open(name, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644, dir_fd=self.fd)
        except FileExistsError:
            raise FilePathError(
                f"{where / name} already exists; photonflow never overwrites data, choose another file name",
                reason="FileExists",
            ) from None
        try:
            opened = open_file(f"/proc/self/fd/{fd}")
            return opened, Path(os.readlink(f"/proc/self/fd/{fd}"))
        finally:
            os.close(fd)

    def close(self) -> None:
        os.close(self.fd)
