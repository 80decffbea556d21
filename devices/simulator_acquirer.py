"""Acquirer for the simulated detector: diffraction-like Poisson frames, on internal, client or
external trigger (from the trigger line named by ``SimulationTriggerInput``)."""

from __future__ import annotations

from tango.server import device_property

from photonflow.acquisition.beamline import parse_beam_centre
from photonflow.devices.acquirer import simulation_trigger_input
from photonflow.devices.beamline_link import BeamlineFollowingAcquirer
from photonflow.simulators.simulated_camera import SimulatedCamera, SimulatedSensor


class SimulatorAcquirer(BeamlineFollowingAcquirer):
    """A detector that exists only in software, for tests, demos and training."""

    ImageWidth = device_property(dtype=int, default_value=1030, doc="Columns of each frame")
    ImageHeight = device_property(dtype=int, default_value=1065, doc="Rows of each frame")
    ImageType = device_property(
        dtype=str, default_value="uint16", doc="Pixel type: uint8, uint16, uint32, int16, int32"
    )
    Seed = device_property(dtype=int, default_value=0, doc="Random seed; equal seeds give equal frames")
    PixelSize = device_property(dtype=float, default_value=75e-6, doc="Pixel pitch in metres")
    SerialNumber = device_property(dtype=str, default_value="SIM-0001", doc="The simulated detector's serial number")
    BeamCentre = device_property(
        dtype=str, default_value="", doc="Beam centre 'row,column' in pixels; empty: near the middle"
    )
    SimulationTriggerInput = simulation_trigger_input()

    def create_camera(self) -> SimulatedCamera:
        return SimulatedCamera(
            SimulatedSensor(
                height=self.ImageHeight,
                width=self.ImageWidth,
                dtype=self.ImageType,
                seed=self.Seed,
                pixel_size=self.PixelSize,
                serial_number=self.SerialNumber,
            ),
            beamline=self.simulated_beamline().conditions,
            beam_centre=parse_beam_centre(self.BeamCentre),
            trigger_line=self.SimulationTriggerInput,
        )
