"""``photonflow-beamline``: the Taurus panel of the (simulated) beamline around the detector.

Motors (Position with its unit, Target, a state LED, a move field and Stop), the monochromator
(Energy, Wavelength, Bragg angle; a move field for the energy), the shutter (state, Open/Close)
and the storage ring (current with a trend, refill countdown). The devices are found in the
Tango database under a prefix, by class (SimulatedMotor, SimulatedMonochromator,
SimulatedShutter, SimulatedStorageRing); like every client the panel talks to them through Tango
only:

    photonflow-beamline [--prefix demo/beamline]
"""

from __future__ import annotations

import argparse
import html
import sys
import time

import tango
from taurus.external.qt import Qt, QtCore, QtWidgets
from taurus.qt.qtgui.display import TaurusLabel, TaurusLed
from taurus_pyqtgraph import TaurusTrend

from photonflow.clients.panel import (
    COMMAND_TIMEOUT_S,
    MessageLine,
    PanelCommandButton,
    describe_error,
    device_model,
)

DEFAULT_PREFIX = "demo/beamline"
BEAMLINE_CLASSES = ("SimulatedMotor", "SimulatedMonochromator", "SimulatedShutter", "SimulatedStorageRing")
TREND_WINDOW_S = 180  # the trend shows the last three minutes (a top-up period and more), clock times
TREND_POINTS = 4 * 3600  # the ring pushes Current at most twice a second: at least two hours


def find_beamline_devices(prefix: str, database: tango.Database | None = None) -> dict[str, list[str]]:
    """Device names under ``prefix`` by class, in the database's order (sorted by name)."""
    database = database or tango.Database()
    found: dict[str, list[str]] = {name: [] for name in BEAMLINE_CLASSES}
    pattern = f"{prefix.strip('/')}/*"
    for name in sorted(database.get_device_exported(pattern).value_string):
        tango_class = database.get_class_for_device(name)
        if tango_class in found:
            found[tango_class].append(name)
    return found


def _value_label(model: str, width: int = 130) -> TaurusLabel:
    label = TaurusLabel()
    label.setModel(model)
    label.setBgRole("none")
    label.setAlignment(Qt.Qt.AlignRight | Qt.Qt.AlignVCenter)
    label.setMinimumWidth(width)
    label.setTextInteractionFlags(Qt.Qt.TextSelectableByMouse)
    return label


def _state_label(model: str) -> TaurusLabel:
    label = TaurusLabel()
    label.setModel(model)
    label.setBgRole("rvalue")  # the Tango state colours
    label.setAlignment(Qt.Qt.AlignCenter)
    label.setMinimumWidth(90)
    return label


def _led(model: str) -> TaurusLed:
    led = TaurusLed()
    led.setModel(model)
    led.setFixedSize(22, 22)
    return led


class BeamlinePanel(QtWidgets.QWidget):
    """Motors, monochromator, shutter and storage ring of one beamline prefix."""

    def __init__(self, prefix: str = DEFAULT_PREFIX, parent=None, devices: dict[str, list[str]] | None = None,
                 tango_host: str = ""):
        """``tango_host``: the beamline's database (host:port) when it is not this process's TANGO_HOST."""
        super().__init__(parent)
        self.prefix = prefix.strip("/")
        self.tango_host = tango_host
        self.setWindowTitle(f"photonflow - beamline {self.prefix}")
        if devices is None:
            host, _, port = tango_host.rpartition(":")
            devices = find_beamline_devices(self.prefix, tango.Database(host, int(port)) if tango_host else None)
        self.devices = devices
        self.motor_rows: dict[str, dict[str, QtWidgets.QWidget]] = {}
        self.mono_widgets: dict[str, QtWidgets.QWidget] = {}
        self.shutter_widgets: dict[str, QtWidgets.QWidget] = {}
        self.ring_widgets: dict[str, QtWidgets.QWidget] = {}
        self.trend: TaurusTrend | None = None

        title = QtWidgets.QLabel(f"<b>Beamline</b> {html.escape(self.prefix)}")
        self.message_label = MessageLine(lines=2)

        left = QtWidgets.QVBoxLayout()
        left.addWidget(self._build_motors())
        left.addWidget(self._build_monochromator())
        left.addWidget(self._build_shutter())
        left.addStretch(1)
        columns = QtWidgets.QHBoxLayout()
        columns.addLayout(left, 0)
        columns.addWidget(self._build_ring(), 1)
        layout = QtWidgets.QVBoxLayout(self)
        layout.addWidget(title)
        layout.addLayout(columns, 1)
        layout.addWidget(self.message_label)
        hint = self.sizeHint()
        self.resize(max(1280, hint.width()), max(720, hint.height()))

    # -- building -------------------------------------------------------------------------
    def _missing(self, box: QtWidgets.QGroupBox, what: str) -> QtWidgets.QGroupBox:
        QtWidgets.QVBoxLayout(box).addWidget(QtWidgets.QLabel(f"No {what} under {self.prefix} in the database."))
        return box

    def _single_device_box(self, title: str, tango_class: str) -> tuple[QtWidgets.QGroupBox, str | None]:
        """A section showing the first device of ``tango_class``, titled with its name; without
        one, the section says so and the name is None."""
        box = QtWidgets.QGroupBox(title)
        names = self.devices.get(tango_class, [])
        if not names:
            return self._missing(box, tango_class), None
        box.setTitle(f"{title} {names[0]}")
        return box, names[0]

    def _command_button(self, device: str, command: str) -> PanelCommandButton:
        button = PanelCommandButton(command=command, text=command, timeout=COMMAND_TIMEOUT_S)
        button.setModel(device_model(device, self.tango_host))
        button.commandExecuted.connect(
            lambda _result, d=device, c=command: self.show_message(f"{d}: {c} done.", error=False))
        button.commandFailed.connect(lambda c, text, d=device: self.show_message(f"{d}: {c} failed: {text}", True))
        return button

    def _move_edit(self, device: str, attribute: str, unit_hint: str) -> QtWidgets.QLineEdit:
        edit = QtWidgets.QLineEdit()
        edit.setPlaceholderText(unit_hint)
        edit.setAlignment(Qt.Qt.AlignRight | Qt.Qt.AlignVCenter)
        edit.setMinimumWidth(120)
        edit.setToolTip(f"Type a value and press Enter: writes {device}/{attribute}")
        edit.returnPressed.connect(lambda: self.write(device, attribute, edit.text()))
        return edit

    def _build_motors(self) -> QtWidgets.QWidget:
        box = QtWidgets.QGroupBox("Motors")
        motors = self.devices.get("SimulatedMotor", [])
        if not motors:
            return self._missing(box, "SimulatedMotor")
        grid = QtWidgets.QGridLayout(box)
        for column, text in enumerate(("", "Motor", "Position", "Target", "Move to", "")):
            header = QtWidgets.QLabel(f"<b>{text}</b>")
            grid.addWidget(header, 0, column, alignment=Qt.Qt.AlignCenter if column > 1 else Qt.Qt.AlignLeft)
        for row, name in enumerate(motors, start=1):
            model = device_model(name, self.tango_host)
            unit = _property(name, "Unit", self.tango_host)
            widgets = {
                "led": _led(f"{model}/State"),
                "name": QtWidgets.QLabel(name.rsplit("/", 1)[-1]),
                "position": _value_label(f"{model}/Position"),
                "target": _value_label(f"{model}/Target"),
                "move": self._move_edit(name, "Position", unit),
                "stop": self._command_button(name, "Stop"),
            }
            widgets["name"].setToolTip(name)
            for column, widget in enumerate(widgets.values()):
                grid.addWidget(widget, row, column)
            self.motor_rows[name] = widgets
        return box

    def _build_monochromator(self) -> QtWidgets.QWidget:
        box, name = self._single_device_box("Monochromator", "SimulatedMonochromator")
        if name is None:
            return box
        model = device_model(name, self.tango_host)
        grid = QtWidgets.QGridLayout(box)
        self.mono_widgets = {
            "led": _led(f"{model}/State"),
            "Energy": _value_label(f"{model}/Energy"),
            "Wavelength": _value_label(f"{model}/Wavelength"),
            "BraggAngle": _value_label(f"{model}/BraggAngle"),
            "move": self._move_edit(name, "Energy", "keV"),
            "stop": self._command_button(name, "Stop"),
        }
        grid.addWidget(self.mono_widgets["led"], 1, 0)
        for column, text in enumerate(("Energy", "Wavelength", "Bragg angle"), start=1):
            grid.addWidget(QtWidgets.QLabel(f"<b>{text}</b>"), 0, column, alignment=Qt.Qt.AlignCenter)
        grid.addWidget(QtWidgets.QLabel("<b>Energy to</b>"), 0, 4, alignment=Qt.Qt.AlignCenter)
        for column, key in enumerate(("Energy", "Wavelength", "BraggAngle", "move", "stop"), start=1):
            grid.addWidget(self.mono_widgets[key], 1, column)
        return box

    def _build_shutter(self) -> QtWidgets.QWidget:
        box, name = self._single_device_box("Shutter", "SimulatedShutter")
        if name is None:
            return box
        model = device_model(name, self.tango_host)
        layout = QtWidgets.QGridLayout(box)
        status = TaurusLabel()
        status.setModel(f"{model}/Status")
        status.setBgRole("none")
        status.setWordWrap(True)
        status.setAutoTrim(False)
        status.setAlignment(Qt.Qt.AlignLeft | Qt.Qt.AlignVCenter)
        status.setMinimumHeight(2 * status.fontMetrics().lineSpacing() + 8)
        self.shutter_widgets = {
            "state": _state_label(f"{model}/State"),
            "open": self._command_button(name, "Open"),
            "close": self._command_button(name, "Close"),
            "status": status,
        }
        layout.addWidget(self.shutter_widgets["state"], 0, 0)
        layout.addWidget(self.shutter_widgets["open"], 0, 1)
        layout.addWidget(self.shutter_widgets["close"], 0, 2)
        layout.addWidget(status, 1, 0, 1, 3)
        layout.setColumnStretch(0, 1)
        return box

    def _build_ring(self) -> QtWidgets.QWidget:
        box, name = self._single_device_box("Storage ring", "SimulatedStorageRing")
        if name is None:
            return box
        model = device_model(name, self.tango_host)
        layout = QtWidgets.QVBoxLayout(box)
        values = QtWidgets.QFormLayout()
        self.ring_widgets = {
            "state": _state_label(f"{model}/State"),
            "Current": _value_label(f"{model}/Current"),
            "RefillCountdown": _value_label(f"{model}/RefillCountdown"),
        }
        values.addRow("State", self.ring_widgets["state"])
        values.addRow("Current", self.ring_widgets["Current"])
        values.addRow("Next top-up in", self.ring_widgets["RefillCountdown"])
        layout.addLayout(values)
        self.trend = TaurusTrend()
        self.trend.setBackground("w")
        self.trend.setMinimumSize(420, 300)
        plot = self.trend.getPlotItem()
        plot.setLabel("left", "Current", units="mA")
        for axis in ("left", "bottom"):
            plot.getAxis(axis).setTextPen("k")
            plot.getAxis(axis).setPen("k")
        self.trend.setMaxDataBufferSize(TREND_POINTS)
        self.trend.setModel([f"{model}/Current"])  # a point per change event of the current
        if plot.legend is not None:  # one curve, named by the axis label: no legend over the data
            plot.legend.hide()
        self._pan_trend()
        self._trend_timer = QtCore.QTimer(self)
        self._trend_timer.timeout.connect(self._pan_trend)
        self._trend_timer.start(1000)
        layout.addWidget(self.trend, 1)
        return box

    def _pan_trend(self) -> None:
        """Keep the last TREND_WINDOW_S on the time axis (its ticks are then clock times)."""
        now = time.time()
        self.trend.getPlotItem().setXRange(now - TREND_WINDOW_S, now + 5, padding=0)

    # -- actions --------------------------------------------------------------------------
    def write(self, device: str, attribute: str, text: str) -> bool:
        """Write a number typed by the operator; a refusal (soft limit, range) is shown, not raised."""
        try:
            value = float(text)
        except ValueError:
            self.show_message(f"{device}/{attribute}: {text!r} is not a number.", error=True)
            return False
        try:
            proxy = tango.DeviceProxy(device_model(device, self.tango_host))
            proxy.set_timeout_millis(int(COMMAND_TIMEOUT_S * 1000))
            proxy.write_attribute(attribute, value)
        except tango.DevFailed as error:
            self.show_message(f"{device}/{attribute} = {value:g} refused: {describe_error(error)}", error=True)
            return False
        self.show_message(f"{device}/{attribute} set to {value:g}.", error=False)
        return True

    def trend_data(self):
        """(times, currents) the trend holds."""
        trend_set = self.trend.getTrendSets()[0]
        return trend_set[0].getData()

    def show_message(self, text: str, error: bool) -> None:
        self.message_label.show_outcome(text, error)

    def message(self) -> str:
        return self.message_label.text()


def _property(device: str, name: str, tango_host: str = "") -> str:
    try:
        values = tango.DeviceProxy(device_model(device, tango_host)).get_property([name])[name]
    except tango.DevFailed:
        return ""
    return values[0] if values else ""


def main(argv: list[str] | None = None) -> int:
    """Open the beamline panel (TANGO_HOST says which database) and run the Qt loop."""
    parser = argparse.ArgumentParser(prog="photonflow-beamline", description=__doc__.splitlines()[0])
    parser.add_argument("--prefix", default="",
                        help=f"the beamline devices' domain/family (default: the deployment's motors', else "
                             f"{DEFAULT_PREFIX})")
    parser.add_argument("--config", default="",
                        help="the deployment make up was given (make beamline-panel passes it)")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    from photonflow.clients.launcher import panel_deployment

    deployment = panel_deployment(args.config)  # and TANGO_HOST: the running suite's, when not set
    if not args.prefix:
        motors = [d.name for s in deployment.servers for d in s.devices
                  if d.tango_class == "SimulatedMotor"] if deployment else []
        args.prefix = motors[0].rsplit("/", 1)[0] if motors else DEFAULT_PREFIX

    from taurus.qt.qtgui.application import TaurusApplication

    app = TaurusApplication(sys.argv[:1], cmd_line_parser=None, app_name="photonflow-beamline")
    panel = BeamlinePanel(args.prefix)
    from photonflow.clients.qt_exit import run_until_closed

    return run_until_closed(app, panel, ready=f"photonflow-beamline: showing {args.prefix}")


if __name__ == "__main__":
    sys.exit(main())
