"""``photonflow-runs``: the run table of a proposal, live, as DAMNIT shows it.

One row per run (number, times, sample, structure node and role, frames, end reason, comment,
then one column per computed variable), updated as runs and variables arrive; a filter over every
column, editable comments (stored in the catalogue, through the DataManager when one is named),
a plot of a run's array variable, export to CSV.

The catalogue is SQLite read directly (read-only but for comments): the window needs no server to
browse a finished experiment, and sees a new result as soon as the catalogue's version changes.

    photonflow-runs CATALOGUE.sqlite [--datamanager demo/photonflow/datamanager]
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import numpy as np
from taurus.external.qt import Qt, QtCore, QtWidgets

from photonflow.datamanager.catalogue import Catalogue
from photonflow.web.run_table import plot

FIXED_COLUMNS = ("run", "start", "sample", "node", "role", "frames_written", "missing_frames", "end_reason", "comment")
REFRESH_MS = 250  # how often the catalogue's version is looked at


class RunTableModel(QtCore.QAbstractTableModel):
    """The catalogue's pivoted table; only the comment column is editable."""

    def __init__(self, catalogue: Catalogue, set_comment=None):
        super().__init__()
        self.catalogue = catalogue
        self.set_comment = set_comment or catalogue.set_comment
        self.rows: list[dict] = []
        self.columns: list[str] = list(FIXED_COLUMNS)
        self.version = -1
        self._errors: dict[int, dict[str, str]] = {}  # run -> variable -> why it has no value, read when shown
        self.refresh()

    def refresh(self) -> bool:
        """Reload when the catalogue changed; True if it did."""
        version = self.catalogue.version()
        if version == self.version:
            return False
        rows = self.catalogue.table()
        variables = sorted({key for row in rows for key in row} - set(FIXED_COLUMNS)
                           - {"raw_file", "nexus_file", "end", "proposal", "session", "beamline", "frames_requested",
                              "series_id", "dataset"})
        self.beginResetModel()
        self.rows, self.columns, self.version = rows, [*FIXED_COLUMNS, *variables], version
        self._errors = {}
        self.endResetModel()
        return True

    def rowCount(self, parent=None):
        return 0 if parent is not None and parent.isValid() else len(self.rows)

    def columnCount(self, parent=None):
        return 0 if parent is not None and parent.isValid() else len(self.columns)

    def headerData(self, section, orientation, role=Qt.Qt.DisplayRole):
        if role == Qt.Qt.DisplayRole and orientation == Qt.Qt.Horizontal:
            return self.columns[section]
        return None

    def data(self, index, role=Qt.Qt.DisplayRole):
        if not index.isValid():
            return None
        value = self.rows[index.row()].get(self.columns[index.column()])
        if role in (Qt.Qt.DisplayRole, Qt.Qt.EditRole):
            return _text(value) if value is not None else self.cell_error(index.row(), self.columns[index.column()])
        if role == Qt.Qt.ToolTipRole:
            return self.cell_error(index.row(), self.columns[index.column()]) or None
        if role == Qt.Qt.UserRole:
            return value
        return None

    def cell_error(self, row: int, column: str) -> str:
        """Why a run's variable has no value (its error, a context that did not load, a runner that
        timed out); "" when it has one. Read from the catalogue when a row is first shown."""
        if column in FIXED_COLUMNS:
            return ""
        run = int(self.rows[row]["run"])
        if run not in self._errors:
            self._errors[run] = {name: cell["error"] or "" for name, cell in
                                 self.catalogue.variable_records(run).items()}
        return self._errors[run].get(column, "")

    def flags(self, index):
        flags = super().flags(index)
        if index.isValid() and self.columns[index.column()] == "comment":
            flags |= Qt.Qt.ItemIsEditable
        return flags

    def setData(self, index, value, role=Qt.Qt.EditRole):
        if role != Qt.Qt.EditRole or self.columns[index.column()] != "comment":
            return False
        run = int(self.rows[index.row()]["run"])
        self.set_comment(run, str(value))
        self.rows[index.row()]["comment"] = str(value)
        self.dataChanged.emit(index, index)
        return True

    def to_csv(self, path: Path, rows: list[int] | None = None) -> None:
        with open(path, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(self.columns)
            for index in rows if rows is not None else range(len(self.rows)):
                writer.writerow([_text(self.rows[index].get(column)) for column in self.columns])


class PlotView(QtWidgets.QWidget):
    """A run's array variable, drawn with matplotlib (imported on the first plot: it takes a second,
    and the table must open at once)."""

    def __init__(self):
        super().__init__()
        self.figure = self.canvas = None
        self.layout_ = QtWidgets.QVBoxLayout(self)
        self.layout_.addWidget(QtWidgets.QLabel("Click a variable's cell to plot a run's array"))
        self.title = ""

    def show_array(self, title: str, x: np.ndarray | None, y: np.ndarray) -> None:
        if self.canvas is None:
            from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
            from matplotlib.figure import Figure

            self.figure = Figure(figsize=(5, 2.5))
            self.canvas = FigureCanvasQTAgg(self.figure)
            self.layout_.itemAt(0).widget().hide()
            self.layout_.addWidget(self.canvas)
        self.figure.clear()
        axes = self.figure.add_subplot(111)
        axes.plot(np.arange(len(y)) if x is None else x, y)
        axes.set_title(title, fontsize=9)
        self.title = title
        self.canvas.draw_idle()


class RunTableWindow(QtWidgets.QMainWindow):
    def __init__(self, catalogue_path: str | Path, datamanager: str = ""):
        super().__init__()
        path = Path(catalogue_path)
        self.catalogue = Catalogue(path.parent, path.stem)
        set_comment = None
        if datamanager:
            import tango

            proxy = tango.DeviceProxy(datamanager)
            set_comment = lambda run, text: proxy.SetComment([str(run), text])  # noqa: E731 - through the device
        self.model = RunTableModel(self.catalogue, set_comment)
        self.proxy_model = QtCore.QSortFilterProxyModel()
        self.proxy_model.setSourceModel(self.model)
        self.proxy_model.setFilterKeyColumn(-1)
        self.proxy_model.setFilterCaseSensitivity(Qt.Qt.CaseInsensitive)
        self.setWindowTitle(f"Runs of {path.stem}")

        self.filter = QtWidgets.QLineEdit(placeholderText="filter: any text in any column (role, sample, tag...)")
        self.filter.textChanged.connect(self.proxy_model.setFilterFixedString)
        export = QtWidgets.QPushButton("Export CSV…")
        export.clicked.connect(self._export)
        self.table = QtWidgets.QTableView()
        self.table.setModel(self.proxy_model)
        self.table.setSortingEnabled(True)
        self.table.sortByColumn(0, Qt.Qt.AscendingOrder)  # runs in the order they were taken
        self.table.horizontalHeader().setResizeContentsPrecision(50)  # widths from 50 rows, not every run
        self.table.clicked.connect(self._plot_cell)
        self.plot = PlotView()
        self.status = QtWidgets.QLabel()

        bar = QtWidgets.QHBoxLayout()
        bar.addWidget(self.filter)
        bar.addWidget(export)
        central = QtWidgets.QWidget()
        layout = QtWidgets.QVBoxLayout(central)
        layout.addLayout(bar)
        layout.addWidget(self.table, 3)
        layout.addWidget(self.plot, 2)
        layout.addWidget(self.status)
        self.setCentralWidget(central)
        self.resize(1100, 700)
        self.table.resizeColumnsToContents()  # the catalogue read above: headers and values unclipped
        self.timer = QtCore.QTimer(self)
        self.timer.timeout.connect(self.refresh)
        self.timer.start(REFRESH_MS)
        self._say()

    def refresh(self) -> None:
        if self.model.refresh():
            self.table.resizeColumnsToContents()
            self._say()

    def _say(self) -> None:
        self.status.setText(f"{len(self.model.rows)} runs, {len(self.model.columns) - len(FIXED_COLUMNS)} "
                            f"variables; catalogue version {self.model.version}")

    def _export(self) -> None:
        path, _ = QtWidgets.QFileDialog.getSaveFileName(self, "Export the run table", "runs.csv", "CSV (*.csv)")
        if path:
            self.export_csv(Path(path))

    def export_csv(self, path: Path) -> None:
        """The rows the filter shows, in their order."""
        rows = [self.proxy_model.mapToSource(self.proxy_model.index(i, 0)).row()
                for i in range(self.proxy_model.rowCount())]
        self.model.to_csv(path, rows)

    def _plot_cell(self, index) -> None:
        source = self.proxy_model.mapToSource(index)
        column = self.model.columns[source.column()]
        if column in FIXED_COLUMNS:
            return
        run = int(self.model.rows[source.row()]["run"])
        self.plot_variable(run, column)

    def plot_variable(self, run: int, name: str) -> bool:
        """Plot the run's full data of an array variable (the per-run HDF5 the runner wrote): a curve."""
        found = plot(self.catalogue, run, name)
        if found is None or "y" not in found:
            return False
        x = None if found["x"] is None else np.asarray(found["x"], dtype=np.float64)
        self.plot.show_array(f"run {run}: {name}", x, np.asarray(found["y"], dtype=np.float64))
        return True


def _text(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("catalogue", help="the proposal's catalogue (.sqlite)")
    parser.add_argument("--datamanager", default="", help="comments go through this DataManager device")
    args = parser.parse_args(argv)
    if not Path(args.catalogue).is_file():  # opening one would create an empty catalogue under the typo's name
        parser.error(f"there is no catalogue {args.catalogue}: give an existing <proposal>.sqlite (the "
                     "DataManager's CataloguePath says where)")
    from taurus.qt.qtgui.application import TaurusApplication

    app = TaurusApplication(sys.argv[:1], cmd_line_parser=None)
    window = RunTableWindow(args.catalogue, args.datamanager)
    from photonflow.clients.qt_exit import run_until_closed

    return run_until_closed(app, window, ready=f"photonflow-runs: showing {args.catalogue}")


if __name__ == "__main__":
    sys.exit(main())
