"""The run-table window over a real catalogue, offscreen: rows and variables as stored, a live
update when a run arrives, the filter, a comment edited into the catalogue, an array variable
plotted, the CSV export; a screenshot to look at in var/screenshots/run_table.png."""

from __future__ import annotations

import csv
import os

import h5py
import numpy as np
import pytest

os.environ["QT_QPA_PLATFORM"] = "offscreen"  # before any Qt import: no display needed

from photonflow.datamanager.catalogue import Catalogue, RunRecord
from tests.helpers.panel import process_until
from tests.helpers.paths import REPOSITORY

pytestmark = pytest.mark.gui
SCREENSHOT = REPOSITORY / "var" / "screenshots" / "run_table.png"


@pytest.fixture(scope="module")
def app():
    from taurus.external.qt import QtWidgets
    from taurus.qt.qtgui.application import TaurusApplication

    return QtWidgets.QApplication.instance() or TaurusApplication([], cmd_line_parser=None)


def record(run: int, role: str, proposal: str = "mx0001") -> RunRecord:
    return RunRecord(run=run, proposal=proposal, session="20261127", sample="ceo2", beamline="demo",
                     start=f"2026-11-27T10:{run % 60:02d}:00Z", end=f"2026-11-27T10:{run % 60:02d}:30Z",
                     node=f"eff/energy[{run}]/{role}", role=role, raw_file=f"/data/r{run}.h5",
                     nexus_file=f"/data/r{run}.nxs", frames_requested=10, frames_written=10, missing_frames=0,
                     end_reason="completed")


@pytest.fixture
def catalogue(tmp_path):
    catalogue = Catalogue(tmp_path, "mx0001")
    for run, role in enumerate(("dark", "white", "data", "white", "data"), start=1):
        catalogue.record_run(record(run, role))
        catalogue.set_variable(run, "mean_intensity", 10.0 * run)
    variables = tmp_path / "mx0001_variables"
    variables.mkdir()
    with h5py.File(variables / "pmx0001_r3.h5", "w") as f:  # the runner's per-run file
        group = f.create_group("integrated")
        group["data"] = np.vstack([np.linspace(10, 40, 50), np.exp(-((np.linspace(10, 40, 50) - 20) ** 2))])
    return catalogue


def test_the_window_shows_the_catalogue_and_follows_it(app, catalogue, tmp_path):
    from photonflow.clients.run_table import RunTableWindow

    window = RunTableWindow(catalogue.path)
    window.show()
    try:
        model = window.model
        assert [row["run"] for row in model.rows] == [1, 2, 3, 4, 5]
        assert [row["role"] for row in model.rows] == ["dark", "white", "data", "white", "data"]
        column = model.columns.index("mean_intensity")
        assert model.data(model.index(2, column)) == "30"

        catalogue.record_run(record(6, "data"))  # a run arrives while the window is open
        catalogue.set_variable(6, "mean_intensity", 61.5)
        process_until(lambda: len(model.rows) == 6, 30, "the sixth run in the table")
        assert model.data(model.index(5, column)) == "61.5"

        window.filter.setText("white")
        assert window.proxy_model.rowCount() == 2
        exported = tmp_path / "white.csv"
        window.export_csv(exported)
        with open(exported) as f:
            rows = list(csv.DictReader(f))
        assert [row["run"] for row in rows] == ["2", "4"] and {row["role"] for row in rows} == {"white"}
        window.filter.setText("")

        comment = model.index(0, model.columns.index("comment"))
        assert model.setData(comment, "beam lost at the end")
        assert catalogue.run(1).comment == "beam lost at the end"

        assert window.plot_variable(3, "integrated")
        assert window.plot.title == "run 3: integrated"
        assert not window.plot_variable(2, "integrated")  # no data for that run: nothing drawn

        SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        app.processEvents()
        assert window.grab().save(str(SCREENSHOT))
    finally:
        window.close()
        window.deleteLater()


def test_a_cell_without_a_value_shows_why(app, catalogue):
    from taurus.external.qt import Qt

    from photonflow.clients.run_table import RunTableModel

    reason = "runner exited with code 7 while computing hot_pixels (/cfg/context.py:41)"
    catalogue.set_variable(2, "hot_pixels", 3)
    catalogue.set_variable(4, "hot_pixels", None, error=reason)
    model = RunTableModel(catalogue)
    column = model.columns.index("hot_pixels")
    assert model.data(model.index(3, column)) == reason
    assert model.data(model.index(3, column), Qt.Qt.ToolTipRole) == reason
    assert model.data(model.index(1, column)) == "3"
    assert model.data(model.index(1, column), Qt.Qt.ToolTipRole) is None
    assert model.data(model.index(0, column)) == ""  # never computed for run 1: nothing to say
