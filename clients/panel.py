"""``photonflow-panel``: the Taurus operator panel for the Controller device.

It shows the Controller's combined State and Status, its counters and the last file, a form
(frames, exposure, period, file) checked before it is sent to Configure, Start/Stop/Abort, the
Recorder's live preview image (the Recorder named by the Controller's ``Recorder`` property),
and a button opening the DataManager's run table. Like every client it talks to the devices
through Tango only (Taurus models and DeviceProxy), never to photonflow internals, so it works
against any running deployment:

    photonflow-panel [CONTROLLER] [--datamanager NAME]   (default demo/photonflow/controller;
                                                           the DataManager is looked up in the
                                                           database when not given)
"""

from __future__ import annotations

import argparse
import html
import json
import math
import os
import sys
from dataclasses import dataclass

import numpy as np
import pyqtgraph as pg
import tango
import taurus
from taurus.external.qt import Qt, QtWidgets
from taurus.qt.qtgui.button import TaurusCommandButton
from taurus.qt.qtgui.display import TaurusLabel, TaurusLed
from taurus_pyqtgraph import TaurusImageItem

DEFAULT_CONTROLLER = "demo/photonflow/controller"
DEFAULT_FORM = {"frames": "100", "exposure": "0.001", "period": "0.002", "file": ""}
DATA_FILE_SUFFIXES = (".h5", ".hdf5", ".nxs")  # what the Recorder writes
DATAMANAGER_CLASS = "PhotonflowDataManager"
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

# the Configure form: (key, label, unit shown beside the field, tooltip)
FORM_FIELDS = (
    ("frames", "Frames", "frames", "Number of frames in the series (a whole number, at least 1)"),
    ("exposure", "Exposure", "s", "Exposure time of each frame, in seconds"),
    ("period", "Period", "s", "Time from one frame's start to the next, in seconds; at least the exposure"),
    ("file", "File", "", "Optional: file name under the data root, e.g. sample1/scan_001.h5 "
                         "(empty: the Recorder's template)"),
)


class FormError(ValueError):
    """A form field the operator must correct; ``field`` names it."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field


def configuration_from_form(values: dict[str, str]) -> dict:
    """The Configure request for the form's texts, or FormError naming the field to correct.

    Only what the panel can know is checked here (numbers, ranges, the file's shape); the
    Controller still checks the detector's limits and the file against its data root.
    """
    text = values.get("frames", "").strip()
    try:
        frames = int(text)
    except ValueError:
        raise FormError("frames", f"Frames must be a whole number, got {text!r}.") from None
    if frames < 1:
        raise FormError("frames", f"Frames must be at least 1, got {frames}.")
    seconds = {}
    for key, label in (("exposure", "Exposure"), ("period", "Period")):
        text = values.get(key, "").strip()
        try:
            number = float(text)
        except ValueError:
            raise FormError(key, f"{label} must be a number of seconds, got {text!r}.") from None
        if not math.isfinite(number) or number <= 0:
            raise FormError(key, f"{label} must be a positive number of seconds, got {text}.")
        seconds[key] = number
    if seconds["period"] < seconds["exposure"]:
        raise FormError("period", f"Period ({seconds['period']:g} s) is shorter than the exposure "
                                  f"({seconds['exposure']:g} s): the period must be at least the exposure.")
    configuration: dict = {"frames": frames, **seconds}
    file = values.get("file", "").strip()
    if file:
        if not file.lower().endswith(DATA_FILE_SUFFIXES):
            raise FormError("file", f"File {file!r} must end in {', '.join(DATA_FILE_SUFFIXES)}.")
        if file.endswith(("/", os.sep)) or ".." in file.replace("\\", "/").split("/"):
            raise FormError("file", f"File {file!r}: give a file name under the data root, without '..'.")
        configuration["file"] = file
    return configuration


def device_model(device_name: str, tango_host: str = "") -> str:
    """The Taurus model of a device, pinned to ``tango_host`` (by default the TANGO_HOST in use
    when the panel is built).

    Pinning the database in the URI keeps the panel on the database it was started for,
    whatever Taurus' default authority is; a full ``tango://`` name is used as given.
    """
    if "://" in device_name:
        return device_name
    tango_host = tango_host or os.environ.get("TANGO_HOST", "")
    if tango_host and "," not in tango_host:  # several database hosts: let Taurus resolve them
        return f"tango://{tango_host}/{device_name}"
    return device_name


def tango_host_of(model: str) -> str:
    """The database a full name ``tango://host:port/domain/family/member`` names ("" for a short name)."""
    return model.split("://", 1)[1].split("/", 1)[0] if "://" in model else ""


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


class MessageLine(QtWidgets.QLabel):
    """The outcome of the operator's last action, selectable, in red when there is something to fix;
    ``lines`` of room are kept so a long reason is not clipped."""

    def __init__(self, lines: int):
        super().__init__("")
        self.setWordWrap(True)
        self.setTextInteractionFlags(Qt.Qt.TextSelectableByMouse)
        self.setMinimumHeight(_lines_high(self, lines))
        self.setAlignment(Qt.Qt.AlignLeft | Qt.Qt.AlignTop)

    def show_outcome(self, text: str, error: bool) -> None:
        self.setStyleSheet(f"color: {'#b00020' if error else '#1b5e20'};")
        self.setText(text)


class PanelCommandButton(TaurusCommandButton):
    """A TaurusCommandButton that reports a failed command in the panel.

    The stock button opens a modal message box on error; on a beamline the operator should
    see the reason next to the buttons (and a test must not hang on a dialog).
    """

    commandFailed = Qt.pyqtSignal(str, str)  # command, description of the error

    def onClicked(self, value=0):
        try:
            return self._onClicked()
        except Exception as error:  # noqa: BLE001 - DevFailed above all; never let a click crash the panel
            self.commandFailed.emit(self.getCommand(), describe_error(error))
            return None


def lookup_recorder(controller_model: str) -> str:
    """The Recorder the Controller drives: its ``Recorder`` property in the database ("" if unset)."""
    values = tango.DeviceProxy(controller_model).get_property(["Recorder"])["Recorder"]
    return values[0].strip() if values else ""


def lookup_datamanager(controller_model: str) -> str:
    """The DataManager following this Controller: a device of class PhotonflowDataManager in the
    Controller's database whose ``Controller`` property names it ("" if there is none)."""
    proxy = tango.DeviceProxy(controller_model)
    database = proxy.get_device_db()
    controller = proxy.name().lower()
    candidates = database.get_device_exported_for_class(DATAMANAGER_CLASS).value_string
    for name in candidates:
        followed = database.get_device_property(name, ["Controller"])["Controller"]
        if followed and followed[0].strip().lower() == controller:
            return name
    return ""


def ring_profile(image: np.ndarray, centre: tuple[float, float] | None = None) -> np.ndarray:
    """Mean intensity per one-pixel-wide ring around ``centre`` (row, column; default: the image's
    intensity-weighted centre): the radial profile, whose peaks are the diffraction rings."""
    image = np.asarray(image, dtype=np.float64)
    rows, columns = np.indices(image.shape)
    if centre is None:
        total = image.sum()
        centre = ((rows * image).sum() / total, (columns * image).sum() / total)
    radius = np.hypot(rows - centre[0], columns - centre[1]).astype(np.int64)
    sums = np.bincount(radius.ravel(), image.ravel())
    counts = np.bincount(radius.ravel())
    return sums / np.maximum(counts, 1)


class PreviewImageItem(TaurusImageItem):
    """A TaurusImageItem whose colour levels follow each new image from its percentiles, so the
    rings stay visible whatever the beam intensity (min-max levels are set by a few hot pixels).

    The Recorder's empty preview ((0, 0) before the first frame) leaves the last image shown."""

    def __init__(self, on_image=None):
        super().__init__(axisOrder="row-major")
        self.on_image = on_image

    def handleEvent(self, evt_src, evt_type, evt_val):
        value = getattr(evt_val, "rvalue", None)
        if value is None:
            return
        data = np.asarray(getattr(value, "magnitude", value), dtype=np.float32)
        if data.ndim != 2 or data.size == 0:
            return
        low, high = (float(level) for level in np.percentile(data, (1.0, 99.7)))
        levels = (low, max(high, low + 1e-6))
        self.setImage(data, levels=levels)
        if self.on_image is not None:
            self.on_image(data, levels)


class PreviewImage(QtWidgets.QWidget):
    """The Recorder's ``Preview`` (a binned live frame, pushed as change events) in a pyqtgraph view,
    with a histogram beside it to change the contrast."""

    def __init__(self, recorder_model: str, parent=None):
        super().__init__(parent)
        self.graphics = pg.GraphicsLayoutWidget()
        self.graphics.setBackground("w")
        self.view = self.graphics.addViewBox(lockAspect=True, invertY=True, enableMenu=False)
        self.item = PreviewImageItem(on_image=self._image_shown)
        self.view.addItem(self.item)
        self.histogram = pg.HistogramLUTItem(image=self.item)
        self.histogram.gradient.loadPreset("viridis")
        self.histogram.axis.setTextPen("k")
        self.graphics.addItem(self.histogram)
        self.images_shown = 0
        layout = QtWidgets.QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.graphics, 1)
        self.item.setModel(f"{recorder_model}/Preview")

    def _image_shown(self, data: np.ndarray, levels: tuple[float, float]) -> None:
        self.histogram.setLevels(*levels)
        self.images_shown += 1

    def data(self) -> np.ndarray | None:
        """The image shown (rows, columns), None before the first preview."""
        return self.item.image


@dataclass
class _Field:
    edit: QtWidgets.QLineEdit
    label: QtWidgets.QLabel


class ControllerPanel(QtWidgets.QWidget):
    """State, Status, counters, the Configure form, commands and the live image of one Controller.

    Building the widget needs no running event loop, so tests can drive it with
    ``processEvents`` and inspect the labels.
    """

    def __init__(self, controller_name: str = DEFAULT_CONTROLLER, parent=None, datamanager: str = ""):
        super().__init__(parent)
        self.controller_name = controller_name
        self.model = device_model(controller_name)
        self.tango_host = tango_host_of(self.model)  # its peers are on the Controller's database
        self.datamanager_name = datamanager
        self.run_table_window = None
        self.setWindowTitle(f"photonflow - {controller_name}")

        controls = QtWidgets.QWidget()
        controls.setMinimumWidth(560)  # room for a data file's path on three lines
        left = QtWidgets.QVBoxLayout(controls)
        left.setContentsMargins(0, 0, 0, 0)
        left.addLayout(self._build_header())
        left.addWidget(self._build_status())
        left.addWidget(self._build_counters())
        left.addWidget(self._build_commands())
        left.addStretch(1)
        layout = QtWidgets.QHBoxLayout(self)
        layout.addWidget(controls, 0)
        layout.addWidget(self._build_image(), 1)
        hint = self.sizeHint()
        self.resize(max(1280, hint.width()), max(760, hint.height()))

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
                # paths are long: left-aligned, wrapped at "/", three lines kept free for them
                label.setAlignment(Qt.Qt.AlignLeft | Qt.Qt.AlignVCenter)
                label.setWordWrap(True)
                label.setAutoTrim(False)
                label.setMinimumHeight(_lines_high(label, 3))
            self.counter_labels[attribute_name] = label
            form.addRow(text, label)
        return box

    def _build_commands(self) -> QtWidgets.QWidget:
        box = QtWidgets.QGroupBox("Acquisition")
        grid = QtWidgets.QGridLayout(box)

        self.form_fields: dict[str, _Field] = {}
        for row, (key, text, unit, tooltip) in enumerate(FORM_FIELDS):
            label = QtWidgets.QLabel(text)
            edit = QtWidgets.QLineEdit(DEFAULT_FORM[key])
            edit.setToolTip(tooltip)
            edit.setObjectName(f"form_{key}")
            label.setBuddy(edit)
            if key == "file":
                edit.setPlaceholderText("empty: the Recorder's template")
            else:
                edit.setAlignment(Qt.Qt.AlignRight | Qt.Qt.AlignVCenter)
            edit.returnPressed.connect(self.configure)
            edit.textEdited.connect(lambda _text, k=key: self._mark_field(k, ok=True))
            grid.addWidget(label, row, 0)
            grid.addWidget(edit, row, 1, 1, 1 if unit else 3)
            if unit:
                grid.addWidget(QtWidgets.QLabel(unit), row, 2)
            self.form_fields[key] = _Field(edit, label)
        self._fill_form_from_device()

        fields = len(FORM_FIELDS)
        self.configure_button = QtWidgets.QPushButton("Configure")
        self.configure_button.setToolTip("Check the form, then send it to the Controller's Configure")
        self.configure_button.clicked.connect(self.configure)
        grid.addWidget(self.configure_button, fields, 0)

        self.command_buttons: dict[str, PanelCommandButton] = {}
        for column, command in enumerate(("Start", "Stop", "Abort"), start=1):
            button = PanelCommandButton(command=command, text=command, timeout=COMMAND_TIMEOUT_S)
            button.setModel(self.model)
            button.commandExecuted.connect(lambda _result, c=command: self.show_message(f"{c} done.", error=False))
            button.commandFailed.connect(self._command_failed)
            self.command_buttons[command] = button
            grid.addWidget(button, fields, column)

        self.run_table_button = QtWidgets.QPushButton("Run table…")
        self.run_table_button.setToolTip("Open the DataManager's run table (the proposal's catalogue)")
        self.run_table_button.clicked.connect(self.open_run_table)
        grid.addWidget(self.run_table_button, fields + 1, 0, 1, 4)

        self.message_label = MessageLine(lines=3)
        grid.addWidget(self.message_label, fields + 2, 0, 1, 4)
        grid.setColumnStretch(1, 1)
        return box

    def _build_image(self) -> QtWidgets.QWidget:
        box = QtWidgets.QGroupBox("Live image")
        layout = QtWidgets.QVBoxLayout(box)
        try:
            self.recorder_name = lookup_recorder(self.model)
        except tango.DevFailed as error:
            self.recorder_name = ""
            reason = describe_error(error)
        else:
            reason = f"the Controller {self.controller_name} has no Recorder property"
        self.preview = None
        if not self.recorder_name:
            missing = QtWidgets.QLabel(f"No live image: {reason}.")
            missing.setWordWrap(True)
            layout.addWidget(missing)
            return box
        recorder_model = device_model(self.recorder_name, self.tango_host)
        caption = QtWidgets.QHBoxLayout()
        caption.addWidget(QtWidgets.QLabel(f"Recorder {html.escape(self.recorder_name)}, frame"))
        self.preview_frame_label = TaurusLabel()
        self.preview_frame_label.setModel(f"{recorder_model}/PreviewFrameNumber")
        self.preview_frame_label.setMinimumWidth(80)
        caption.addWidget(self.preview_frame_label)
        caption.addStretch(1)
        layout.addLayout(caption)
        self.preview = PreviewImage(recorder_model)
        self.preview.setMinimumSize(420, 420)
        layout.addWidget(self.preview, 1)
        return box

    def _fill_form_from_device(self) -> None:
        """Start from the configuration the Controller holds, if any (what the next Start uses)."""
        try:
            text = taurus.Attribute(self._attribute("Configuration")).read().rvalue
            configuration = json.loads(text) if text else {}
        except Exception:  # noqa: BLE001 - no device, or nothing configured yet: the defaults stay
            return
        for key, field in self.form_fields.items():
            value = configuration.get(key)
            if value is not None:
                field.edit.setText(str(value))

    # -- actions --------------------------------------------------------------------------
    def form_values(self) -> dict[str, str]:
        return {key: field.edit.text() for key, field in self.form_fields.items()}

    def set_form(self, **values) -> None:
        """Fill form fields (frames=..., exposure=..., period=..., file=...), as an operator types."""
        for key, value in values.items():
            self.form_fields[key].edit.setText(str(value))
            self._mark_field(key, ok=True)

    def _mark_field(self, key: str, ok: bool) -> None:
        self.form_fields[key].edit.setStyleSheet("" if ok else "border: 2px solid #b00020;")

    def configure(self) -> bool:
        """Check the form, then send it to Configure; an operator error is shown in the panel, not raised."""
        try:
            configuration = configuration_from_form(self.form_values())
        except FormError as error:
            self._mark_field(error.field, ok=False)
            self.form_fields[error.field].edit.setFocus()
            self.show_message(f"Not configured: {error}", error=True)
            return False
        text = json.dumps(configuration)
        try:
            device = taurus.Device(self.model)  # shared with the Taurus widgets: restore its timeout
            previous_timeout = device.get_timeout_millis()
            device.set_timeout_millis(int(COMMAND_TIMEOUT_S * 1000))
            try:
                device.command_inout("Configure", text)
            finally:
                device.set_timeout_millis(previous_timeout)
        except Exception as error:  # noqa: BLE001 - DevFailed from the device, or no device at all
            self.show_message(f"Configure failed: {describe_error(error)}", error=True)
            return False
        described = f"{configuration['frames']} frames, exposure {configuration['exposure']:g} s, " \
                    f"period {configuration['period']:g} s"
        if "file" in configuration:
            described += f", file {configuration['file']}"
        self.show_message(f"Configured: {described}.", error=False)
        return True

    def open_run_table(self):
        """Open the DataManager's run-table window on its current catalogue; None (and a message) if
        there is no DataManager or no experiment set yet."""
        try:
            name = self.datamanager_name or lookup_datamanager(self.model)
            if not name:
                self.show_message(f"No run table: no {DATAMANAGER_CLASS} in the database follows "
                                  f"{self.controller_name} (give one with --datamanager).", error=True)
                return None
            model = device_model(name, self.tango_host)
            catalogue = tango.DeviceProxy(model).read_attribute("CataloguePath").value
        except tango.DevFailed as error:
            self.show_message(f"No run table: {describe_error(error)}", error=True)
            return None
        if not catalogue:
            self.show_message(f"No run table yet: the DataManager {name} has no experiment set "
                              "(SetExperiment opens the proposal's catalogue).", error=True)
            return None
        from photonflow.clients.run_table import RunTableWindow

        if self.run_table_window is not None:
            self.run_table_window.close()
        self.run_table_window = RunTableWindow(catalogue, model)
        self.run_table_window.show()
        self.show_message(f"Run table of {catalogue} opened.", error=False)
        return self.run_table_window

    def _command_failed(self, command: str, description: str) -> None:
        self.show_message(f"{command} failed: {description}", error=True)

    def show_message(self, text: str, error: bool) -> None:
        """The last command's outcome, in red when the operator has something to fix."""
        self.message_label.show_outcome(text, error)

    def message(self) -> str:
        """The text of the last command's outcome (what the operator reads)."""
        return self.message_label.text()

    def closeEvent(self, event):
        if self.run_table_window is not None:
            self.run_table_window.close()
        super().closeEvent(event)


def main(argv: list[str] | None = None) -> int:
    """Open the panel on a Controller (TANGO_HOST says which database) and run the Qt loop."""
    parser = argparse.ArgumentParser(
        prog="photonflow-panel", description="Taurus operator panel for a photonflow Controller."
    )
    parser.add_argument("controller", nargs="?", default="",
                        help=f"Tango name of the Controller device (default: the deployment's, else "
                             f"{DEFAULT_CONTROLLER})")
    parser.add_argument("--config", default="",
                        help="the deployment make up was given (make panel passes it): its Controller")
    parser.add_argument("--datamanager", default="",
                        help=f"the DataManager whose run table the panel opens (default: the {DATAMANAGER_CLASS} "
                             "in the database whose Controller property names this Controller)")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    from photonflow.clients.launcher import panel_deployment

    deployment = panel_deployment(args.config)  # and TANGO_HOST: the running suite's, when not set
    if not args.controller:
        args.controller = deployment.device("PhotonflowController").name if deployment else DEFAULT_CONTROLLER

    from taurus.qt.qtgui.application import TaurusApplication

    app = TaurusApplication(sys.argv[:1], cmd_line_parser=None, app_name="photonflow-panel")
    panel = ControllerPanel(args.controller, datamanager=args.datamanager)
    from photonflow.clients.qt_exit import run_until_closed

    return run_until_closed(app, panel, ready=f"photonflow-panel: showing {args.controller}")


if __name__ == "__main__":
    sys.exit(main())
