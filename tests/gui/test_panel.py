"""The operator panel against the running suite: live State, a series run from its own
buttons, and operator errors shown in the panel instead of raised."""

from __future__ import annotations

import json
import os
import time

import pytest

os.environ["QT_QPA_PLATFORM"] = "offscreen"  # before any Qt import: no display needed

import tango

from tests.conftest import REPOSITORY

pytestmark = pytest.mark.gui

TANGO_STATES = {"ON", "OFF", "STANDBY", "RUNNING", "MOVING", "ALARM", "FAULT", "UNKNOWN", "INIT"}
IDLE_STATES = {"ON", "ALARM"}  # what the Controller shows between series
SCREENSHOT = REPOSITORY / "var" / "screenshots" / "panel.png"


@pytest.fixture(scope="module")
def app():
    """One Qt application for the module; Taurus widgets need a TaurusApplication.

    TaurusApplication.exec_() tells Taurus the application started, which starts its client
    polling (SeriesId has no change events). The tests drive the loop themselves, so they
    say so here instead.
    """
    from taurus.external.qt import QtWidgets
    from taurus.qt.qtgui.application import TaurusApplication
    from taurus.taurusstatecontroller import application

    qt_app = QtWidgets.QApplication.instance() or TaurusApplication([], cmd_line_parser=None)
    application.application_started()
    return qt_app


@pytest.fixture
def panel(app, running_suite):
    from photonflow.clients.panel import ControllerPanel

    widget = ControllerPanel(running_suite.controller)
    widget.show()
    yield widget
    widget.close()
    widget.deleteLater()
    app.processEvents()


def process_until(condition, timeout: float, what: str, describe=lambda: ""):
    """Run the Qt event loop in short slices until ``condition()`` holds, or fail at the deadline."""
    from taurus.external.qt import QtCore

    deadline = time.monotonic() + timeout
    while True:
        slice_loop = QtCore.QEventLoop()  # processes events (Taurus updates) for 20 ms
        QtCore.QTimer.singleShot(20, slice_loop.quit)
        slice_loop.exec_()
        if condition():
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not seen within {timeout} s. {describe()}")


def labels_of(panel) -> str:
    texts = {"State": panel.state_label.text(), "Status": panel.status_label.text()}
    texts.update({name: label.text() for name, label in panel.counter_labels.items()})
    return f"Panel shows {texts}; message {panel.message()!r}"


def wait_until_idle(panel, timeout: float = 60) -> None:
    process_until(lambda: panel.state_label.text() in TANGO_STATES, timeout,
                  "a real State in the State label", lambda: labels_of(panel))
    process_until(lambda: panel.state_label.text() in IDLE_STATES, timeout,
                  "the Controller idle (ON/ALARM)", lambda: labels_of(panel))


def assert_usable_png(path) -> None:
    """A real rendering: a few KB, and many colours (text, frames, the state colour)."""
    from taurus.external.qt import Qt

    assert path.is_file(), path
    assert path.stat().st_size > 5_000, f"{path} is only {path.stat().st_size} bytes"
    image = Qt.QImage(str(path))
    assert not image.isNull() and image.width() > 300 and image.height() > 300
    colours = {
        image.pixel(x, y)
        for x in range(0, image.width(), 3)
        for y in range(0, image.height(), 3)
    }
    assert len(colours) > 10, f"{path} is nearly uniform: {len(colours)} colours"


def test_panel_shows_live_state_and_runs_a_series_from_its_buttons(panel, running_suite, tmp_path):
    wait_until_idle(panel)
    series_before = tango.DeviceProxy(running_suite.controller).SeriesId
    series = series_before + 1

    panel.configuration_edit.setText(json.dumps({"frames": 20, "exposure": 0.001, "period": 0.002}))
    panel.configure_button.click()
    assert panel.message().startswith("Configured"), labels_of(panel)
    panel.command_buttons["Start"].click()
    assert panel.message() == "Start done.", labels_of(panel)

    # The Status names the series, so an earlier series' "20" can't satisfy the wait.
    process_until(
        lambda: f"series {series}:" in panel.status_label.text()
        and "all accounted for" in panel.status_label.text()
        and panel.state_label.text() == "ON"
        and panel.counter_labels["FramesWritten"].text() == "20",
        60, f"series {series} complete with 20 frames written", lambda: labels_of(panel),
    )
    for name in ("FramesRequested", "FramesAcquired", "FramesReceived", "FramesWritten"):
        assert panel.counter_labels[name].text() == "20", labels_of(panel)
    assert panel.counter_labels["MissingFrames"].text() == "0", labels_of(panel)
    assert panel.counter_labels["LastFile"].text().endswith(".h5"), labels_of(panel)
    process_until(lambda: panel.counter_labels["SeriesId"].text() == str(series), 15,
                  "the SeriesId label (polled, no events)", lambda: labels_of(panel))

    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    for path in (tmp_path / "panel.png", SCREENSHOT):
        assert panel.grab().save(str(path)), path
        assert_usable_png(path)


def test_bad_configure_shows_the_devfailed_reason_in_the_panel(panel, running_suite):
    wait_until_idle(panel)
    bad = json.dumps({"frames": -1, "exposure": 0.001, "period": 0.002})
    with pytest.raises(tango.DevFailed) as raised:
        tango.DeviceProxy(running_suite.controller).Configure(bad)
    expected = raised.value.args[0]

    panel.configuration_edit.setText(bad)
    panel.configure_button.click()  # must not raise

    assert expected.reason == "InvalidConfiguration"
    assert expected.reason in panel.message(), labels_of(panel)
    assert expected.desc in panel.message(), labels_of(panel)
    assert panel.message().startswith("Configure failed"), labels_of(panel)
