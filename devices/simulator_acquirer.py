"""Acquirer for the simulated detector: diffraction-like Poisson frames, internal trigger."""

from __future__ import annotations

from typing import Any

import tango
from tango.server import device_property

from photonflow.devices.acquirer import AcquirerDevice
from photonflow.errors import ConfigurationError
from photonflow.simulators.beamline_view import BeamlineNames, BeamlineView
from photonflow.simulators.simulated_camera import SimulatedCamera, SimulatedSensor


class TangoReader:
    """``read(device, attribute)`` through DeviceProxy, made on first use (a peer may start later)."""

    def __init__(self, timeout_s: float = 3.0):
        self.timeout_ms = int(timeout_s * 1000)
        self._proxies: dict[str, tango.DeviceProxy] = {}

    def __call__(self, device: str, attribute: str) -> Any:
        proxy = self._proxies.get(device)
        if proxy is None:
            proxy = tango.DeviceProxy(device)
            proxy.set_timeout_millis(self.timeout_ms)
            self._proxies[device] = proxy
        if attribute == "State":
            return proxy.state()
        return proxy.read_attribute(attribute).value


def parse_beam_centre(text: str) -> tuple[float, float] | None:
    """``"row,col"`` in pixels; empty: None (near the middle)."""
    if not text.strip():
        return None
    try:
        row, column = (float(part) for part in text.split(","))
    except ValueError:
        raise ConfigurationError(f"BeamCentre is 'row,column' in pixels, e.g. '500.5,515.0', got {text!r}") from None
    return row, column


class SimulatorAcquirer(AcquirerDevice):
    """A detector that exists only in software, for tests, demos and training."""

    ImageWidth = device_property(dtype=int, default_value=1030, doc="Columns of each frame")
    ImageHeight = device_property(dtype=int, default_value=1065, doc="Rows of each frame")
    ImageType = device_property(
        dtype=str, default_value="uint16", doc="Pixel type: uint8, uint16, uint32, int16, int32"
    )
    Seed = device_property(dtype=int, default_value=0, doc="Random seed; equal seeds give equal frames")
    PixelSize = device_property(dtype=float, default_value=75e-6, doc="Pixel pitch in metres")
    SerialNumber = device_property(dtype=str, default_value="SIM-0001")
    BeamCentre = device_property(
        dtype=str, default_value="", doc="Beam centre 'row,column' in pixels; empty: near the middle"
    )
    BeamlineRing = device_property(dtype=str, default_value="", doc="Storage ring device (Current); empty: none")
    BeamlineMonochromator = device_property(
        dtype=str, default_value="", doc="Monochromator device (Wavelength); empty: 20 keV"
    )
    BeamlineShutter = device_property(dtype=str, default_value="", doc="Shutter device; closed: dark frames")
    BeamlineAttenuator = device_property(dtype=str, default_value="", doc="Attenuator device (Transmission)")
    DetectorDistanceMotor = device_property(
        dtype=str, default_value="", doc="Motor giving the sample-detector distance in mm; empty: 120 mm"
    )

    def create_camera(self) -> SimulatedCamera:
        names = BeamlineNames(
            ring=self.BeamlineRing, monochromator=self.BeamlineMonochromator, shutter=self.BeamlineShutter,
            attenuator=self.BeamlineAttenuator, distance_motor=self.DetectorDistanceMotor,
        )
        return SimulatedCamera(
            SimulatedSensor(
                height=self.ImageHeight,
                width=self.ImageWidth,
                dtype=self.ImageType,
                seed=self.Seed,
                pixel_size=self.PixelSize,
                serial_number=self.SerialNumber,
            ),
            beamline=BeamlineView(names, TangoReader()).read,
            beam_centre=parse_beam_centre(self.BeamCentre),
        )
