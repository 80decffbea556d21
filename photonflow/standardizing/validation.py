"""Validating a NeXus file against the official application definition, with the NXDL that
pynxtools ships (the NeXus definitions of its release; no network needed).

pynxtools opens external links relative to the working directory, not to the linking file as
HDF5 does, so the check runs in a child process started in the file's folder: the frames,
linked relatively, are found, and the caller's working directory is never changed (a Tango
server has many threads).

Run as ``python -m photonflow.standardizing.validation FILE [DEFINITION]``: prints one JSON
object ``{"valid": ..., "definition": ..., "problems": [...], "notes": [...]}``.
"""

from __future__ import annotations

import json
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

    @property
    def valid(self) -> bool:
        return not self.problems


def validate_nexus(path: str | Path, definition: str | None = None, timeout: float = 300) -> ValidationReport:
    """Validate ``/entry`` of ``path`` against ``definition`` (default: the entry's own)."""
    path = Path(path).resolve()
    command = [sys.executable, "-m", "photonflow.standardizing.validation", path.name]
    if definition:
        command.append(definition)
    result = subprocess.run(command, cwd=path.parent, capture_output=True, text=True, timeout=timeout, check=False)
    if result.returncode != 0:
        return ValidationReport(path, definition or "", (f"the validator failed: {result.stderr.strip()[-2000:]}",), ())
    report = json.loads(result.stdout.strip().splitlines()[-1])
    return ValidationReport(path, report["definition"], tuple(report["problems"]), tuple(report["notes"]))


def _validate_here(name: str, definition: str | None) -> dict:
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
        "valid": not collector.has_validation_problems(),
        "problems": sorted(_readable(message) for message in collector.data["warning_and_error"]),
        "notes": sorted(_readable(message) for message in collector.data["info"]),
    }


def _readable(message: str) -> str:
    """pynxtools' collector keys read '<path>ValidationProblem.<Kind><value>'."""
    return message.replace("ValidationProblem.", ": ", 1)


if __name__ == "__main__":
    print(json.dumps(_validate_here(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else None)))
