"""Acquirer for DECTRIS EIGER2 and PILATUS4: drives the DCU over SIMPLON; the DCU streams the frames.

The Controller arms the Recorder on ``StreamEndpoint`` with ``StreamProtocol``
(``dectris-v2`` or ``dectris-v1``), so the frames go from the DCU to the file compressed as
sent. Vendor attributes read and write the DCU's own configuration; their Tango limits
are the SIMPLON limits, and the DCU's refusals come back in its own words.

When ``BeamlineMonochromator``, ``DetectorDistanceMotor`` or ``BeamCentre`` are set, each
Prepare writes the beamline's wavelength, distance and the beam centre to the DCU first
(``BeamlineFollowingDectris``); the DCU cannot see the ring, shutter or attenuator, so the
other beamline properties are not used here.
"""

from __future__ import annotations

from tango import AttrWriteType
from tango.server import attribute, device_property

from photonflow.acquisition.beamline import BeamlineNames
from photonflow.acquisition.dectris import BeamlineFollowingDectris, DectrisCamera, DectrisSettings
from photonflow.devices.beamline_link import BeamlineFollowingAcquirer, beamline_port
from photonflow.devices.common import operator_errors
from photonflow.errors import ConfigurationError


def _dcu_parameter(name: str, unit: str, doc: str, minimum: float, maximum: float, fmt: str = "%.4f"):
    """A read-write attribute that is the DCU's detector/config/<name>.

    The Tango limits are the physical outer bounds; the DCU's own, which depend on the model,
    are checked here first so that a refusal names them (Tango's own limit error does not).
    """

    @operator_errors
    def read(self):
        return self._core().camera.client.get("detector", name)

    @operator_errors
    def write(self, value):
        client = self._core().camera.client
        limits = client.describe("detector", name)
        low, high = limits.get("min"), limits.get("max")
        if low is not None and not low <= value <= high:
            raise ConfigurationError(
                f"{name} {value} {unit} is outside what the detector accepts: {low} to {high} {unit}"
            )
        client.set("detector", name, value)

    return attribute(fget=read, fset=write, dtype=float, access=AttrWriteType.READ_WRITE, unit=unit,
                     format=fmt, min_value=minimum, max_value=maximum, doc=doc)


def _dcu_value(name: str, dtype, doc: str, unit: str = ""):
    """A read-only attribute that is the DCU's detector/config/<name>."""

    @operator_errors
    def read(self):
        return self._core().camera.client.get("detector", name)

    return attribute(fget=read, dtype=dtype, unit=unit, doc=doc)


class DectrisAcquirer(BeamlineFollowingAcquirer):
    """A DECTRIS EIGER2 or PILATUS4 behind its detector control unit (SIMPLON API 1.8.0)."""

    DcuUrl = device_property(dtype=str, mandatory=True, doc="Mandatory. SIMPLON address of the DCU: http://host[:port]")
    DcuStreamEndpoint = device_property(
        dtype=str, default_value="",
        doc="ZeroMQ endpoint of the DCU's stream; empty: tcp://<DCU host>:31001 (v2) or :9999 (v1)",
    )
    StreamFormat = device_property(dtype=str, default_value="cbor", doc="cbor (stream v2) or legacy (stream v1)")
    HeaderDetail = device_property(dtype=str, default_value="basic", doc="Stream v1 header detail: all, basic, none")
    RequestTimeout = device_property(dtype=float, default_value=5.0, doc="Seconds to wait for a SIMPLON answer")
    DcuFileWriterMode = device_property(
        dtype=str, default_value="", doc="The DCU's own file writer: enabled, disabled; empty: leave it as it is"
    )
    DcuMonitorMode = device_property(
        dtype=str, default_value="", doc="The DCU's monitor interface: enabled, disabled; empty: leave it as it is"
    )
    BeamCentre = device_property(
        dtype=str, default_value="",
        doc="Beam centre 'row,column' in pixels, written at Prepare (beam_center_y, beam_center_x); empty: the DCU's",
    )

    def create_camera(self) -> DectrisCamera:
        settings = DectrisSettings(
            url=self.DcuUrl, stream_endpoint=self.DcuStreamEndpoint, stream_format=self.StreamFormat,
            header_detail=self.HeaderDetail, timeout=self.RequestTimeout,
            filewriter_mode=self.DcuFileWriterMode, monitor_mode=self.DcuMonitorMode,
        )
        names = BeamlineNames(monochromator=self.BeamlineMonochromator, distance_motor=self.DetectorDistanceMotor)
        beamline = self.follow(beamline_port(names, self.BeamCentre, unread="the DCU keeps its value",
                                            timeout_s=self.BeamlineReadTimeout))
        if not beamline.followed:
            return DectrisCamera(settings)  # the DCU's own wavelength, distance and beam centre, as set on it
        return BeamlineFollowingDectris(settings, beamline)

    PhotonEnergy = _dcu_parameter("photon_energy", "eV", "Energy of the incident photons", 0.0, 1e6, "%.1f")
    ThresholdEnergy = _dcu_parameter("threshold_energy", "eV", "Counting threshold", 0.0, 1e6, "%.1f")
    BeamCenterX = _dcu_parameter("beam_center_x", "pixel", "Beam centre, column", -1e6, 1e6, "%.2f")
    BeamCenterY = _dcu_parameter("beam_center_y", "pixel", "Beam centre, row", -1e6, 1e6, "%.2f")
    DetectorDistance = _dcu_parameter("detector_distance", "m", "Sample to detector distance", 0.0, 100.0)
    OmegaStart = _dcu_parameter("omega_start", "degree", "Goniometer omega of the first image (MX)", -1e6, 1e6)
    OmegaIncrement = _dcu_parameter("omega_increment", "degree", "Omega step per image (MX)", -1e6, 1e6)
    Description = _dcu_value("description", str, "Model, as the DCU names it")
    SerialNumber = _dcu_value("detector_number", str, "Serial number")
    SensorMaterial = _dcu_value("sensor_material", str, "Sensor material")
    SensorThickness = _dcu_value("sensor_thickness", float, "Sensor thickness", "m")
    BitDepth = _dcu_value("bit_depth_image", int, "Bits per pixel of the images")

    @attribute(dtype=str, doc="The DCU's own state: na, idle, ready, acquire, error")
    @operator_errors
    def DcuState(self):
        return self._core().camera.client.status("detector", "state")
