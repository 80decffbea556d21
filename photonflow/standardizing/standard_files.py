"""Where the Standardizer's file for a Recorder file is, and whether a standardized file still
finds the frames it does not hold.

Each application definition takes the suffix its readers open: nabu (through tomoscan) takes an
NXtomo only as ``.nx``, ``.h5`` or ``.hdf5`` (it refuses ``.nxs``: "Dataset location must be a
directory or a HDF5 file"), and ``.h5`` is the Recorder's own; NXmx readers (DIALS, durin) take
``.nxs``. Readers that do not know the definition (the DataManager) look for every suffix.

An NXtomo's frames are a virtual dataset over the Recorder's files; HDF5 reads a source file it
cannot find as the fill value, silently, so every photonflow reader checks the sources first.
"""

from __future__ import annotations

import os
from pathlib import Path

import h5py

from photonflow.errors import FilePathError

STANDARD_SUFFIXES = {"NXmx": ".nxs", "NXtomo": ".nx"}


def standardized_path(recorder_file: str | Path, definition: str) -> Path:
    """The standardized file of ``definition`` beside ``recorder_file``."""
    return Path(recorder_file).with_suffix(STANDARD_SUFFIXES.get(definition, ".nxs"))


def standardized_candidates(recorder_file: str | Path) -> list[Path]:
    """Every name the standardized file of ``recorder_file`` can have, whatever its definition."""
    return [Path(recorder_file).with_suffix(suffix) for suffix in dict.fromkeys(STANDARD_SUFFIXES.values())]


def same_series(recorder_file: str | Path, standardized_file: str | Path) -> bool:
    """Whether ``standardized_file`` is the Standardizer's file for ``recorder_file``."""
    return Path(standardized_file) in standardized_candidates(recorder_file)


def missing_virtual_sources(f: h5py.File) -> list[str]:
    """``"<dataset>: <source file> (<its dataset>)"`` for each source of a virtual dataset in ``f``
    that HDF5 would not find (a relative source is looked for beside ``f``, as HDF5 does)."""
    folder = Path(os.path.abspath(f.filename)).parent
    missing: list[str] = []
    seen: set[tuple[str, str]] = set()

    def check(name: str, node) -> None:
        if not isinstance(node, h5py.Dataset) or not node.is_virtual:
            return
        for source in node.virtual_sources():
            if (source.file_name, source.dset_name) in seen:
                continue
            seen.add((source.file_name, source.dset_name))
            if source.file_name == ".":
                found = source.dset_name in f
                where = f.filename
            else:
                where = str(folder / source.file_name)
                found = _has_dataset(Path(where), source.dset_name)
            if not found:
                missing.append(f"/{name}: {where} ({source.dset_name})")

    f.visititems(check)
    return missing


def require_virtual_sources(f: h5py.File) -> None:
    """Raise when a virtual dataset of ``f`` has lost a source file: its frames would read as zeros."""
    missing = missing_virtual_sources(f)
    if missing:
        raise FilePathError(
            f"{f.filename} has lost the frames it points to (a virtual dataset's source file or dataset is "
            f"missing; HDF5 would read them as zeros): {'; '.join(missing)}. Keep the standardized file in the "
            "folder of the files it names (its sources are relative), or copy them beside it",
            reason="VirtualSourceMissing")


def _has_dataset(path: Path, dataset: str) -> bool:
    if not path.is_file():
        return False
    try:
        with h5py.File(path, "r") as source:
            return isinstance(source.get(dataset), h5py.Dataset)
    except OSError:
        return False
