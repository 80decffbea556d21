"""Sardana macros for photonflow (add this folder to the MacroServer's MacroPath).

They drive photonflow's own devices by their Tango names, held in MacroServer environment
variables so that one MacroServer can serve any beamline (``make up SARDANA=1`` sets them from
the deployment; by hand:)

    senv PhotonflowController demo/photonflow/controller
    senv PhotonflowDataManager demo/photonflow/datamanager
    senv PhotonflowStandardizer tomo/photonflow/standardizer    (pf_tomo: it writes the NXtomo)
    senv PhotonflowBeamline demo/beamline                       (shutter, omega, samx)
    senv PhotonflowTomography /path/to/tomography.yaml          (pf_tomo; default: the shipped one)

pf_darks and pf_flats write into the data policy's folders (a new dataset ``NNNN_dark`` or
``NNNN_flat`` of the DataManager's sample) with the role set, so the catalogue knows what they are.

A photonflow device that refuses (busy, FAULT, a bad value) stops the macro with the device's own
reason and description.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import tango
from sardana.macroserver.macro import Macro, Type

BUSY = ("RUNNING", "STANDBY", "MOVING")
# the shipped tomography structure, in the repository beside clients/
TOMOGRAPHY = Path(__file__).resolve().parents[3] / "config" / "structures" / "tomography.yaml"


class _PhotonflowMacro(Macro):
    """What every photonflow macro needs: its devices, a series run to its end, clear refusals."""

    _running = None  # the Controller whose series runs now (aborted with the macro)

    def device(self, variable: str, default: str = "") -> tango.DeviceProxy:
        try:
            name = self.getEnv(variable)
        except Exception:  # noqa: BLE001 - Sardana's UnknownEnv and its kin: any failure means not set
            if not default:
                raise RuntimeError(f"set the environment first: senv {variable} <Tango device name>") from None
            name = default
        proxy = tango.DeviceProxy(name)
        proxy.set_timeout_millis(15000)
        return proxy

    def call(self, proxy: tango.DeviceProxy, command: str, argument=None):
        """A command; a refusal stops the macro with the device's reason and description."""
        try:
            return proxy.command_inout(command) if argument is None else proxy.command_inout(command, argument)
        except tango.DevFailed as error:
            first = error.args[0]
            raise RuntimeError(f"{proxy.dev_name()} refused {command}: {first.reason}: {first.desc}") from None

    def wait_idle(self, proxy: tango.DeviceProxy, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while str(proxy.state()) in BUSY:
            self.checkPoint()  # Ctrl-C in spock stops here
            if time.monotonic() > deadline:
                raise RuntimeError(f"{proxy.dev_name()} still busy after {timeout:.0f} s: {proxy.status()}")
            time.sleep(0.05)
        return str(proxy.state())

    def series(self, frames: int, exposure: float, period: float, file: str = "", scan: dict | None = None) -> str:
        """One series through the Controller; returns its file. With ``scan`` ({"axis", "start",
        "step"}) the Controller runs it as a continuous scan: the axis' position-compare triggers
        frame i at start + i * step, the motor crossing it at constant velocity after its run-up.
        A series that does not end ON stops the macro with the Controller's status (its ALARM
        names what went wrong; the frames taken stay in the file)."""
        controller = self.device("PhotonflowController")
        if str(controller.state()) == "FAULT":
            raise RuntimeError(f"{controller.dev_name()} is in FAULT: {controller.status()}")
        settings = {"frames": frames, "exposure": exposure, "period": max(period, exposure)}
        if file:
            settings["file"] = file
        if scan is not None:
            settings["scan"] = scan
        self.call(controller, "Configure", json.dumps(settings))
        self.call(controller, "Start")
        self._running = controller
        try:
            # a scan also moves its axis to the run-up start and back: minutes at most on a beamline
            state = self.wait_idle(controller, (300 if scan else 60) + 3 * frames * settings["period"])
        finally:
            self._running = None
        if state != "ON":
            raise RuntimeError(f"the series ended {state}: {controller.status()}")
        return controller.LastFile

    @contextmanager
    def single_acquisition(self, role: str) -> Iterator[str]:
        """The data policy's file for one acquisition of ``role`` (dark, flat...), the DataManager's
        role set to it meanwhile (its catalogue records the run so) and set back after."""
        datamanager = self.device("PhotonflowDataManager")
        previous = datamanager.CurrentRole
        self.call(datamanager, "SetRole", role)
        try:
            yield self.call(datamanager, "DatasetFile", role)
        finally:
            self.call(datamanager, "SetRole", previous)

    def on_abort(self):
        """Ctrl-C in spock: the series (and its scan: motor, trigger generator) aborted too."""
        controller = self._running
        if controller is not None and str(controller.state()) in BUSY:
            controller.command_inout("Abort")

    def shutter(self, open_: bool) -> None:
        shutter = tango.DeviceProxy(f"{self.getEnv('PhotonflowBeamline')}/shutter")
        wanted = "OPEN" if open_ else "CLOSE"
        if str(shutter.state()) != wanted:
            self.call(shutter, "Open" if open_ else "Close")
        deadline = time.monotonic() + 30
        while str(shutter.state()) != wanted:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{shutter.dev_name()} did not {wanted.lower()}: {shutter.status()}")
            time.sleep(0.05)


class pf_set_sample(_PhotonflowMacro):
    """Say which experiment and sample the next acquisitions belong to (the DataManager's
    catalogue and data policy folders follow)."""

    param_def = [
        ["proposal", Type.String, None, "The proposal (experiment), e.g. mx1234"],
        ["sample", Type.String, None, "The sample's name"],
        ["session", Type.String, "default", "The session (visit); default: 'default'"],
    ]

    def run(self, proposal, sample, session):
        datamanager = self.device("PhotonflowDataManager")
        self.call(datamanager, "SetExperiment", json.dumps({"proposal": proposal, "session": session,
                                                            "sample": sample}))
        self.output(f"Experiment {proposal}/{session}, sample {sample}: catalogue {datamanager.CataloguePath}")


class pf_darks(_PhotonflowMacro):
    """Take dark frames: the shutter is closed for them and opened again after."""

    param_def = [
        ["frames", Type.Integer, None, "How many dark frames (>= 1)"],
        ["exposure", Type.Float, None, "Exposure of each frame, seconds (> 0)"],
    ]

    def run(self, frames, exposure):
        _check_counts(frames, exposure)
        with self.single_acquisition("dark") as planned:
            self.shutter(False)
            try:
                file = self.series(frames, exposure, exposure, planned)
            finally:
                self.shutter(True)
        self.output(f"{frames} darks in {file}")


class pf_flats(_PhotonflowMacro):
    """Take flat (white) frames with the sample moved out of the beam, then put it back."""

    param_def = [
        ["frames", Type.Integer, None, "How many flat frames (>= 1)"],
        ["exposure", Type.Float, None, "Exposure of each frame, seconds (> 0)"],
        ["motor", Type.Moveable, None, "The sample translation that takes the sample out"],
        ["out_position", Type.Float, None, "Its position with the sample out of the beam"],
    ]

    def run(self, frames, exposure, motor, out_position):
        _check_counts(frames, exposure)
        back = motor.getPosition()
        with self.single_acquisition("flat") as planned:
            self.mv(motor, out_position)
            try:
                file = self.series(frames, exposure, exposure, planned)
            finally:
                self.mv(motor, back)
        self.output(f"{frames} flats in {file} ({motor.getName()} at {out_position})")


class pf_mx_collect(_PhotonflowMacro):
    """An MX rotation collection as a continuous scan: the Controller accelerates the axis over its
    run-up so that it crosses start at constant velocity, and the axis' position-compare triggers
    frame i as it crosses start + i * width; the Standardizer writes omega per frame from the
    captured positions."""

    param_def = [
        ["start", Type.Float, None, "Start angle, degrees"],
        ["width", Type.Float, None, "Oscillation per frame, degrees (> 0)"],
        ["frames", Type.Integer, None, "Number of frames (>= 1)"],
        ["exposure", Type.Float, None, "Exposure per frame, seconds (> 0); one frame per exposure time"],
        ["axis", Type.String, "omega", "The rotation axis, as the Controller's ScanAxes name it"],
    ]

    def run(self, start, width, frames, exposure, axis):
        _check_counts(frames, exposure)
        if width <= 0:
            raise ValueError(f"width must be > 0 degrees, got {width}")
        end = start + width * frames
        self.output(f"{frames} frames of {exposure} s over {axis} {start:g}..{end:g} deg, {width:g} deg per frame "
                    f"({width / exposure:g} deg/s), each triggered by {axis}'s position-compare")
        file = self.series(frames, exposure, exposure, scan={"axis": axis, "start": start, "step": width})
        self.output(f"{frames} frames over {start:g}..{end:g} deg in {file}")


class pf_tomo(_PhotonflowMacro):
    """A tomography: the tomography structure run through the DataManager (darks with the shutter
    closed, flats with the sample out, projections as a continuous scan of the rotation: the
    Controller triggers each projection at its angle), these values overriding the structure's;
    the Standardizer joins them in one NXtomo. The experiment and sample are the DataManager's
    (pf_set_sample first)."""

    param_def = [
        ["projections", Type.Integer, None, "Projections over the rotation (>= 1)"],
        ["darks", Type.Integer, 10, "Dark frames"],
        ["flats", Type.Integer, 10, "Flat frames"],
        ["exposure", Type.Float, 0.002, "Exposure per frame, seconds"],
        ["end_angle", Type.Float, 180.0, "Last angle, degrees (from the structure's start_angle)"],
    ]

    def run(self, projections, darks, flats, exposure, end_angle):
        from photonflow.clients.sequencer import Beamline, run_tomography, tomography_overrides

        _check_counts(projections, exposure)
        datamanager = self.device("PhotonflowDataManager")
        if not datamanager.Proposal:
            raise RuntimeError("the DataManager has no experiment: pf_set_sample <proposal> <sample> first")
        structure = self.getEnv("PhotonflowTomography") if "PhotonflowTomography" in self.getAllEnv() \
            else str(TOMOGRAPHY)
        axis, start = _rotation(structure)
        step = (end_angle - start) / projections
        # one projection per period: as often as the exposure allows, as slowly as the axis needs
        maximum = float(tango.DeviceProxy(f"{self.getEnv('PhotonflowBeamline')}/{axis}").MaximumVelocity)
        period = max(exposure * 2, exposure + 0.005, _SPEED_MARGIN * abs(step) / maximum)
        self.output(f"{projections} projections of {exposure} s over {axis} {start:g}..{end_angle:g} deg, "
                    f"{step:g} deg apart, one every {period:.4g} s ({abs(step) / period:.4g} deg/s, at most "
                    f"{maximum:g}), each triggered by {axis}'s position-compare; {darks} darks, {flats} flats")
        overrides = tomography_overrides(projections=projections, darks=darks, flats=flats, exposure=exposure,
                                         period=round(period, 6), end_angle=end_angle)
        self._running = self.device("PhotonflowController")
        try:
            summary = run_tomography(datamanager, self._running,
                                     self.device("PhotonflowStandardizer"), Beamline(self.getEnv("PhotonflowBeamline")),
                                     structure, None, overrides, log=_Output(self))
        except tango.DevFailed as error:
            first = error.args[0]
            raise RuntimeError(f"the tomography stopped: {first.reason}: {first.desc}") from None
        finally:
            self._running = None
        if not summary.get("nexus") or summary["state"] != "ON":
            raise RuntimeError(f"the tomography ended {summary['state']}: {summary.get('nexus_error', '')}")
        self.output(f"NXtomo ({summary['nexus_problems']} validation problem(s)): {summary['nexus']}; "
                    f"runs {summary['runs']} in {summary['catalogue']}")


# a rotation a little below the axis' maximum velocity: the plan refuses what is above it
_SPEED_MARGIN = 1.02


def _rotation(structure: str) -> tuple[str, float]:
    """The axis a tomography structure turns (its ``start_angle`` setting) and its start angle,
    for the macro's announcement and its speed."""
    import yaml

    description = yaml.safe_load(Path(structure).read_text())
    setting = description.get("beamline", {}).get("start_angle", "omega")
    axis = setting.get("setting", "omega") if isinstance(setting, dict) else str(setting)
    start = 0.0
    for entry in description.get("sequence", []):
        start = float(entry.get("paramSet", {}).get("start_angle", start))
    return axis, start


class _Output:
    """The sequencer's progress lines as the macro's output; each line is also where Ctrl-C in
    spock stops the sequence (the DataManager's EndSequence follows)."""

    def __init__(self, macro: Macro):
        self.macro = macro

    def write(self, text: str) -> None:
        self.macro.checkPoint()
        if text.strip():
            self.macro.output(text.rstrip())

    def flush(self) -> None:
        pass


def _check_counts(frames: int, exposure: float) -> None:
    if frames < 1:
        raise ValueError(f"frames must be at least 1, got {frames}")
    if not exposure > 0:
        raise ValueError(f"exposure must be > 0 s, got {exposure}")
