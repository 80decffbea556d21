"""The beamline panel against the running suite's simulated beamline: live motor positions with
units, a move typed in the panel and stopped from it, the monochromator's energy, wavelength and
Bragg angle, the shutter closed and opened by its buttons, the ring current in the trend; a
screenshot to look at in var/screenshots/beamline_panel.png."""

from __future__ import annotations

import os

import numpy as np
import pytest

os.environ["QT_QPA_PLATFORM"] = "offscreen"  # before any Qt import: no display needed

import tango

from tests.helpers.panel import process_until, save_screenshot

pytestmark = pytest.mark.gui
PREFIX = "demo/beamline"
MOTORS = [f"{PREFIX}/{name}" for name in ("detz", "omega", "samx", "samy", "samz")]


@pytest.fixture
def panel(app, running_suite):
    from photonflow.clients.beamline_panel import BeamlinePanel

    widget = BeamlinePanel(PREFIX, tango_host=running_suite.tango_host)
    widget.show()
    yield widget
    widget.close()
    widget.deleteLater()
    app.processEvents()


def texts(panel) -> str:
    shown = {name: {key: w.text() for key, w in row.items() if hasattr(w, "text")}
             for name, row in panel.motor_rows.items()}
    shown["mono"] = {key: w.text() for key, w in panel.mono_widgets.items() if hasattr(w, "text")}
    shown["shutter"] = panel.shutter_widgets["state"].text()
    shown["ring"] = {key: w.text() for key, w in panel.ring_widgets.items()}
    return f"Panel shows {shown}; message {panel.message()!r}"


def number(text: str) -> float:
    return float(text.split()[0])


def test_the_beamline_panel_shows_live_values_and_drives_the_devices(panel, running_suite, tmp_path):
    assert sorted(panel.motor_rows) == MOTORS, "the motors found in the database under the prefix"

    # Live values with their units, as the devices read them.
    def positions_shown() -> bool:
        return all(row["position"].text() not in ("", "-----") for row in panel.motor_rows.values())

    process_until(positions_shown, 15, "every motor's position", lambda: texts(panel))
    detz = panel.motor_rows[f"{PREFIX}/detz"]
    assert detz["position"].text() == "120.0000 mm", texts(panel)
    assert panel.motor_rows[f"{PREFIX}/omega"]["position"].text() == "0.0000 deg", texts(panel)
    mono = tango.DeviceProxy(running_suite.suite.device_url(f"{PREFIX}/mono"))
    process_until(lambda: panel.mono_widgets["Energy"].text().endswith("keV")
                  and panel.mono_widgets["BraggAngle"].text().endswith("deg"), 15, "the monochromator", lambda: texts(panel))
    assert number(panel.mono_widgets["Energy"].text()) == pytest.approx(mono.Energy, abs=1e-5), texts(panel)
    assert number(panel.mono_widgets["Wavelength"].text()) == pytest.approx(mono.Wavelength, abs=1e-6)
    assert panel.mono_widgets["Wavelength"].text().endswith("Å")
    assert number(panel.mono_widgets["BraggAngle"].text()) == pytest.approx(mono.BraggAngle, abs=1e-5)
    ring = tango.DeviceProxy(running_suite.suite.device_url(f"{PREFIX}/ring"))
    process_until(lambda: panel.ring_widgets["Current"].text().endswith("mA"), 15, "the ring current",
                  lambda: texts(panel))
    assert number(panel.ring_widgets["Current"].text()) == pytest.approx(ring.Current, abs=0.05), texts(panel)
    assert 0 <= number(panel.ring_widgets["RefillCountdown"].text()) <= 120, texts(panel)

    # A move typed in the panel: the Target follows at once, the LED and position while it moves; Stop ends it.
    samx = tango.DeviceProxy(running_suite.suite.device_url(f"{PREFIX}/samx"))
    row = panel.motor_rows[f"{PREFIX}/samx"]
    row["move"].setText("8")
    row["move"].returnPressed.emit()
    assert panel.message() == f"{PREFIX}/samx/Position set to 8.", texts(panel)
    process_until(lambda: row["target"].text() == "8.0000 mm", 5, "the new target", lambda: texts(panel))
    process_until(lambda: 0 < number(row["position"].text()) < 8, 5, "samx moving", lambda: texts(panel))
    assert samx.state() == tango.DevState.MOVING
    row["stop"].click()
    assert panel.message() == f"{PREFIX}/samx: Stop done.", texts(panel)
    process_until(lambda: samx.state() == tango.DevState.ON, 5, "samx at rest")
    stopped_at = samx.Position
    assert 0 < stopped_at < 8
    process_until(lambda: row["position"].text() == f"{stopped_at:.4f} mm", 5, "the final position", lambda: texts(panel))

    # A move beyond the soft limits is refused with the device's reason in the panel.
    row["move"].setText("50")
    row["move"].returnPressed.emit()
    assert "samx/Position = 50 refused" in panel.message() and "#b00020" in panel.message_label.styleSheet(), \
        texts(panel)
    row["move"].setText("not a number")
    row["move"].returnPressed.emit()
    assert panel.message() == f"{PREFIX}/samx/Position: 'not a number' is not a number.", texts(panel)

    # The shutter from its buttons.
    shutter = tango.DeviceProxy(running_suite.suite.device_url(f"{PREFIX}/shutter"))
    process_until(lambda: panel.shutter_widgets["state"].text() == "OPEN", 10, "the shutter open", lambda: texts(panel))
    panel.shutter_widgets["close"].click()
    process_until(lambda: panel.shutter_widgets["state"].text() == "CLOSE", 10, "the shutter closed", lambda: texts(panel))
    assert shutter.state() == tango.DevState.CLOSE
    panel.shutter_widgets["open"].click()
    process_until(lambda: panel.shutter_widgets["state"].text() == "OPEN", 10, "the shutter open again",
                  lambda: texts(panel))
    assert panel.message() == f"{PREFIX}/shutter: Open done.", texts(panel)

    # The trend: readings of the current over time (a point per change event), the device's values.
    def trend_times() -> np.ndarray:
        x, _y = panel.trend_data()
        return np.unique(x) if x is not None else np.array([])

    process_until(lambda: len(trend_times()) >= 3 and np.ptp(trend_times()) > 1.0, 15,
                  "the ring current trend over more than a second", lambda: f"times {trend_times()}")
    times, currents = panel.trend_data()
    # In time order; Taurus's first point (its read at subscription) may carry a time a few ms
    # after the first change event's (seen: 2.7 ms): a jitter, not a point out of place.
    assert np.all(np.diff(times) > -0.05), times
    assert np.all(np.abs(np.asarray(currents) - ring.Current) < 1.0), (currents, ring.Current)
    assert 150 < float(np.mean(currents)) <= 200.5, currents

    save_screenshot(panel, "beamline_panel.png", tmp_path)
