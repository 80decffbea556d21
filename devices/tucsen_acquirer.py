"""Acquirer for Tucsen Dhyana 95 and 400BSI sCMOS cameras, through Tucsen's TUCam C library.

With ``Simulation`` empty the camera is opened through ``libTUCam.so.1`` (Tucsen's SDK, on the
computer the camera is plugged into; one camera per server process, as TUCam initialises once);
with a model name (dhyana95, dhyana400bsi) the library is the simulated one, which offers the
same C functions.
"""

from __future__ import annotations

from tango import AttrWriteType
from tango.server import attribute, device_property

from photonflow.acquisition.tucsen import TucsenCamera, TucsenSettings
from photonflow.devices.acquirer import simulation_trigger_input
from photonflow.devices.beamline_link import BeamlineFollowingAcquirer
from photonflow.devices.common import operator_errors
from photonflow.drivers.tucam import FAN_GEARS, MODELS, load_tucam_library
from photonflow.errors import ConfigurationError


class TucsenAcquirer(BeamlineFollowingAcquirer):
    """A Tucsen Dhyana; frames are read from TUCam's buffer and streamed (STINS)."""

    CameraIndex = device_property(dtype=int, default_value=0, doc="TUCam camera index")
    Simulation = device_property(dtype=str, default_value="", doc="Empty: the real camera; else dhyana95, dhyana400bsi")
    LibraryPath = device_property(dtype=str, default_value="libTUCam.so.1", doc="Tucsen's TUCam library")
    SerialNumber = device_property(dtype=str, default_value="TS-SIM-0001", doc="The simulated camera's serial number")
    Seed = device_property(dtype=int, default_value=0, doc="The simulated camera's random seed")
    GainMode = device_property(dtype=str, default_value="HDR",
                               doc="Dhyana 95: HDR, High, Low; 400BSI: HDR, HighSpeed, CMS")
    BitDepth = device_property(dtype=int, default_value=16, doc="8 or 16")
    FanGear = device_property(dtype=str, default_value="high",
                              doc=f"One of {', '.join(FAN_GEARS)} (off: water cooling)")
    TargetTemperature = device_property(dtype=float, default_value=0.0, doc="Sensor target temperature, degC")
    Roi = device_property(dtype=(int,), default_value=[0, 0, 0, 0], doc="x, y, width, height; all 0: the whole sensor")
    SimulationTriggerInput = simulation_trigger_input()

    def create_camera(self) -> TucsenCamera:
        if self.Simulation:
            from photonflow.simulators.tucsen_tucam import SimulatedTucam

            if self.Simulation not in MODELS:
                raise ConfigurationError(f"Simulation must be empty or one of {', '.join(MODELS)}")
            library = SimulatedTucam(self.Simulation, self.SerialNumber, self.Seed,
                                     trigger_line=self.SimulationTriggerInput,
                                     beamline=self.simulated_beamline().conditions).functions
        else:
            library = load_tucam_library(self.LibraryPath)
        roi = tuple(self.Roi)
        if len(roi) != 4:
            raise ConfigurationError(f"Roi must be 4 numbers (x, y, width, height), got {list(roi)}")
        settings = TucsenSettings(self.GainMode, self.BitDepth, self.FanGear, self.TargetTemperature, roi)
        return TucsenCamera(library, self.CameraIndex, settings)

    def _camera(self) -> TucsenCamera:
        return self._core().camera

    @attribute(dtype=str, access=AttrWriteType.READ_WRITE, doc="Gain mode (TUIDC_IMGMODESELECT and TUIDP_GLOBALGAIN)")
    @operator_errors
    def GainModeUsed(self):
        return self._camera().gain_mode

    @GainModeUsed.write
    @operator_errors
    def GainModeUsed(self, value):
        self._camera().set_gain_mode(value)

    @attribute(dtype=int, access=AttrWriteType.READ_WRITE, min_value=8, max_value=16, doc="Bits per pixel: 8 or 16")
    @operator_errors
    def BitDepthUsed(self):
        return self._camera().bit_depth

    @BitDepthUsed.write
    @operator_errors
    def BitDepthUsed(self, value):
        self._camera().set_bit_depth(value)

    @attribute(dtype=str, access=AttrWriteType.READ_WRITE, doc=f"Fan gear: {', '.join(FAN_GEARS)}")
    @operator_errors
    def FanGearUsed(self):
        return self._camera().fan_gear

    @FanGearUsed.write
    @operator_errors
    def FanGearUsed(self, value):
        self._camera().set_fan_gear(value)

    @attribute(dtype=float, access=AttrWriteType.READ_WRITE, unit="degC", format="%.1f", min_value=-50, max_value=50,
               doc="Temperature the sensor is cooled towards")
    @operator_errors
    def TargetTemperatureUsed(self):
        return float(self._camera().target_temperature)

    @TargetTemperatureUsed.write
    @operator_errors
    def TargetTemperatureUsed(self, value):
        self._camera().set_target_temperature(value)

    @attribute(dtype=float, unit="degC", format="%.1f", doc="Sensor temperature now")
    @operator_errors
    def SensorTemperature(self):
        return float(self._camera().sensor_temperature)

    @attribute(dtype=(int,), max_dim_x=4, access=AttrWriteType.READ_WRITE,
               doc="Region read out: x, y, width, height (as the camera aligned it); write 0 0 0 0 for all")
    @operator_errors
    def RoiUsed(self):
        return list(self._camera().roi)

    @RoiUsed.write
    @operator_errors
    def RoiUsed(self, value):
        if len(value) != 4:
            raise ConfigurationError(f"a ROI is 4 numbers (x, y, width, height), got {list(value)}")
        self._camera().set_roi(*(int(n) for n in value))

    @attribute(dtype=str, doc="Camera model, as TUCam names it")
    @operator_errors
    def CameraModel(self):
        return self._camera().model_name

    @attribute(dtype=str, doc="Camera serial number, read from the camera")
    @operator_errors
    def CameraSerialNumber(self):
        return self._camera().serial_number
