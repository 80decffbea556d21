"""The run table as the web page shows it, in plain Python (no web framework, no Tango): tested
without a server, served by ``photonflow.clients.web``.

- ``Catalogues``: the proposals' catalogues in one folder (the DataManager's
  ``<data root>/catalogue``). A proposal named by a browser is looked up in that folder's listing,
  never joined to a path as given, and a page reads only its own proposal's catalogue.
- ``table``: every run with its fixed fields and one column per variable, each column with its
  title, units and group (a variable's first tag: detector, beam, analysis...), each cell whose
  variable failed with the reason in ``errors``, and in ``plots`` the cells that are arrays (I(q),
  an image: the table shows their summary or shape, ``plot`` gives the array).
- ``row``: one run, for the live update a change on the catalogue's stream brings.
- ``csv_text``: the table as a spreadsheet opens it.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from photonflow.datamanager.catalogue import Catalogue
from photonflow.errors import ConfigurationError

# the runs' own fields the table shows first, with their titles and units (group "Run")
FIXED_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("run", "Run", ""), ("start", "Start", ""), ("sample", "Sample", ""), ("node", "Node", ""),
    ("role", "Role", ""), ("frames_written", "Frames", ""), ("missing_frames", "Missing", ""),
    ("end_reason", "End", ""), ("raw_file", "File", ""), ("comment", "Comment", ""),
)
HIDDEN = {"end", "proposal", "session", "beamline", "frames_requested", "series_id", "dataset", "nexus_file"}
PROPOSAL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
MAX_COMMENT = 2000  # characters


class UnknownProposal(ConfigurationError):
    reason = "UnknownProposal"


@dataclass(frozen=True)
class Column:
    key: str
    title: str
    group: str
    units: str = ""

    def as_json(self) -> dict[str, str]:
        return {"key": self.key, "title": self.title, "group": self.group, "units": self.units}


class Catalogues:
    """The catalogues of one folder, ``<proposal>.sqlite`` each, opened read-only in spirit: the
    page writes only comments."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)

    def proposals(self) -> list[str]:
        if not self.folder.is_dir():
            return []
        return sorted(p.stem for p in self.folder.glob("*.sqlite") if PROPOSAL_NAME.fullmatch(p.stem))

    def open(self, proposal: str) -> Catalogue:
        """The proposal's catalogue; ``UnknownProposal`` unless the folder lists it (a name from a
        browser is only ever compared with that listing)."""
        if not isinstance(proposal, str) or proposal not in self.proposals():
            raise UnknownProposal(f"no catalogue of proposal {str(proposal)[:64]!r} here")
        return Catalogue(self.folder, proposal)


def columns(catalogue: Catalogue, rows: Iterable[dict]) -> list[Column]:
    """The fixed columns, then each variable's (sorted by group, then name) with its title, units
    and group from the attributes its runner stored."""
    described: dict[str, dict] = {}
    rows = list(rows)
    names = sorted({key for row in rows for key in row} - {c[0] for c in FIXED_COLUMNS} - HIDDEN)
    for row in reversed(rows):  # the latest run that has each variable describes it
        missing = [name for name in names if name not in described]
        if not missing:
            break
        for name, record in catalogue.variable_records(int(row["run"])).items():
            if name in missing and record["attributes"].get("title") is not None:
                described[name] = record["attributes"]
    variable_columns = []
    for name in names:
        attributes = described.get(name, {})
        tags = attributes.get("tags") or []
        variable_columns.append(Column(name, str(attributes.get("title") or name),
                                       str(tags[0]) if tags else "variables", str(attributes.get("units") or "")))
    variable_columns.sort(key=lambda column: (column.group, column.title.lower()))
    return [Column(key, title, "run", units) for key, title, units in FIXED_COLUMNS] + variable_columns


def cell(value: Any) -> Any:
    """A value as the page shows it: numbers and text as they are, an array by its shape (its
    values in a plot), NaN and infinities as text."""
    if isinstance(value, np.ndarray):
        return {"array": list(value.shape)}
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)
    if isinstance(value, bytes):
        return f"<{len(value)} bytes>"
    return value


def table(catalogue: Catalogue) -> dict[str, Any]:
    """The whole table: ``columns``, ``rows`` (one dict per run, keys the columns'), ``errors``
    (run -> variable -> why it has no value) and the catalogue's ``version``."""
    rows = catalogue.table()
    layout = columns(catalogue, rows)
    errors, plots = _errors_and_plots(catalogue)
    return {"proposal": catalogue.proposal, "version": catalogue.version(),
            "columns": [c.as_json() for c in layout],
            "rows": [{c.key: cell(row.get(c.key)) for c in layout} for row in rows],
            "errors": errors, "plots": plots}


def row(catalogue: Catalogue, run: int) -> dict[str, Any] | None:
    """One run's row and its errors (None when the catalogue has no such run)."""
    record = catalogue.run(run)
    if record is None:
        return None
    values = {key: cell(getattr(record, key)) for key, _, _ in FIXED_COLUMNS}
    records = catalogue.variable_records(run)
    values.update({name: cell(r["value"]) for name, r in records.items()})
    return {"run": run, "values": values, "errors": {name: r["error"] for name, r in records.items() if r["error"]},
            "plots": sorted(name for name, r in records.items() if _plottable(r["attributes"])),
            "version": catalogue.version()}


def _plottable(attributes: dict) -> bool:
    """An array variable (kept whole, or summarised to one value in the table): its shape says so."""
    shape = attributes.get("shape") or []
    return bool(shape) and int(np.prod(shape)) > 1


def _errors_and_plots(catalogue: Catalogue) -> tuple[dict[str, dict[str, str]], dict[str, list[str]]]:
    """Why each failed cell has no value, and which cells are arrays to plot: one query for the
    whole table, not one per run."""
    with catalogue._session() as db:
        cells = db.execute("SELECT run, name, error, attributes FROM run_variables "
                           "WHERE error IS NOT NULL OR attributes LIKE '%\"shape\"%' ORDER BY run, name").fetchall()
    errors: dict[str, dict[str, str]] = {}
    plots: dict[str, list[str]] = {}
    for run, name, error, attributes in cells:
        if error is not None:
            errors.setdefault(str(run), {})[name] = error
        if attributes and _plottable(json.loads(attributes)):
            plots.setdefault(str(run), []).append(name)
    return errors, plots


def csv_text(data: dict[str, Any]) -> str:
    """The table (as ``table`` gives it) as CSV: titles with units as the header."""
    out = io.StringIO()
    writer = csv.writer(out)
    keys = [c["key"] for c in data["columns"]]
    writer.writerow([c["title"] + (f" [{c['units']}]" if c["units"] else "") for c in data["columns"]])
    for values in data["rows"]:
        writer.writerow(["" if values.get(k) is None else _csv_cell(values[k]) for k in keys])
    return out.getvalue()


def _csv_cell(value: Any) -> str:
    if isinstance(value, dict) and "array" in value:
        return "array " + "x".join(str(n) for n in value["array"])
    return str(value)


def check_comment(run: Any, text: Any) -> tuple[int, str]:
    """A comment's run and text as the catalogue takes them, or a ConfigurationError saying what to fix."""
    if isinstance(run, bool) or not isinstance(run, int) or run < 1:
        raise ConfigurationError(f"run must be a run number (1, 2...), got {run!r}", reason="InvalidRun")
    if not isinstance(text, str):
        raise ConfigurationError("the comment must be text", reason="InvalidComment")
    if len(text) > MAX_COMMENT:
        raise ConfigurationError(f"a comment has at most {MAX_COMMENT} characters, this one {len(text)}",
                                 reason="InvalidComment")
    return run, text


def plot(catalogue: Catalogue, run: int, name: str) -> dict[str, Any] | None:
    """A run's array variable to plot: ``{"x", "y"}`` for a curve such as I(q) (x None for an
    index), ``{"z"}`` for an image (the summary image); None when the run has no such array. Read
    from the catalogue, else from the per-run HDF5 file the runner wrote beside it. The web page
    and the Qt run table both plot what this gives."""
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,127}", name or ""):
        return None
    value = catalogue.variable_records(run).get(name, {}).get("value")
    if not isinstance(value, np.ndarray):
        data_file = catalogue.directory / f"{catalogue.proposal}_variables" / f"p{catalogue.proposal}_r{run}.h5"
        if not data_file.is_file():
            return None
        with h5py.File(data_file, "r") as f:
            item = f.get(name)
            if item is None:
                return None
            value = item["data"][()] if isinstance(item, h5py.Group) and "data" in item else item[()]
        value = np.asarray(value)
    if value.dtype.kind not in "biuf":
        return None
    if value.ndim == 2 and 2 in value.shape:  # (x, y) pairs such as I(q)
        x, y = (value[0], value[1]) if value.shape[0] == 2 else (value[:, 0], value[:, 1])
        return {"x": _finite(x), "y": _finite(y)}
    if value.ndim == 2:
        return {"z": [_finite(line) for line in value]}
    if value.ndim == 1 and value.size > 1:
        return {"x": None, "y": _finite(value)}
    return None


def _finite(values: np.ndarray) -> list:
    return [float(v) if math.isfinite(v) else None for v in np.asarray(values, dtype=np.float64)]
