"""Acquirer for Andor Zyla 4.2/5.5 and Balor sCMOS cameras, through the SDK3 feature interface.

With ``Simulation`` empty the camera is ``pylablib.devices.Andor.AndorSDK3Camera`` (needs
pylablib and Andor's SDK3 library on the computer the camera is plugged into); with a model
name (zyla42, zyla55, balor) it is the simulated camera, which offers the same interface.
"""

from __future__ import annotations

from tango import AttrWriteType
from tango.server import attribute, device_property

from photonflow.acquisition.andor import AndorCamera, AndorSettings
from photonflow.devices.acquirer import simulation_trigger_input
from photonflow.devices.beamline_link import BeamlineFollowingAcquirer
from photonflow.devices.common import operator_errors
from photonflow.drivers.sdk3 import PIXEL_TYPES
from photonflow.errors import ConfigurationError


def open_sdk3_camera(index: int):
    """The real camera, through pylablib (imported only when a real camera is asked for)."""
    try:
        from pylablib.devices import Andor
    except ImportError:
        raise ConfigurationError(
            "a real Andor camera needs pylablib (pip install pylablib) and Andor SDK3; "
            "or set Simulation to zyla42, zyla55 or balor"
        ) from None
    return Andor.AndorSDK3Camera(idx=index)


class AndorAcquirer(BeamlineFollowingAcquirer):
    """An Andor Zyla or Balor; frames are read from SDK3 and streamed (STINS)."""

    CameraIndex = device_property(dtype=int, default_value=0, doc="SDK3 camera index")
    Simulation = device_property(dtype=str, default_value="", doc="Empty: the real camera; else zyla42, zyla55, balor")
    SerialNumber = device_property(dtype=str, default_value="VSC-SIM-0001", doc="The simulated camera's serial number")
    Seed = device_property(dtype=int, default_value=0, doc="The simulated camera's random seed")
    PixelEncoding = device_property(dtype=str, default_value="Mono16", doc=f"One of {', '.join(PIXEL_TYPES)}")
    ShutteringMode = device_property(dtype=str, default_value="Rolling", doc="Rolling or Global")
    Binning = device_property(dtype=int, default_value=1, doc="Pixels binned per side (1, 2, 3, 4, 8)")
    SimulationTriggerInput = simulation_trigger_input()

    def create_camera(self) -> AndorCamera:
        if self.Simulation:
            from photonflow.simulators.andor_sdk3 import MODELS, SimulatedSDK3Camera

            if self.Simulation not in MODELS:
                raise ConfigurationError(f"Simulation must be empty or one of {', '.join(MODELS)}")
            beamline = self.simulated_beamline().conditions
            sdk = SimulatedSDK3Camera(self.Simulation, self.SerialNumber, self.Seed, beamline,
                                      self.SimulationTriggerInput)
        else:
            sdk = open_sdk3_camera(self.CameraIndex)
        return AndorCamera(sdk, AndorSettings(self.PixelEncoding, self.ShutteringMode, True, self.Binning))

    @attribute(dtype=float, unit="degC", format="%.1f", doc="Sensor temperature")
    @operator_errors
    def SensorTemperature(self):
        return float(self._core().camera.sdk.get_attribute_value("SensorTemperature"))

    @attribute(dtype=bool, access=AttrWriteType.READ_WRITE, doc="Sensor cooling on")
    @operator_errors
    def SensorCooling(self):
        return bool(self._core().camera.sdk.get_attribute_value("SensorCooling"))

    @SensorCooling.write
    @operator_errors
    def SensorCooling(self, value):
        camera = self._core().camera
        camera.call(camera.sdk.set_attribute_value, "SensorCooling", bool(value))

    @attribute(dtype=str, doc="Pixel encoding of the frames (SDK3 PixelEncoding)")
    @operator_errors
    def PixelEncodingUsed(self):
        return self._core().camera.sdk.get_attribute_value("PixelEncoding")

    @attribute(dtype=str, doc="Camera model, as SDK3 reports it")
    @operator_errors
    def CameraModel(self):
        return self._core().camera.sdk.get_attribute_value("CameraModel")
