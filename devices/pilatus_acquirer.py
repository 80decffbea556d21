"""Acquirer for DECTRIS PILATUS3 through camserver: images come as CBF files, frames go out in STINS."""

from __future__ import annotations

from tango import AttrWriteType
from tango.server import attribute, device_property

from photonflow.acquisition.beamline import BeamlineNames
from photonflow.acquisition.pilatus import BeamlineFollowingPilatus, PilatusCamera, PilatusSettings
from photonflow.devices.acquirer import AcquirerDevice
from photonflow.devices.beamline_link import beamline_port, beamline_read_timeout
from photonflow.devices.common import operator_errors
from photonflow.drivers.camserver import MODELS, pixel_positions


def _mx_setting(key: str, unit: str, doc: str, minimum: float, maximum: float, default: float):
    """A read-write attribute sent to camserver with ``mxsettings`` (it goes into every CBF header)."""

    @operator_errors
    def read(self):
        return float(self._core().camera.mx.get(key, default))

    @operator_errors
    def write(self, value):
        self._core().camera.mx_settings(**{key: value})

    return attribute(fget=read, fset=write, dtype=float, access=AttrWriteType.READ_WRITE, unit=unit,
                     format="%.5f", min_value=minimum, max_value=maximum, doc=doc)


class PilatusAcquirer(AcquirerDevice):
    """A PILATUS3 driven over camserver's TCP protocol; the CBF images it writes are streamed."""

    CamserverAddress = device_property(
        dtype=str, mandatory=True, doc="Mandatory. camserver's host:port (41234 on a real one)"
    )
    Model = device_property(dtype=str, default_value="pilatus3_1m", doc=f"One of {', '.join(MODELS)}")
    ImageDirectory = device_property(
        dtype=str, mandatory=True,
        doc="Mandatory. Where camserver writes its images, as this computer sees that directory",
    )
    SerialNumber = device_property(
        dtype=str, default_value="", doc="The detector's serial number, written to the files as it is (empty: none)"
    )
    BadPixels = device_property(
        dtype=str, default_value="",
        doc="The detector's bad-pixel map (camserver writes -2 there): 'row,column row,column ...'. With the "
            "model's module gaps, the pixel_mask of the files",
    )
    RequestTimeout = device_property(dtype=float, default_value=5.0, doc="Seconds to wait for a camserver reply")
    BeamlineReadTimeout = beamline_read_timeout()
    BeamlineMonochromator = device_property(
        dtype=str, default_value="", doc="Monochromator whose Wavelength goes to camserver at Prepare; empty: none"
    )
    DetectorDistanceMotor = device_property(
        dtype=str, default_value="", doc="Motor whose Position (mm) is the Detector_distance at Prepare; empty: none"
    )
    BeamCentre = device_property(dtype=str, default_value="", doc="Beam centre 'row,column' pixels (Beam_xy)")

    def create_camera(self) -> PilatusCamera:
        settings = PilatusSettings(
            address=self.CamserverAddress, model=self.Model, image_directory=self.ImageDirectory,
            timeout=self.RequestTimeout, serial_number=self.SerialNumber,
            bad_pixels=pixel_positions(self.BadPixels),
        )
        names = BeamlineNames(monochromator=self.BeamlineMonochromator, distance_motor=self.DetectorDistanceMotor)
        beamline = self.follow(beamline_port(names, self.BeamCentre, unread="camserver keeps its value",
                                            timeout_s=self.BeamlineReadTimeout))
        if not beamline.followed:
            return PilatusCamera(settings)
        return BeamlineFollowingPilatus(settings, beamline)

    Wavelength = _mx_setting("Wavelength", "Å", "X-ray wavelength", 0.0, 100.0, 1.0)
    DetectorDistance = _mx_setting("Detector_distance", "m", "Sample to detector distance", 0.0, 100.0, 0.25)
    StartAngle = _mx_setting("Start_angle", "degree", "Rotation angle of the first image", -1e6, 1e6, 0.0)
    AngleIncrement = _mx_setting("Angle_increment", "degree", "Rotation per image", -1e6, 1e6, 0.0)

    @attribute(dtype=float, access=AttrWriteType.READ_WRITE, unit="eV", format="%.0f", min_value=0, max_value=1e6,
               doc="Counting threshold (setthreshold; camserver trims the chips, which takes a while)")
    @operator_errors
    def ThresholdEnergy(self):
        return float(self._core().camera.threshold or 0.0)

    @ThresholdEnergy.write
    @operator_errors
    def ThresholdEnergy(self, value):
        self._core().camera.set_threshold(value)

    @attribute(dtype=str, doc="camserver's version")
    @operator_errors
    def CamserverVersion(self):
        return self._core().camera.version
