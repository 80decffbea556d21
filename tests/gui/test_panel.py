"""The operator panel against the running suite: live State, a series run from its own
buttons and form, the Recorder's live image showing the diffraction rings, bad input refused
with a message in the panel, device errors shown instead of raised, the run table opened."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

os.environ["QT_QPA_PLATFORM"] = "offscreen"  # before any Qt import: no display needed

import tango

from tests.helpers.panel import SCREENSHOTS, process_until, save_screenshot

pytestmark = pytest.mark.gui

TANGO_STATES = {"ON", "OFF", "STANDBY", "RUNNING", "MOVING", "ALARM", "FAULT", "UNKNOWN", "INIT"}
IDLE_STATES = {"ON", "ALARM"}  # what the Controller shows between series
SCREENSHOT = SCREENSHOTS / "panel.png"


@pytest.fixture
def panel(app, running_suite):
    from photonflow.clients.panel import ControllerPanel

    widget = ControllerPanel(running_suite.controller)
    widget.show()
    yield widget
    widget.close()
    widget.deleteLater()
    app.processEvents()


def labels_of(panel) -> str:
    texts = {"State": panel.state_label.text(), "Status": panel.status_label.text()}
    texts.update({name: label.text() for name, label in panel.counter_labels.items()})
    texts.update({f"form {key}": field.edit.text() for key, field in panel.form_fields.items()})
    return f"Panel shows {texts}; message {panel.message()!r}"


def wait_until_idle(panel, timeout: float = 60) -> None:
    process_until(lambda: panel.state_label.text() in TANGO_STATES, timeout,
                  "a real State in the State label", lambda: labels_of(panel))
    process_until(lambda: panel.state_label.text() in IDLE_STATES, timeout,
                  "the Controller idle (ON/ALARM)", lambda: labels_of(panel))


def ring_peaks(profile: np.ndarray, start: int, stop: int) -> list[int]:
    """Radii where the radial profile has a ring: a local maximum standing well above the
    profile's running median (the smooth background of the pattern)."""
    peaks = []
    for radius in range(start + 1, min(stop, len(profile) - 1)):
        window = profile[max(start, radius - 12): radius + 13]
        background = float(np.median(window))
        if profile[radius] == window.max() and profile[radius] > 1.3 * background + 1e-9:
            peaks.append(radius)
    return peaks


def beam_centre_in_preview(running_suite, image_shape) -> tuple[float, float]:
    """The simulator's BeamCentre (x, y in full-frame pixels) in the binned preview's (row, column)."""
    properties = running_suite.deployment.device("SimulatorAcquirer").properties
    x, y = (float(value) for value in properties["BeamCentre"][0].split(","))
    factor = -(-int(properties["ImageWidth"][0]) // image_shape[1])  # ceil: partial blocks count
    return (y + 0.5) / factor - 0.5, (x + 0.5) / factor - 0.5


def test_panel_shows_live_state_and_runs_a_series_from_its_buttons(panel, running_suite, tmp_path):
    from photonflow.clients.panel import ring_profile

    wait_until_idle(panel)
    series_before = tango.DeviceProxy(running_suite.controller).SeriesId
    series = series_before + 1

    panel.set_form(frames=20, exposure=0.001, period=0.002, file="")
    panel.configure_button.click()
    assert panel.message() == "Configured: 20 frames, exposure 0.001 s, period 0.002 s.", labels_of(panel)
    assert json.loads(tango.DeviceProxy(running_suite.controller).Configuration)["frames"] == 20
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
    last_file = tango.DeviceProxy(running_suite.controller).LastFile
    assert last_file.endswith(".h5") and panel.counter_labels["LastFile"].text() == last_file, labels_of(panel)
    process_until(lambda: panel.counter_labels["SeriesId"].text() == str(series), 15,
                  "the SeriesId label (polled, no events)", lambda: labels_of(panel))

    # The live image: the Recorder's Preview of this series, pushed as events to the image item.
    recorder = tango.DeviceProxy(running_suite.recorder)
    process_until(lambda: panel.preview.data() is not None
                  and panel.preview_frame_label.text() == str(recorder.PreviewFrameNumber) != "-1",
                  15, "the series' preview in the image widget",
                  lambda: f"frame label {panel.preview_frame_label.text()!r}, device {recorder.PreviewFrameNumber}")
    image = np.asarray(panel.preview.data())
    assert np.array_equal(image, recorder.Preview), "the widget shows the Recorder's Preview"
    assert image.ndim == 2 and min(image.shape) > 100 and image.max() > 0
    assert np.count_nonzero(image) > 0.5 * image.size, "a pattern over the detector, not a few pixels"
    centre = beam_centre_in_preview(running_suite, image.shape)
    profile = ring_profile(image, centre)
    peaks = ring_peaks(profile, 10, int(min(image.shape) / 2))
    assert len(peaks) >= 3, f"rings in the radial profile: peaks at radii {peaks}; profile {np.round(profile, 1)}"
    # the same rings around a wrong centre are smeared out: the structure is circular about the beam
    off_centre = ring_peaks(ring_profile(image, (centre[0] + 40, centre[1] + 40)), 10, int(min(image.shape) / 2))
    assert len(off_centre) < len(peaks), (peaks, off_centre)
    levels = panel.preview.histogram.getLevels()
    assert levels[0] < levels[1] <= float(image.max()), levels

    save_screenshot(panel, "panel.png", tmp_path)


@pytest.mark.parametrize(("fields", "field", "words"), [
    ({"frames": "ten"}, "frames", "Frames must be a whole number, got 'ten'"),
    ({"frames": "0"}, "frames", "Frames must be at least 1"),
    ({"exposure": "-0.1"}, "exposure", "Exposure must be a positive number of seconds"),
    ({"exposure": "0.01", "period": "0.005"}, "period", "Period (0.005 s) is shorter than the exposure (0.01 s)"),
    ({"file": "sample1/scan.tif"}, "file", "must end in .h5, .hdf5, .nxs"),
    ({"file": "../elsewhere/scan.h5"}, "file", "without '..'"),
])
def test_the_form_refuses_bad_input_with_a_visible_message(panel, running_suite, tmp_path, fields, field, words):
    wait_until_idle(panel)
    controller = tango.DeviceProxy(running_suite.controller)
    before = controller.Configuration
    panel.set_form(**{"frames": "10", "exposure": "0.001", "period": "0.002", "file": "", **fields})
    panel.configure_button.click()

    assert panel.message().startswith("Not configured: ") and words in panel.message(), labels_of(panel)
    assert panel.message_label.isVisible() and "#b00020" in panel.message_label.styleSheet()
    assert "#b00020" in panel.form_fields[field].edit.styleSheet(), "the field to correct is marked"
    assert all(not other.edit.styleSheet() for key, other in panel.form_fields.items() if key != field)
    assert controller.Configuration == before, "nothing was sent to the Controller"
    panel.form_fields[field].edit.textEdited.emit("typing")  # correcting the field clears its mark
    assert not panel.form_fields[field].edit.styleSheet()
    if field == "period":
        panel.set_form(**fields)
        panel.configure_button.click()
        save_screenshot(panel, "panel_bad_input.png", tmp_path)


def test_bad_configure_shows_the_devfailed_reason_in_the_panel(panel, running_suite):
    wait_until_idle(panel)
    outside = "/tmp/photonflow-outside-the-data-root/scan.h5"  # the form can't know the data root
    bad = json.dumps({"frames": 5, "exposure": 0.001, "period": 0.002, "file": outside})
    with pytest.raises(tango.DevFailed) as raised:
        tango.DeviceProxy(running_suite.controller).Configure(bad)
    expected = raised.value.args[0]

    panel.set_form(frames=5, exposure=0.001, period=0.002, file=outside)
    panel.configure_button.click()  # must not raise

    assert expected.reason == "FileOutsideDataRoot"
    assert expected.reason in panel.message(), labels_of(panel)
    assert expected.desc in panel.message(), labels_of(panel)
    assert panel.message().startswith("Configure failed"), labels_of(panel)


def test_the_run_table_button_opens_the_datamanagers_run_table(panel, running_suite, tmp_path):
    datamanager = running_suite.deployment.device("PhotonflowDataManager").name
    proxy = tango.DeviceProxy(running_suite.suite.device_url(datamanager))
    last_file = tango.DeviceProxy(running_suite.controller).LastFile
    assert last_file, "an earlier test ran a series"

    # The DataManager is found in the database (its Controller property names this Controller);
    # with no experiment set it catalogues into its "unassigned" catalogue: the series is there.
    panel.run_table_button.click()
    window = panel.run_table_window
    assert window is not None and window.isVisible(), labels_of(panel)
    assert str(window.catalogue.path) == proxy.CataloguePath
    assert window.windowTitle() == "Runs of unassigned"
    assert panel.message() == f"Run table of {proxy.CataloguePath} opened.", labels_of(panel)
    process_until(lambda: last_file in [row.get("raw_file") for row in window.model.rows], 30,
                  "the panel's series in the run table", lambda: f"rows {window.model.rows}")
    save_screenshot(window, "panel_run_table.png", tmp_path)

    proxy.SetExperiment(json.dumps({"proposal": "panel0001", "session": "20261127", "sample": "ceo2"}))
    panel.run_table_button.click()  # the experiment's own catalogue now, in place of the first window
    assert not window.isVisible()
    window = panel.run_table_window
    assert window.windowTitle() == "Runs of panel0001" and window.model.rows == []
    assert str(window.catalogue.path) == proxy.CataloguePath

    panel.datamanager_name = "demo/photonflow/nosuch"  # as given with --datamanager
    panel.run_table_button.click()
    assert panel.message().startswith("No run table: ") and "demo/photonflow/nosuch" in panel.message(), \
        labels_of(panel)
    assert "#b00020" in panel.message_label.styleSheet()
