"""Real devices of a running suite: proxies, waiting on their state with a deadline (never a blind
sleep), a series run through the Controller, a deployment started as `make demo` starts one."""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

import h5py
import tango

from photonflow.simulators.diffraction import DiffractionFrames, PatternSettings
from tests.helpers import waiting


def proxy(name: str, timeout_s: float = 15) -> tango.DeviceProxy:
    device = tango.DeviceProxy(name)
    device.set_timeout_millis(int(timeout_s * 1000))
    return device


def wait_until(check, timeout: float = 30, interval: float = 0.1, what: str = "condition"):
    """``waiting.wait_until`` for checks that read devices: a device not answering yet (DevFailed)
    is waited for too."""
    return waiting.wait_until(check, timeout, interval, what, tolerate=(tango.DevFailed,))


def wait_for_state(device: tango.DeviceProxy, *wanted: str, timeout: float = 30) -> str:
    return wait_until(
        lambda: str(device.state()) if str(device.state()) in wanted else None,
        timeout,
        what=lambda: f"{device.dev_name()} in {wanted} (status: {_status(device)})",
    )


def _status(device):
    try:
        return device.status()
    except tango.DevFailed:
        return "unreachable"


def acquire(controller: tango.DeviceProxy, timeout: float = 120, **settings) -> str:
    """Configure and start a series, wait for it to end; returns the final state."""
    wait_for_state(controller, "ON", "ALARM")
    controller.Configure(json.dumps(settings))
    controller.Start()
    wait_until(lambda: str(controller.state()) != "RUNNING", timeout, what="series end")
    return str(controller.state())


def devfailed(call, *args) -> tango.DevError:
    """The first DevError of the DevFailed the call raises (fails the test if none)."""
    try:
        call(*args)
    except tango.DevFailed as error:
        return error.args[0]
    raise AssertionError(f"{call} did not raise DevFailed")


@contextlib.contextmanager
def preserved_environment(*keys: str):
    """Restore these environment variables afterwards (a suite's simulators announce theirs there)."""
    saved = {key: os.environ.get(key) for key in keys}
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@contextlib.contextmanager
def running_deployment(text: str, var_dir: Path, environment: dict[str, str]):
    """A deployment started as `make demo` starts one, on its own database: simulated hardware
    first (its announced addresses fill the properties), then the servers. Yields the Suite."""
    from photonflow.clients.launcher import Suite
    from photonflow.deployment import load_deployment

    with preserved_environment(*environment, "PHOTONFLOW_VAR"):
        os.environ["PHOTONFLOW_VAR"] = str(var_dir.resolve())  # its trigger lines: this suite's own
        os.environ.update(environment)
        suite = Suite("", var_dir)
        try:
            suite.start_simulators(load_deployment(text, simulators_only=True))
            deployment = load_deployment(text)
            suite.start_deployment(deployment, var_dir / "tango.db")
            yield suite
        finally:
            suite.stop()


def demo_frames(devices, exposure: float, data_file) -> DiffractionFrames:
    """The frames the demo's simulated detector sends, rebuilt from its configuration and the
    beamline it followed when armed (wavelength, distance, beam centre, intensity), as the
    detector recorded them in the data file."""
    properties = devices.deployment.device("SimulatorAcquirer").properties
    with h5py.File(data_file, "r") as f:
        detector = f["entry/instrument/simulator"]
        specific = detector["detector_specific"]
        beam = {
            "beam_centre": (float(detector["beam_center_y"][()]), float(detector["beam_center_x"][()])),
            "distance": float(detector["distance"][()]),
            "pixel_size": float(detector["x_pixel_size"][()]),
            "wavelength": float(specific["incident_wavelength"][()]),
            "scale": float(specific["beam_intensity_scale"][()]),
        }
    return DiffractionFrames(
        PatternSettings(
            height=int(properties["ImageHeight"][0]),
            width=int(properties["ImageWidth"][0]),
            dtype=properties["ImageType"][0],
            seed=int(properties["Seed"][0]),
            exposure=exposure,
            **beam,
        )
    )
