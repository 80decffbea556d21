"""A result sink for the variables tests, until the run catalogue exists: each ``set_variable``
call as one JSON line in ``<directory>/<proposal>.variables.jsonl`` (the runner's process writes
it; the test reads it back)."""

from __future__ import annotations

import json
from pathlib import Path


class JsonLinesSink:
    def __init__(self, directory: Path, proposal: str):
        self.path = Path(directory) / f"{proposal}.variables.jsonl"
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def set_variable(self, run, name, value, *, summary=None, error=None, attributes=None) -> None:
        with self.path.open("a") as out:
            out.write(json.dumps({"run": run, "name": name, "value": value, "summary": summary,
                                  "error": error, "attributes": attributes or {}}) + "\n")


def read_cells(directory: Path, proposal: str) -> dict[tuple[int, str], dict]:
    """The last record of each (run, variable), as a catalogue would hold it."""
    path = Path(directory) / f"{proposal}.variables.jsonl"
    cells = {}
    for line in path.read_text().splitlines():
        record = json.loads(line)
        cells[(record["run"], record["name"])] = record
    return cells
