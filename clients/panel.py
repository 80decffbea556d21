"""``photonflow-panel``: a minimal Taurus operator panel for the Controller device.

It shows the Controller's combined State and Status, its counters, and lets the operator
Configure, Start, Stop and Abort a series. Like every client it talks to the devices through
Tango only (Taurus models and DeviceProxy), never to photonflow internals, so it works
against any running deployment:

    photonflow-panel [CONTROLLER]        (default demo/photonflow/controller)
"""

from __future__ import annotations

import argparse
import html
import os
import sys

import tango
import taurus
from taurus.external.qt import Qt, QtWidgets
from taurus.qt.qtgui.button import TaurusCommandButton
from taurus.qt.qtgui.display import TaurusLabel, TaurusLed

DEFAULT_CONTROLLER = "demo/photonflow/controller"
DEFAULT_CONFIGURATION = '{"frames": 100, "exposure": 0.001, "period": 0.002}'
COMMAND_TIMEOUT_S = 10.0  # Start arms the Recorder and configures the Acquirer before it returns

# (attribute, label shown to the operator), in the order a series fills them
COUNTERS = (
    ("FramesRequested", "Frames requested"),
    ("FramesAcquired", "Frames acquired"),
    ("FramesReceived", "Frames received"),
    ("FramesWritten", "Frames written"),
    ("MissingFrames", "Missing frames"),
    ("Progress", "Progress"),
    ("SeriesId", "Series id"),
    ("LastFile", "Last file"),
)


def device_model(device_name: str) -> str:
    """The Taurus model of a device, pinned to the TANGO_HOST in use when the panel is built.

    Pinning the database in the URI keeps the panel on the database it was started for,
    whatever Taurus' default authority is; a full ``tango://`` name is used as given.
    """
    if "://" in device_name:
        return device_name
    tango_host = os.environ.get("TANGO_HOST", "")
    if tango_host and "," not in tango_host:  # several database hosts: let Taurus resolve them
        return f"tango://{tango_host}/{device_name}"
    return device_name


def describe_error(error: Exception) -> str:
    """One line an operator can act on: the DevFailed reason and description, not a traceback."""
    if isinstance(error, tango.DevFailed) and error.args:
        first = error.args[0]
        return f"{first.reason}: {first.desc}"
    return f"{type(error).__name__}: {error}"


def _lines_high(label: QtWidgets.QLabel, lines: int) -> int:
    """Height for ``lines`` of wrapped text: a top-level window does not grow when a label
    wraps, so the room is reserved up front instead of the text being clipped."""
    return lines * label.fontMetrics().lineSpacing() + 8


class PanelCommandButton(TaurusCommandButton):
    """A TaurusCommandButton that reports a failed command in the panel.

    The stock button opens a modal message box on error; on a beamline the operator should
    see the reason next to the buttons (and a test must not hang on a dialog).
    """

    commandFailed = Qt.pyqtSignal(str, str)  # command, description of the error

    def onClicked(self, value=0):
        try:
            return self._onClicked()
        except Exception as error:  # DevFailed above all; never let a click crash the panel
            self.commandFailed.emit(self.getCommand(), describe_error(error))
            return None


class ControllerPanel(QtWidgets.QWidget):
    """State, Status, counters and commands of one Controller device.

    Building the widget needs no running event loop, so tests can drive it with
    ``processEvents`` and inspect the labels.
    """

    def __init__(self, controller_name: str = DEFAULT_CONTROLLER, parent=None):
        super().__init__(parent)
        self.controller_name = controller_name
        self.model = device_model(controller_name)
        self.setWindowTitle(f"photonflow - {controller_name}")

        layout = QtWidgets.QVBoxLayout(self)
        layout.addLayout(self._build_header())
        layout.addWidget(self._build_status())
        layout.addWidget(self._build_counters())
        layout.addWidget(self._build_commands())
        layout.addStretch(1)
        hint = self.sizeHint()
        self.resize(max(720, hint.width()), hint.height())

    # -- building -------------------------------------------------------------------------
    def _attribute(self, name: str) -> str:
        return f"{self.model}/{name}"

    def _build_header(self) -> QtWidgets.QLayout:
        header = QtWidgets.QHBoxLayout()
        title = QtWidgets.QLabel(f"<b>Controller</b> {html.escape(self.controller_name)}")
        title.setTextInteractionFlags(Qt.Qt.TextSelectableByMouse)
        self.state_led = TaurusLed()
        self.state_led.setModel(self._attribute("State"))
        self.state_led.setFixedSize(24, 24)
        self.state_label = TaurusLabel()
        self.state_label.setBgRole("rvalue")  # the Tango state colours: green ON, red FAULT...
        self.state_label.setModel(self._attribute("State"))
        self.state_label.setMinimumWidth(110)
        self.state_label.setAlignment(Qt.Qt.AlignCenter)
        header.addWidget(title, 1)
        header.addWidget(self.state_led)
        header.addWidget(self.state_label)
        return header

    def _build_status(self) -> QtWidgets.QWidget:
        box = QtWidgets.QGroupBox("Status")
        box_layout = QtWidgets.QVBoxLayout(box)
        self.status_label = TaurusLabel()
        self.status_label.setBgRole("none")
        self.status_label.setModel(self._attribute("Status"))
        self.status_label.setWordWrap(True)
        self.status_label.setAutoTrim(False)  # wrap the whole status instead of a "..." link
        self.status_label.setAlignment(Qt.Qt.AlignLeft | Qt.Qt.AlignTop)
        self.status_label.setMinimumHeight(_lines_high(self.status_label, 3))  # a series report, a path
        self.status_label.setTextInteractionFlags(Qt.Qt.TextSelectableByMouse)
        box_layout.addWidget(self.status_label)
        return box

    def _build_counters(self) -> QtWidgets.QWidget:
        box = QtWidgets.QGroupBox("Series")
        form = QtWidgets.QFormLayout(box)
        form.setFieldGrowthPolicy(QtWidgets.QFormLayout.AllNonFixedFieldsGrow)
        self.counter_labels: dict[str, TaurusLabel] = {}
        for attribute_name, text in COUNTERS:
            label = TaurusLabel()
            label.setModel(self._attribute(attribute_name))
            label.setAlignment(Qt.Qt.AlignRight | Qt.Qt.AlignVCenter)
            label.setTextInteractionFlags(Qt.Qt.TextSelectableByMouse)
            if attribute_name == "LastFile":
                # paths are long: left-aligned, wrapped at "/", two lines kept free for them
                label.setAlignment(Qt.Qt.AlignLeft | Qt.Qt.AlignVCenter)
                label.setWordWrap(True)
                label.setAutoTrim(False)
                label.setMinimumHeight(_lines_high(label, 2))
            self.counter_labels[attribute_name] = label
            form.addRow(text, label)
        return box

    def _build_commands(self) -> QtWidgets.QWidget:
        box = QtWidgets.QGroupBox("Acquisition")
        grid = QtWidgets.QGridLayout(box)

        self.configuration_edit = QtWidgets.QLineEdit(DEFAULT_CONFIGURATION)
        self.configuration_edit.setToolTip(
            'Configure JSON: "frames", "exposure" (s), "period" (s); optional "file", "trigger_mode"'
        )
        metrics = self.configuration_edit.fontMetrics()
        self.configuration_edit.setMinimumWidth(metrics.horizontalAdvance(DEFAULT_CONFIGURATION) + 24)
        self.configuration_edit.returnPressed.connect(self.configure)
        self.configure_button = QtWidgets.QPushButton("Configure")
        self.configure_button.clicked.connect(self.configure)
        grid.addWidget(QtWidgets.QLabel("Configuration (JSON)"), 0, 0, 1, 3)
        grid.addWidget(self.configuration_edit, 1, 0, 1, 2)
        grid.addWidget(self.configure_button, 1, 2)

        self.command_buttons: dict[str, PanelCommandButton] = {}
        for column, command in enumerate(("Start", "Stop", "Abort")):
            button = PanelCommandButton(command=command, text=command, timeout=COMMAND_TIMEOUT_S)
            button.setModel(self.model)
            button.commandExecuted.connect(lambda _result, c=command: self.show_message(f"{c} done.", error=False))
            button.commandFailed.connect(self._command_failed)
            self.command_buttons[command] = button
            grid.addWidget(button, 2, column)

        self.message_label = QtWidgets.QLabel("")
        self.message_label.setWordWrap(True)
        self.message_label.setTextInteractionFlags(Qt.Qt.TextSelectableByMouse)
        self.message_label.setMinimumHeight(_lines_high(self.message_label, 2))
        self.message_label.setAlignment(Qt.Qt.AlignLeft | Qt.Qt.AlignTop)
        grid.addWidget(self.message_label, 3, 0, 1, 3)
        for column in range(3):
            grid.setColumnStretch(column, 1)
        return box

    # -- actions --------------------------------------------------------------------------
    def configure(self) -> bool:
        """Send the JSON to Configure; an operator error is shown in the panel, not raised."""
        text = self.configuration_edit.text()
        try:
            device = taurus.Device(self.model)  # shared with the Taurus widgets: restore its timeout
            previous_timeout = device.get_timeout_millis()
            device.set_timeout_millis(int(COMMAND_TIMEOUT_S * 1000))
            try:
                device.command_inout("Configure", text)
            finally:
                device.set_timeout_millis(previous_timeout)
        except Exception as error:  # DevFailed from the device, or no device at all
            self.show_message(f"Configure failed: {describe_error(error)}", error=True)
            return False
        self.show_message(f"Configured: {text}", error=False)
        return True

    def _command_failed(self, command: str, description: str) -> None:
        self.show_message(f"{command} failed: {description}", error=True)

    def show_message(self, text: str, error: bool) -> None:
        """The last command's outcome, in red when the operator has something to fix."""
        colour = "#b00020" if error else "#1b5e20"
        self.message_label.setStyleSheet(f"color: {colour};")
        self.message_label.setText(text)

    def message(self) -> str:
        """The text of the last command's outcome (what the operator reads)."""
        return self.message_label.text()


def main(argv: list[str] | None = None) -> int:
    """Open the panel on a Controller (TANGO_HOST says which database) and run the Qt loop."""
    parser = argparse.ArgumentParser(
        prog="photonflow-panel", description="Taurus operator panel for a photonflow Controller."
    )
    parser.add_argument("controller", nargs="?", default=DEFAULT_CONTROLLER,
                        help=f"Tango name of the Controller device (default {DEFAULT_CONTROLLER})")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)

    from taurus.qt.qtgui.application import TaurusApplication

    app = TaurusApplication(sys.argv[:1], cmd_line_parser=None, app_name="photonflow-panel")
    panel = ControllerPanel(args.controller)
    panel.show()
    return app.exec_()


if __name__ == "__main__":
    sys.exit(main())
