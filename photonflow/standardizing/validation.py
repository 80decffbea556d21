"""Validating a NeXus file against the official application definition, with the NXDL that
pynxtools ships (the NeXus definitions of its release; no network needed).

pynxtools opens external links relative to the working directory, not to the linking file as
HDF5 does, so the check runs in a child process started in the file's folder: the frames,
linked relatively, are found, and the caller's working directory is never changed (a Tango
server has many threads).

Run as ``python -m photonflow.standardizing.validation FILE [DEFINITION]``: prints one JSON
object ``{"valid": ..., "definition": ..., "version": ..., "problems": [...], "notes": [...]}``.
A message known to be pynxtools' own mistake (KNOWN_FALSE_POSITIVES) is reported apart, with the
reason and pynxtools' version, not counted as a problem of the file and not hidden.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ValidationReport:
    path: Path
    definition: str
    problems: tuple[str, ...]  # errors and warnings: a valid file has none
    notes: tuple[str, ...]  # pynxtools' information messages (e.g. a unit it has no documentation for)
    false_positives: tuple[str, ...] = ()  # messages known to be the validator's mistake, with why

    @property
    def valid(self) -> bool:
        return not self.problems


def validate_nexus(path: str | Path, definition: str | None = None, timeout: float = 300) -> ValidationReport:
    """Validate ``/entry`` of ``path`` against ``definition`` (default: the entry's own). Raises
    FilePathError for a file whose virtual frames lost their source (they would validate as zeros)."""
    import h5py

    from photonflow.standardizing.standard_files import require_virtual_sources

    path = Path(path).resolve()
    with h5py.File(path, "r") as f:
        require_virtual_sources(f)
    command = [sys.executable, "-m", "photonflow.standardizing.validation", path.name]
    if definition:
        command.append(definition)
    result = subprocess.run(command, cwd=path.parent, capture_output=True, text=True, timeout=timeout, check=False)
    if result.returncode != 0:
        return ValidationReport(path, definition or "", (f"the validator failed: {result.stderr.strip()[-2000:]}",), ())
    report = json.loads(result.stdout.strip().splitlines()[-1])
    problems, false_positives, notes = [], [], list(report["notes"])
    for message in report["problems"]:
        why = known_false_positive(message)
        reader = READERS_FIELDS.get(message)
        if reader is not None:  # NeXus allows fields beyond the NXDL: a note, not a problem
            notes.append(f"{message} — not in the NXDL; {reader}")
        elif why is None:
            problems.append(message)
        else:
            false_positives.append(f"{message} — known false positive of pynxtools {report.get('version', '?')}: {why}")
    return ValidationReport(path, report["definition"], tuple(problems), tuple(notes), tuple(false_positives))


# Fields the NXDL does not document that a reader of the definition needs: pynxtools' message -> whose
READERS_FIELDS = {
    f"/entry/instrument/detector/{name}: MissingDocumentationNone":
        f"ESRF's NXtomo (nxtomo, tomoscan, nabu) reads detector/{name}"
    for name in ("field_of_view", "image_key_control")
}


# Messages of pynxtools that are its own mistakes, checked against the NXDL: (pattern, why).
KNOWN_FALSE_POSITIVES = (
    (re.compile(r"/pixel_mask: ReservedSuffixWithoutField"),
     "NXdetector defines the field pixel_mask itself; pynxtools reads '_mask' as NeXus' reserved suffix of a "
     "field 'pixel' and reports that field missing"),
)


def known_false_positive(message: str) -> str | None:
    """Why ``message`` is the validator's mistake, or None for a real problem of the file."""
    return next((why for pattern, why in KNOWN_FALSE_POSITIVES if pattern.search(message)), None)


def _validate_here(name: str, definition: str | None) -> dict:
    from importlib.metadata import version

    import h5py
    from pynxtools.dataconverter.helpers import collector
    from pynxtools.dataconverter.validation import validate_hdf_group_against

    with h5py.File(name, "r") as f:
        entry = f["entry"]
        if definition is None:
            raw = entry["definition"][()] if "definition" in entry else b""
            definition = raw.decode() if isinstance(raw, bytes) else str(raw)
        collector.clear()
        collector.logging = False
        validate_hdf_group_against(definition, entry, name)
    return {
        "definition": definition,
        "version": version("pynxtools"),
        "valid": not collector.has_validation_problems(),
        "problems": sorted(_readable(message) for message in collector.data["warning_and_error"]),
        "notes": sorted(_readable(message) for message in collector.data["info"]),
    }


def _readable(message: str) -> str:
    """pynxtools' collector keys read '<path>ValidationProblem.<Kind><value>'."""
    return message.replace("ValidationProblem.", ": ", 1)


if __name__ == "__main__":
    print(json.dumps(_validate_here(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else None)))
